"""The read-model tables, named by a prefix so a rebuild can fill new ones beside the live ones.

Live tables start with ``rm_``; a rebuild fills ``rb_`` tables and swaps them in. Index
names carry a generation number because index names are per schema, not per table.
"""

from __future__ import annotations

from dataclasses import dataclass

from projections.db import Cursor

LIVE = "rm_"
REBUILD = "rb_"
BASES = ("claims", "subjects", "stances", "history", "tracking", "search")


@dataclass(frozen=True)
class Tables:
    prefix: str = LIVE

    @property
    def claims(self) -> str:
        return f"{self.prefix}claims"

    @property
    def subjects(self) -> str:
        return f"{self.prefix}subjects"

    @property
    def stances(self) -> str:
        return f"{self.prefix}stances"

    @property
    def history(self) -> str:
        return f"{self.prefix}history"

    @property
    def tracking(self) -> str:
        return f"{self.prefix}tracking"

    @property
    def search(self) -> str:
        """SQLite's FTS5 table (PostgreSQL searches a tsvector column of `claims`)."""
        return f"{self.prefix}search"

    def all(self, backend: str) -> list[str]:
        names = [self.claims, self.subjects, self.stances, self.history, self.tracking]
        if backend == "sqlite":
            names.append(self.search)
        return names

    def create(self, cur: Cursor, generation: int) -> None:
        g = f"g{generation}"
        pg = cur.backend == "postgres"
        big = "BIGINT" if pg else "INTEGER"
        tsv = (
            ", tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', statement)) STORED" if pg else ""
        )
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {self.claims} ("
            " claim_id TEXT PRIMARY KEY, key TEXT NOT NULL UNIQUE, statement TEXT NOT NULL,"
            " language TEXT NOT NULL, status TEXT NOT NULL, view TEXT NOT NULL,"
            f" version INTEGER NOT NULL, reg_position {big} NOT NULL, position {big} NOT NULL,"
            f" registered_at TEXT NOT NULL, updated_at TEXT NOT NULL{tsv})"
        )
        cur.execute(f"CREATE INDEX IF NOT EXISTS ix_{g}_{self.claims}_status ON {self.claims} (status, reg_position)")
        cur.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS ix_{g}_{self.claims}_reg ON {self.claims} (reg_position)")
        if pg:
            cur.execute(f"CREATE INDEX IF NOT EXISTS ix_{g}_{self.claims}_tsv ON {self.claims} USING GIN (tsv)")
        else:
            cur.execute(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {self.search} USING fts5("
                "statement, claim_id UNINDEXED, tokenize='unicode61 remove_diacritics 2')"
            )
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {self.subjects} ("
            f" subject TEXT NOT NULL, claim_id TEXT NOT NULL, reg_position {big} NOT NULL,"
            " PRIMARY KEY (subject, claim_id))"
        )
        cur.execute(f"CREATE INDEX IF NOT EXISTS ix_{g}_{self.subjects}_pos ON {self.subjects} (subject, reg_position)")
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {self.stances} ("
            " holder_id TEXT NOT NULL, claim_id TEXT NOT NULL, party_id TEXT NOT NULL,"
            f" stance TEXT NOT NULL, act_id TEXT NOT NULL, said_at TEXT, reg_position {big} NOT NULL,"
            " item TEXT NOT NULL, PRIMARY KEY (holder_id, claim_id))"
        )
        cur.execute(f"CREATE INDEX IF NOT EXISTS ix_{g}_{self.stances}_claim ON {self.stances} (claim_id)")
        cur.execute(f"CREATE INDEX IF NOT EXISTS ix_{g}_{self.stances}_party ON {self.stances} (party_id)")
        cur.execute(f"CREATE INDEX IF NOT EXISTS ix_{g}_{self.stances}_pos ON {self.stances} (holder_id, reg_position)")
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {self.history} ("
            f" position {big} PRIMARY KEY, claim_id TEXT NOT NULL, version INTEGER NOT NULL,"
            " type TEXT NOT NULL, act_id TEXT, hash TEXT NOT NULL, body TEXT NOT NULL)"
        )
        cur.execute(
            f"CREATE UNIQUE INDEX IF NOT EXISTS ix_{g}_{self.history}_claim ON {self.history} (claim_id, version)"
        )
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {self.tracking} (name TEXT PRIMARY KEY, position {big} NOT NULL,"
            " generation INTEGER NOT NULL)"
        )

    def drop(self, cur: Cursor) -> None:
        for name in self.all(cur.backend):
            cur.execute(f"DROP TABLE IF EXISTS {name}")

    def rename_to(self, cur: Cursor, other: Tables) -> None:
        for mine, theirs in zip(self.all(cur.backend), other.all(cur.backend), strict=True):
            cur.execute(f"ALTER TABLE {mine} RENAME TO {theirs}")
