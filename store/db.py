"""Connections to the read-model tables, which live in the ledger's own database.

One small interface over SQLite and PostgreSQL: SQL is written once with ``?``
placeholders; dialect differences (full-text search, locking) stay in the callers that
need them, keyed on ``store.backend``.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from domain.errors import StoreUnavailable
from store.recorder import one_round_trip
from store.settings import Database

Params = Sequence[Any]
# A pooled connection unused for longer than this is checked before it is handed out.
CHECK_IDLE_SECONDS = 1.0
# Fewer rows go in one multi-row INSERT: COPY costs an extra round trip, which a small
# batch of the live projection engine would notice.
COPY_FROM_ROWS = 100
MULTI_ROW = re.compile(r"(?is)^(\s*INSERT\s.*?\sVALUES\s*)(\([?,\s]*\))(\s*(?:ON\s+CONFLICT\s.*)?)$")


class Cursor:
    """A DB-API cursor that takes ``?`` placeholders on both backends."""

    def __init__(self, raw: Any, backend: str) -> None:
        self.raw = raw
        self.backend = backend
        self.pipelined = False

    @contextmanager
    def pipeline(self) -> Iterator[None]:
        """On PostgreSQL, statements sent without waiting for each one's answer (psycopg's
        pipeline mode) until a result is read or the block ends; errors surface by then at
        the latest. COPY cannot run in a pipeline: rows go by INSERT instead."""
        if self.backend != "postgres":
            yield
            return
        self.pipelined = True
        try:
            with self.raw.connection.pipeline():
                yield
        finally:
            self.pipelined = False

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.backend == "postgres" else sql

    def execute(self, sql: str, params: Params = ()) -> Cursor:
        self.raw.execute(self._sql(sql), tuple(params))
        return self

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        if not rows:
            return
        match = MULTI_ROW.match(sql) if self.backend == "postgres" else None
        if match is None:
            self.raw.executemany(self._sql(sql), [tuple(r) for r in rows])
            return
        # One multi-row INSERT per chunk: a round trip per row is what makes bulk
        # writes slow on PostgreSQL.
        head, group, tail = match.groups()
        group = group.replace("?", "%s")
        per_row = group.count("%s")
        chunk = max(1, 30_000 // max(per_row, 1))
        for i in range(0, len(rows), chunk):
            part = rows[i:i + chunk]
            values = ",".join([group] * len(part))
            self.raw.execute(f"{head}{values}{tail}", [v for row in part for v in row])

    def copy_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Params], pg_types: Sequence[str] | None = None,
    ) -> None:
        """Bulk-insert plain rows: COPY on PostgreSQL, executemany on SQLite.

        A few rows on PostgreSQL (fewer than COPY_FROM_ROWS), or any number in a pipeline,
        go in one INSERT instead, sparing COPY's extra round trip: as one binary array per column through
        ``unnest`` when the columns' `pg_types` are given (a statement whose text never
        changes, so the driver parses it once and the server prepares it), else as a
        multi-row VALUES list.
        """
        if not rows:
            return
        names = ", ".join(columns)
        if self.backend == "postgres" and len(rows) >= COPY_FROM_ROWS and not self.pipelined:
            with self.raw.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        if self.backend == "postgres" and pg_types is not None:
            arrays = ", ".join(f"%b::{kind}[]" for kind in pg_types)
            self.raw.execute(
                f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays})",
                [list(column) for column in zip(*rows, strict=True)],
            )
            return
        marks = ", ".join("?" * len(columns))
        sql = f"INSERT INTO {table} ({names}) VALUES ({marks})"
        if self.backend == "postgres":
            self.executemany(sql, rows)
        else:
            self.raw.executemany(sql, rows)

    def upsert_rows(
        self, table: str, columns: Sequence[str], pg_types: Sequence[str], rows: Sequence[Params], on_conflict: str
    ) -> None:
        """Insert-or-update many rows in one statement.

        On PostgreSQL the rows go as one array per column through ``unnest``: the
        statement text stays short and the same, so the driver does not parse a new
        multi-kilobyte statement for every batch.
        """
        if not rows:
            return
        names = ", ".join(columns)
        if self.backend == "postgres":
            # Binary arrays: in text, psycopg escapes every element with a regular expression.
            arrays = ", ".join(f"%b::{kind}[]" for kind in pg_types)
            self.raw.execute(
                f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}) {on_conflict}",
                [list(column) for column in zip(*rows, strict=True)],
            )
            return
        marks = ", ".join("?" * len(columns))
        self.raw.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks}) {on_conflict}", rows)

    def delete_pairs(self, table: str, columns: tuple[str, str], pairs: Sequence[tuple[str, str]]) -> None:
        """Delete the rows whose two text `columns` hold one of `pairs`."""
        if not pairs:
            return
        a, b = columns
        if self.backend == "postgres":
            self.raw.execute(
                f"DELETE FROM {table} WHERE ({a}, {b}) IN (SELECT * FROM unnest(%b::text[], %b::text[]))",
                [list(column) for column in zip(*pairs, strict=True)],
            )
            return
        self.raw.executemany(f"DELETE FROM {table} WHERE {a} = ? AND {b} = ?", pairs)

    def in_list(self, column: str, values: Sequence[str]) -> tuple[str, Params]:
        return in_list(self.backend, column, values)

    def fetchone(self) -> tuple[Any, ...] | None:
        row = self.raw.fetchone()
        return None if row is None else tuple(row)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.raw.fetchall()]

    @property
    def rowcount(self) -> int:
        return int(self.raw.rowcount)


def in_list(backend: str, column: str, values: Sequence[str]) -> tuple[str, Params]:
    """A condition `column` is one of `values` (text), and its parameters: on PostgreSQL
    one binary array, so the statement's text is the same whatever the count."""
    if backend == "postgres":
        return f"{column} = ANY(%b::text[])", (list(values),)
    return f"{column} IN ({','.join('?' * len(values))})", tuple(values)


def _check_if_idle(conn: psycopg.Connection[Any]) -> None:
    """The pool's check of a connection it hands out: a round trip to the server, made only
    when the connection sat unused for a while. One in steady use is known to be alive (were
    it not, its last use would have failed and the pool would have thrown it away), so a
    busy engine or API does not pay a ping per transaction; after an outage every idle
    connection is checked again before its next use."""
    if time.monotonic() - getattr(conn, "_claims_used_at", 0.0) > CHECK_IDLE_SECONDS:
        ConnectionPool.check_connection(conn)


class ReadStore:
    """Transactions on the read-model database (SQLite file or PostgreSQL schema)."""

    def __init__(self, database: Database, pool_size: int = 8, *, standby: bool = False) -> None:
        """`standby`: a read-only hot standby (store/replicas.py), where nothing is made."""
        self.database = database
        self.backend = database.backend
        self._local = threading.local()
        self._pool: ConnectionPool | None = None
        if self.backend == "postgres":
            if not standby:
                database.ensure_schema()
            self._pool = ConnectionPool(
                kwargs={
                    **database.connect_kwargs(),
                    "options": f"-c search_path={database.schema} -c lock_timeout=5000"
                    " -c idle_in_transaction_session_timeout=60000",
                },
                min_size=1, max_size=pool_size, timeout=5, open=True,
                check=_check_if_idle,
            )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _sqlite(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.database.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # Debian builds SQLite to overwrite every freed page (secure_delete=1): dropping a
            # rebuild's retired tables would write them all again. FAST zeroes freed content
            # only where that costs no extra I/O; the read models hold nothing secret anyway.
            conn.execute("PRAGMA secure_delete=FAST")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self, *, durable: bool = True, pipelined: bool = False) -> Iterator[Cursor]:
        """A write transaction: everything in it commits together or not at all.

        `pipelined`, on PostgreSQL: the whole transaction, BEGIN to COMMIT, in psycopg's
        pipeline mode; statements go without waiting for answers, and it costs one round trip
        unless a statement's rows are read (an error surfaces then, or at the end).

        `durable=False`, on PostgreSQL, commits without waiting for the write-ahead log to
        reach the disk (synchronous_commit off): a crash of the server may then lose the
        last such transactions, each whole, never part of one. For rows that can be made
        again from the log, kept with the position they were made up to, that loses no
        data (they are made again), and it leaves the disk's flushes to the ledger's writes.
        """
        if self.backend == "sqlite":
            with self._sqlite_transaction("BEGIN IMMEDIATE", commit=True) as cur:
                yield cur
            return
        with self._postgres_transaction(read_only=False, pipelined=pipelined) as cur:
            if not durable:
                cur.execute("SET LOCAL synchronous_commit TO OFF")
            yield cur

    @contextmanager
    def reading(self) -> Iterator[Cursor]:
        """A read-only snapshot (one consistent view for several queries)."""
        if self.backend == "sqlite":
            with self._sqlite_transaction("BEGIN", commit=False) as cur:
                yield cur
            return
        with self._postgres_transaction(read_only=True) as cur:
            yield cur

    def query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """The rows of one reading statement run on its own: on PostgreSQL in autocommit,
        one round trip (no BEGIN and COMMIT around it), for a check that needs no snapshot.
        When a connection broke since its last use (the server restarted), the pool's idle
        ones are checked and the statement is asked again, once."""
        if self.backend == "sqlite":
            with self.reading() as cur:
                return cur.execute(sql, params).fetchall()
        assert self._pool is not None
        for attempt in range(2):
            try:
                with self._pool.connection() as pg:
                    pg.autocommit = True
                    try:
                        with pg.cursor() as raw:
                            return Cursor(raw, "postgres").execute(sql, params).fetchall()
                    finally:
                        if not pg.closed:
                            pg.autocommit = False
                        pg._claims_used_at = time.monotonic()  # type: ignore[attr-defined]
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                if attempt:
                    raise StoreUnavailable(f"the read-model database is unreachable: {e}") from e
                self._pool.check()  # the others the restart broke go too, not one per attempt
            except PoolTimeout as e:
                raise StoreUnavailable(f"no database connection free: {e}") from e
        raise AssertionError("unreachable")

    @contextmanager
    def _sqlite_transaction(self, begin: str, *, commit: bool) -> Iterator[Cursor]:
        lite = self._sqlite()
        try:
            raw = lite.cursor()
            raw.execute(begin)
        except sqlite3.OperationalError as e:
            raise StoreUnavailable(f"the ledger file is busy or unreadable: {e}") from e
        try:
            yield Cursor(raw, "sqlite")
        except BaseException:
            lite.rollback()
            raise
        if commit:
            lite.commit()
        else:
            lite.rollback()

    @contextmanager
    def _postgres_transaction(self, *, read_only: bool, pipelined: bool = False) -> Iterator[Cursor]:
        assert self._pool is not None
        try:
            with self._pool.connection() as pg:
                pg.read_only = read_only
                try:
                    if pipelined:
                        with _pipelined_transaction(pg) as cur:
                            yield cur
                        return
                    with pg.transaction(), pg.cursor() as raw:
                        yield Cursor(raw, "postgres")
                finally:
                    if read_only and not pg.closed:
                        pg.read_only = False
                    pg._claims_used_at = time.monotonic()  # type: ignore[attr-defined]
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            raise StoreUnavailable(f"the read-model database is unreachable: {e}") from e
        except PoolTimeout as e:
            raise StoreUnavailable(f"no database connection free: {e}") from e


@contextmanager
def _pipelined_transaction(pg: psycopg.Connection[Any]) -> Iterator[Cursor]:
    with pg.cursor() as raw, one_round_trip(pg):
        cur = Cursor(raw, "postgres")
        cur.pipelined = True
        yield cur
