"""One-statement reads for what every request asks: a token by its hash, a claim's current view.

`ReadStore.reading()` gives a consistent snapshot for many statements, at the price of a
connection check, BEGIN and COMMIT around the query (four round trips to PostgreSQL) and,
from the event loop, a hop to a worker thread and back, which costs more CPU than the
lookup itself. A single indexed lookup needs neither, so these run on the event loop:

- PostgreSQL: lookups that arrive while one is under way are asked together, in one
  statement, as soon as it ends (a group commit for reads: each is asked after it
  arrived, so it sees everything committed before, a revoked token included), on a few
  autocommit connections of psycopg's asyncio flavour. A statement on a connection that
  broke (the database restarted) is tried once more on a new connection, so a restart
  fails no request that a check before each use would have saved.
- SQLite: a point query on the loop's own connection takes microseconds; readers of a WAL
  database do not wait for writers. Should the file still be busy, the query goes to a
  worker thread that may wait (the loop never does).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio.to_thread
import psycopg

from domain.errors import StoreUnavailable
from domain.values import claim_ids_for_ref
from projections.tables import LIVE, Tables
from store.settings import Database

Row = tuple[Any, ...]
ACQUIRE_TIMEOUT_SECONDS = 5.0
BUSY_TIMEOUT_MS = 30_000


class Lookups:
    """Indexed single-row reads for the event loop (see the module's docstring)."""

    def __init__(self, database: Database, connections: int) -> None:
        self.database = database
        self.backend = database.backend
        self.max_connections = max(1, connections)
        tables = Tables(LIVE)
        # A ref names at most two claim ids, tried in order (see `_claim_ids`).
        self.claim_sql = (
            f"SELECT view, version, 0 AS pref FROM {tables.claims} WHERE claim_id = ?"
            f" UNION ALL SELECT view, version, 1 AS pref FROM {tables.claims} WHERE claim_id = ?"
            " ORDER BY pref LIMIT 1"
        )
        self.claims_sql = f"SELECT view, version, claim_id FROM {tables.claims} WHERE claim_id = ANY(?)"
        self._claims = _Coalesced(self._claim_rows)
        self._sql: dict[str, str] = {}
        # PostgreSQL: connections made on first use, on the loop that uses them.
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._made = 0
        self._waiters: deque[asyncio.Future[psycopg.AsyncConnection[Any] | None]] = deque()
        # SQLite: the loop's connection (no waiting), and a waiting one per worker thread.
        self._loop_conn: sqlite3.Connection | None = None
        self._local = threading.local()

    def keyed(self, one_sql: str, many_sql: str, key_column: int) -> Callable[[str], Awaitable[Row | None]]:
        """A lookup of the row whose `key_column` holds a key: `one_sql` takes the key (`?`),
        `many_sql` a list of keys (`= ANY(?)`) for the lookups PostgreSQL answers together."""
        if self.backend == "sqlite":
            return lambda key: self._sqlite_one(one_sql, (key,))

        async def fetch(keys: list[str]) -> dict[str, Row]:
            return {row[key_column]: row for row in await self._pg_rows(many_sql, (keys,))}

        return _Coalesced(fetch).get

    async def claim_view(self, ref: str) -> tuple[bytes, int] | None:
        """A claim's current view as stored (JSON) and its version, by id or else by key:
        `ReadModels.claim`'s answer, without decoding the view."""
        ids = _claim_ids(ref)
        if not ids:
            return None
        if self.backend == "sqlite":
            row = await self._sqlite_one(self.claim_sql, (*ids, "")[:2])  # "" matches no claim
        else:
            row = await self._claims.get(ref)
        if row is None:
            return None
        view = row[0]
        return (view.encode() if isinstance(view, str) else bytes(view)), int(row[1])

    async def _claim_rows(self, refs: list[str]) -> dict[str, Row]:
        ids = {ref: _claim_ids(ref) for ref in refs}
        rows = await self._pg_rows(self.claims_sql, ([i for found in ids.values() for i in found],))
        by_id = {row[2]: row for row in rows}
        found: dict[str, Row] = {}
        for ref, candidates in ids.items():
            row = next((by_id[i] for i in candidates if i in by_id), None)
            if row is not None:
                found[ref] = row
        return found

    async def _pg_rows(self, sql: str, params: Sequence[Any]) -> list[Row]:
        statement = self._sql.get(sql)
        if statement is None:
            # Every parameter here is a list: sent in binary, psycopg does not escape each
            # element with a regular expression, as it does for a text array.
            statement = self._sql[sql] = sql.replace("?", "%b")
        for attempt in range(2):
            conn = await self._acquire()
            try:
                cursor = await conn.execute(statement, params, prepare=True)
                rows = await cursor.fetchall()
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                await self._discard(conn)
                if attempt:
                    raise StoreUnavailable(f"the read-model database is unreachable: {e}") from e
                continue
            except BaseException:
                await self._discard(conn)
                raise
            self._release(conn)
            return [tuple(row) for row in rows]
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        """Close the connections (on the loop that made them)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()
        self._made -= len(idle)
        if self._loop_conn is not None:
            self._loop_conn.close()
            self._loop_conn = None

    # PostgreSQL connections: all used from the one event loop, so a list and a queue of
    # waiters need no lock.
    async def _acquire(self) -> psycopg.AsyncConnection[Any]:
        if self._idle:
            return self._idle.pop()
        if self._made >= self.max_connections:
            waiter: asyncio.Future[psycopg.AsyncConnection[Any] | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                conn = await asyncio.wait_for(waiter, ACQUIRE_TIMEOUT_SECONDS)
            except TimeoutError:
                raise StoreUnavailable(
                    f"no database connection free within {ACQUIRE_TIMEOUT_SECONDS:g} s"
                ) from None
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if conn is not None:
                return conn
            # A connection was closed, which makes room for a new one.
        self._made += 1
        try:
            return await psycopg.AsyncConnection.connect(
                **self.database.connect_kwargs(),  # type: ignore[arg-type]
                autocommit=True, options=f"-c search_path={self.database.schema} -c lock_timeout=5000",
            )
        except psycopg.Error as e:
            self._forget_one()
            raise StoreUnavailable(f"the read-model database is unreachable: {e}") from e
        except BaseException:
            self._forget_one()
            raise

    def _release(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    async def _discard(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            await conn.close()
        finally:
            self._forget_one()

    def _forget_one(self) -> None:
        self._made -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # it may make a connection of its own
                return

    async def rows(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        """Every row of one reading statement (``?`` placeholders) over a bounded index range,
        such as a tile of the Merkle log, asked on the event loop as the lookups above are
        (on PostgreSQL on its own, not together with others)."""
        if self.backend == "sqlite":
            return await self._sqlite_rows(sql, params, one=False)
        return await self._pg_rows(sql, params)

    # SQLite.
    async def _sqlite_one(self, sql: str, params: tuple[Any, ...]) -> Row | None:
        rows = await self._sqlite_rows(sql, params, one=True)
        return rows[0] if rows else None

    async def _sqlite_rows(self, sql: str, params: tuple[Any, ...], *, one: bool) -> list[Row]:
        if self._loop_conn is None:
            self._loop_conn = self._sqlite_connect(busy_timeout_ms=0)
        try:
            return _fetched(self._loop_conn.execute(sql, params), one)
        except sqlite3.OperationalError:  # busy (or worse): wait for it in a thread, not here
            return await anyio.to_thread.run_sync(self._sqlite_waiting_rows, sql, params, one)

    def _sqlite_waiting_rows(self, sql: str, params: tuple[Any, ...], one: bool) -> list[Row]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._sqlite_connect(busy_timeout_ms=BUSY_TIMEOUT_MS)
        try:
            return _fetched(conn.execute(sql, params), one)
        except sqlite3.OperationalError as e:
            raise StoreUnavailable(f"the ledger file is busy or unreadable: {e}") from e

    def _sqlite_connect(self, *, busy_timeout_ms: int) -> sqlite3.Connection:
        conn = sqlite3.connect(self.database.path, timeout=busy_timeout_ms / 1000, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        return conn


def _fetched(cursor: sqlite3.Cursor, one: bool) -> list[Row]:
    if one:
        row = cursor.fetchone()
        return [] if row is None else [tuple(row)]
    return [tuple(row) for row in cursor.fetchall()]


def _claim_ids(ref: str) -> tuple[str, ...]:
    """The ids, as the claims table holds them, of the claims `ref` may name, in the order to try."""
    return tuple(str(claim_id) for claim_id in claim_ids_for_ref(ref))


Fetch = Callable[[list[str]], Awaitable[dict[str, Row]]]


class _Coalesced:
    """Lookups by key, those that arrive while one is under way asked together next.

    Every lookup is asked after it arrived, so it sees whatever was committed before.
    """

    def __init__(self, fetch: Fetch) -> None:
        self.fetch = fetch
        self._pending: dict[str, list[asyncio.Future[Row | None]]] = {}
        self._running: asyncio.Task[None] | None = None

    async def get(self, key: str) -> Row | None:
        future: asyncio.Future[Row | None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append(future)
        if self._running is None:
            self._running = asyncio.get_running_loop().create_task(self._run())
        return await future

    async def _run(self) -> None:
        try:
            while self._pending:
                asked, self._pending = self._pending, {}
                try:
                    found = await self.fetch(list(asked))
                except BaseException as e:
                    for futures in asked.values():
                        for future in futures:
                            if not future.done():
                                future.set_exception(e)
                    if not isinstance(e, Exception):
                        raise
                    continue
                for key, futures in asked.items():
                    row = found.get(key)
                    for future in futures:
                        if not future.done():
                            future.set_result(row)
        finally:
            self._running = None
