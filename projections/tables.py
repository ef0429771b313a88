"""The read-model tables, named by a prefix so a rebuild can fill new ones beside the live ones.

Live tables start with ``rm_``; a rebuild fills ``rb_`` tables and swaps them in (the live ones
become ``rt_`` tables, dropped once the swap has committed). Index
names carry a generation number because index names are per schema, not per table.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from store.db import Cursor

LIVE = "rm_"
REBUILD = "rb_"
RETIRED = "rt_"  # the tables a rebuild swapped out, until they are dropped
BASES = ("claims", "subjects", "stances", "history", "tracking", "search", "reviews")


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
    def reviews(self) -> str:
        """Each reviewer's standing review of each claim (the claim view's `reviews`), for
        the reviewer's party page."""
        return f"{self.prefix}reviews"

    @property
    def history(self) -> str:
        return f"{self.prefix}history"

    @property
    def tracking(self) -> str:
        return f"{self.prefix}tracking"

    @property
    def search(self) -> str:
        """Each claim's statement for full-text search, written once, at its registration:
        an FTS5 table on SQLite; on PostgreSQL a table with the statement's tsvector (under
        a GIN index), apart from `claims`, whose row every act rewrites."""
        return f"{self.prefix}search"

    def all(self, backend: str) -> list[str]:
        return [self.claims, self.subjects, self.stances, self.history, self.tracking, self.search, self.reviews]

    def create(self, cur: Cursor, generation: int, *, indexes: bool = True) -> None:
        """The tables, unless they exist; `indexes=False` leaves out the secondary indexes
        (a rebuild fills the tables first and builds its indexes by sorting, which is faster)."""
        if self._exists(cur):  # its indexes may carry another generation's names: keep them
            return
        pg = cur.backend == "postgres"
        big = "BIGINT" if pg else "INTEGER"
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {self.claims} ("
            " claim_id TEXT PRIMARY KEY, key TEXT NOT NULL, statement TEXT NOT NULL,"
            f" language TEXT NOT NULL, status TEXT NOT NULL, view TEXT{_fast_compression(cur)} NOT NULL,"
            f" version INTEGER NOT NULL, reg_position {big} NOT NULL, position {big} NOT NULL,"
            " registered_at TEXT NOT NULL, updated_at TEXT NOT NULL)"
        )
        self._create_search(cur)
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {self.subjects} ("
            f" subject TEXT NOT NULL, claim_id TEXT NOT NULL, reg_position {big} NOT NULL)"
        )
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {self.stances} ("
            " holder_id TEXT NOT NULL, claim_id TEXT NOT NULL, party_id TEXT NOT NULL,"
            f" stance TEXT NOT NULL, act_id TEXT NOT NULL, said_at TEXT, reg_position {big} NOT NULL,"
            " item TEXT NOT NULL)"
        )
        self._create_reviews(cur)
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {self.history} ("
            f" position {big} PRIMARY KEY, claim_id TEXT NOT NULL, version INTEGER NOT NULL,"
            " type TEXT NOT NULL, act_id TEXT, hash TEXT NOT NULL, body TEXT NOT NULL)"
        )
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {self.tracking} (name TEXT PRIMARY KEY, position {big} NOT NULL,"
            " generation INTEGER NOT NULL)"
        )

        if indexes:
            self.create_history_index(cur, generation)
            self.create_indexes(cur, generation)

    def create_history_index(self, cur: Cursor, generation: int) -> None:
        """The index that reads a claim's history in version order (and keeps versions unique)."""
        cur.execute(
            f"CREATE UNIQUE INDEX IF NOT EXISTS ix_g{generation}_{self.history}_claim"
            f" ON {self.history} (claim_id, version)"
        )

    def create_indexes(self, cur: Cursor, generation: int) -> None:
        """Every other index, the unique ones that key the claim, subject and stance rows
        included (built after a rebuild's load, by sorting, rather than row by row)."""
        g = f"g{generation}"
        cur.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS ix_{g}_{self.claims}_key ON {self.claims} (key)")
        cur.execute(
            f"CREATE UNIQUE INDEX IF NOT EXISTS ix_{g}_{self.subjects}_key ON {self.subjects} (subject, claim_id)"
        )
        cur.execute(
            f"CREATE UNIQUE INDEX IF NOT EXISTS ix_{g}_{self.stances}_key ON {self.stances} (holder_id, claim_id)"
        )
        cur.execute(f"CREATE INDEX IF NOT EXISTS ix_{g}_{self.claims}_status ON {self.claims} (status, reg_position)")
        cur.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS ix_{g}_{self.claims}_reg ON {self.claims} (reg_position)")
        if cur.backend == "postgres":
            cur.execute(f"CREATE INDEX IF NOT EXISTS ix_{g}_{self.search}_tsv ON {self.search} USING GIN (tsv)")
        cur.execute(f"CREATE INDEX IF NOT EXISTS ix_{g}_{self.subjects}_pos ON {self.subjects} (subject, reg_position)")
        cur.execute(f"CREATE INDEX IF NOT EXISTS ix_{g}_{self.stances}_claim ON {self.stances} (claim_id)")
        cur.execute(f"CREATE INDEX IF NOT EXISTS ix_{g}_{self.stances}_party ON {self.stances} (party_id)")
        cur.execute(
            f"CREATE INDEX IF NOT EXISTS ix_{g}_{self.stances}_pos ON {self.stances} (holder_id, reg_position)"
        )
        self.create_review_indexes(cur, generation)

    def _create_reviews(self, cur: Cursor) -> None:
        big = "BIGINT" if cur.backend == "postgres" else "INTEGER"
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {self.reviews} ("
            " reviewer_id TEXT NOT NULL, claim_id TEXT NOT NULL, act_id TEXT NOT NULL,"
            f" reg_position {big} NOT NULL, item TEXT NOT NULL)"
        )

    def create_review_indexes(self, cur: Cursor, generation: int) -> None:
        g = f"g{generation}"
        cur.execute(
            f"CREATE UNIQUE INDEX IF NOT EXISTS ix_{g}_{self.reviews}_key ON {self.reviews} (reviewer_id, claim_id)"
        )
        cur.execute(
            f"CREATE INDEX IF NOT EXISTS ix_{g}_{self.reviews}_pos ON {self.reviews} (reviewer_id, reg_position)"
        )
        cur.execute(f"CREATE INDEX IF NOT EXISTS ix_{g}_{self.reviews}_claim ON {self.reviews} (claim_id)")

    def _create_search(self, cur: Cursor) -> None:
        if cur.backend == "postgres":
            # A stored generated column: computed once, when the registration's row goes in.
            # (Kept in `claims`, as it once was, every rewrite of a claim's row computed it again.)
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self.search} (claim_id TEXT NOT NULL, statement TEXT NOT NULL,"
                " tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', statement)) STORED)"
            )
        else:
            cur.execute(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {self.search} USING fts5("
                "statement, claim_id UNINDEXED, tokenize='unicode61 remove_diacritics 2')"
            )

    def upgrade(self, cur: Cursor) -> None:
        """Bring tables an earlier version made to this version's layout, in the caller's
        transaction (processes opening a ledger do this one at a time: runtime.py). Tables
        made before reviews gain the `reviews` table, and their stored claim views the
        (empty) `reviews` and `counts.reviews` of this version's fold: no event of an
        earlier version is a review. On PostgreSQL, the statement's tsvector moves from
        `claims` to its own `search` table (the same words, so the same searches find the
        same claims), and the view column takes lz4 for the values written from now on."""
        if not self._exists(cur):
            return
        if not self._has(cur, self.reviews):
            self._add_reviews(cur)
        if cur.backend != "postgres":
            return
        old = cur.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = ? AND column_name = 'tsv'", (self.claims,),
        ).fetchone()
        if _fast_compression(cur) and cur.execute(
            "SELECT 1 FROM pg_attribute WHERE attrelid = ?::regclass AND attname = 'view' AND attcompression <> 'l'",
            (self.claims,),
        ).fetchone():
            cur.execute(f"ALTER TABLE {self.claims} ALTER COLUMN view SET COMPRESSION lz4")  # for values to come
        if old is None:
            return
        row = cur.execute(f"SELECT max(generation) FROM {self.tracking}").fetchone()
        generation = int(row[0]) if row and row[0] is not None else 0
        self._create_search(cur)
        cur.execute(f"INSERT INTO {self.search} (claim_id, statement) SELECT claim_id, statement FROM {self.claims}")
        cur.execute(
            f"CREATE INDEX IF NOT EXISTS ix_g{generation}_{self.search}_tsv ON {self.search} USING GIN (tsv)"
        )
        cur.execute(f"ALTER TABLE {self.claims} DROP COLUMN tsv")  # its GIN index goes with it

    def _add_reviews(self, cur: Cursor) -> None:
        """The reviews table, and every stored view given the fields reviews added, in the
        order the fold writes them (the fast lane serves the stored text as it is)."""
        row = cur.execute(f"SELECT max(generation) FROM {self.tracking}").fetchone()
        generation = int(row[0]) if row and row[0] is not None else 0
        self._create_reviews(cur)
        self.create_review_indexes(cur, generation)
        views = cur.execute(f"SELECT claim_id, view FROM {self.claims}").fetchall()
        changed = []
        for claim_id, text in views:
            view = orjson.loads(text)
            if "reviews" in view:
                continue
            upgraded = {}
            for name, value in view.items():
                upgraded[name] = {**value, "reviews": 0} if name == "counts" else value
                if name == "stances":
                    upgraded["reviews"] = []
            changed.append((orjson.dumps(upgraded).decode(), claim_id))
        if changed:
            cur.executemany(f"UPDATE {self.claims} SET view = ? WHERE claim_id = ?", changed)

    def _exists(self, cur: Cursor) -> bool:
        return self._has(cur, self.tracking)

    @staticmethod
    def _has(cur: Cursor, table: str) -> bool:
        if cur.backend == "postgres":
            row = cur.execute("SELECT to_regclass(?) IS NOT NULL", (table,)).fetchone()
            return bool(row and row[0])
        row = cur.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
        return row is not None

    def drop(self, cur: Cursor) -> None:
        for name in self.all(cur.backend):
            cur.execute(f"DROP TABLE IF EXISTS {name}")

    def rename_to(self, cur: Cursor, other: Tables) -> None:
        for mine, theirs in zip(self.all(cur.backend), other.all(cur.backend), strict=True):
            cur.execute(f"ALTER TABLE {mine} RENAME TO {theirs}")


def _fast_compression(cur: Cursor) -> str:
    """`COMPRESSION lz4` where PostgreSQL was built with it, for a claim's view: every act
    rewrites its claim's view, and the larger ones are compressed each time (pglz, the
    default, is markedly slower to compress with)."""
    if cur.backend != "postgres":
        return ""
    row = cur.execute(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    ).fetchone()
    return " COMPRESSION lz4" if row and row[0] else ""
