"""Reading the ledger's event log in bulk, straight from the library's table.

The library's own reader builds several objects per event, which dominates the cost of a
full scan; the rows are the same. The projection engine and `claims verify` both read
the log here, and decode each row with the Ledger's one decoder.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from uuid import UUID

import psycopg

from domain.errors import StoreUnavailable
from domain.ledger import Ledger, LoggedEvent, UndecodableEvent
from store.settings import Database

# A stored event as its table holds it: (position, claim id, version, topic, state).
RawEvent = tuple[int, str, int, str, bytes]
# Where a scan in claim order stopped: (claim id as stored, version).
ClaimKey = tuple[str, int]


class LogScanner:
    """Pages of stored events in log order on one connection of its own.

    With `snapshot`, every page comes from one consistent view of the store (verify);
    without, each page sees what is committed when it is read (the engine). A lost
    connection is reopened on the next read.
    """

    def __init__(self, ledger: Ledger, database: Database, *, snapshot: bool = False) -> None:
        """`database`: where `ledger` keeps its events."""
        self.ledger = ledger
        self.database = database
        self.snapshot = snapshot
        self.table = ledger.recorder.events_table_name  # type: ignore[attr-defined]
        self._conn: Any = None
        self._lock = threading.Lock()  # the engine's thread and a caller's catch_up may share it

    def raw(self, after: int, limit: int) -> list[RawEvent]:
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._connect()
                return self._read(after, limit)
            except (sqlite3.Error, psycopg.Error) as e:
                self._close()
                raise StoreUnavailable(f"the event store is unreachable: {e}") from e

    def read(self, after: int, limit: int) -> list[LoggedEvent]:
        """Decoded events after `after`; an undecodable one raises UndecodableEvent."""
        decode = self.ledger.decode_stored
        return [decode(*raw) for raw in self.raw(after, limit)]

    def by_claim(self, after: ClaimKey | None, upto: int, limit: int) -> tuple[list[LoggedEvent], ClaimKey | None]:
        """Events at positions up to `upto`, claim by claim in version order, after the
        stored (claim id, version) `after`; with the key to page on from.

        The table's primary key is (claim id, version), so this is an index scan: a rebuild
        reading it meets each claim's events together and can fold claims one at a time.
        """
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._connect()
                raws = self._read_by_claim(after, upto, limit)
            except (sqlite3.Error, psycopg.Error) as e:
                self._close()
                raise StoreUnavailable(f"the event store is unreachable: {e}") from e
        if not raws:
            return [], after
        decode = self.ledger.decode_stored
        sqlite = self.database.backend == "sqlite"
        events = [decode(p, _dashed(o) if sqlite else o, v, t, s) for p, o, v, t, s in raws]
        return events, (raws[-1][1], raws[-1][2])

    def _read_by_claim(self, after: ClaimKey | None, upto: int, limit: int) -> list[RawEvent]:
        if self.database.backend == "sqlite":
            start = after or ("", -1)
            return self._conn.execute(  # type: ignore[no-any-return]
                f"SELECT rowid, originator_id, originator_version, topic, state FROM {self.table}"
                " WHERE (originator_id, originator_version) > (?, ?) AND rowid <= ?"
                " ORDER BY originator_id, originator_version LIMIT ?", (*start, upto, limit),
            ).fetchall()
        schema = self.database.schema
        start = after or ("00000000-0000-0000-0000-000000000000", -1)
        return self._conn.execute(  # type: ignore[no-any-return]
            "SELECT notification_id, originator_id::text, originator_version, topic, state"
            f' FROM "{schema}".{self.table} WHERE (originator_id, originator_version) > (%s::uuid, %s)'
            " AND notification_id <= %s ORDER BY originator_id, originator_version LIMIT %s",
            (*start, upto, limit), binary=True,
        ).fetchall()

    def _connect(self) -> Any:
        database = self.database
        if database.backend == "sqlite":
            conn = sqlite3.connect(database.path, timeout=30, isolation_level=None, check_same_thread=False)
            if self.snapshot:
                conn.execute("BEGIN")
            return conn
        pg = psycopg.connect(**database.connect_kwargs(), autocommit=not self.snapshot)  # type: ignore[arg-type]
        if self.snapshot:
            pg.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            pg.read_only = True
        return pg

    def _read(self, after: int, limit: int) -> list[RawEvent]:
        if self.database.backend == "sqlite":
            rows = self._conn.execute(
                f"SELECT rowid, originator_id, originator_version, topic, state FROM {self.table}"
                " WHERE rowid > ? ORDER BY rowid LIMIT ?", (after, limit),
            )
            return [(p, _dashed(o), v, t, s) for p, o, v, t, s in rows]
        schema = self.database.schema
        # Binary results: bytea arrives as bytes, not hex text to decode (no decoding step).
        return self._conn.execute(  # type: ignore[no-any-return]
            "SELECT notification_id, originator_id::text, originator_version, topic, state"
            f' FROM "{schema}".{self.table} WHERE notification_id > %s ORDER BY notification_id LIMIT %s',
            (after, limit), binary=True,
        ).fetchall()

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            with suppress(sqlite3.Error, psycopg.Error):
                self._conn.close()
            self._conn = None


@contextmanager
def scanning(ledger: Ledger, database: Database, *, snapshot: bool) -> Iterator[LogScanner]:
    scanner = LogScanner(ledger, database, snapshot=snapshot)
    try:
        yield scanner
    finally:
        scanner.close()


def _dashed(claim_id: str) -> str:
    """The library keeps SQLite ids as 32 hex digits; bodies carry the dashed form."""
    if len(claim_id) == 32:
        return f"{claim_id[:8]}-{claim_id[8:12]}-{claim_id[12:16]}-{claim_id[16:20]}-{claim_id[20:]}"
    return str(UUID(claim_id))


__all__ = ["LogScanner", "RawEvent", "UndecodableEvent", "scanning"]
