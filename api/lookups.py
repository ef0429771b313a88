"""One-statement reads for what every request asks: a token by its hash, a claim's current view.

`ReadStore.reading()` gives a consistent snapshot for many statements, at the price of a
connection check, BEGIN and COMMIT around the query (four round trips to PostgreSQL) and,
from the event loop, a hop to a worker thread and back, which costs more CPU than the
lookup itself. A single indexed lookup needs neither, so these run on the event loop:

- PostgreSQL: a few autocommit connections of psycopg's asyncio flavour, one round trip a
  lookup. A statement on a connection that broke (the database restarted) is tried once
  more on a new connection, so a restart fails no request that a check would have saved.
- SQLite: a point query on the loop's own connection takes microseconds; readers of a WAL
  database do not wait for writers. Should the file still be busy, the query goes to a
  worker thread that may wait (the loop never does).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import anyio.to_thread
import psycopg

from domain.errors import StoreUnavailable
from domain.settings import Database
from projections.tables import LIVE, Tables

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
        self.claim_sql = (
            f"SELECT view, version, 0 AS pref FROM {tables.claims} WHERE claim_id = ?"
            f" UNION ALL SELECT view, version, 1 AS pref FROM {tables.claims} WHERE key = ?"
            " ORDER BY pref LIMIT 1"
        )
        self._sql: dict[str, str] = {}
        # PostgreSQL: connections made on first use, on the loop that uses them.
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._made = 0
        self._freed: asyncio.Condition | None = None
        # SQLite: the loop's connection (no waiting), and a waiting one per worker thread.
        self._loop_conn: sqlite3.Connection | None = None
        self._local = threading.local()

    async def one(self, sql: str, params: Sequence[Any]) -> Row | None:
        """The first row of one statement (`?` placeholders on both backends)."""
        if self.backend == "sqlite":
            return await self._sqlite_one(sql, tuple(params))
        statement = self._sql.get(sql)
        if statement is None:
            statement = self._sql[sql] = sql.replace("?", "%s")
        for attempt in range(2):
            conn = await self._acquire()
            try:
                cursor = await conn.execute(statement, params, prepare=True)
                row = await cursor.fetchone()
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                await self._discard(conn)
                if attempt:
                    raise StoreUnavailable(f"the read-model database is unreachable: {e}") from e
                continue
            except BaseException:
                await self._discard(conn)
                raise
            await self._release(conn)
            return None if row is None else tuple(row)
        raise AssertionError("unreachable")

    async def claim_view(self, ref: str) -> tuple[bytes, int] | None:
        """A claim's current view as stored (JSON) and its version, by id or else by key:
        `ReadModels.claim`'s answer in one statement, without decoding the view."""
        if "\x00" in ref:  # no id or key holds NUL (and PostgreSQL cannot even compare it)
            return None
        try:
            as_id = str(UUID(ref))
        except ValueError:
            as_id = ""  # no claim has an empty id
        row = await self.one(self.claim_sql, (as_id, ref))
        if row is None:
            return None
        view = row[0]
        return (view.encode() if isinstance(view, str) else bytes(view)), int(row[1])

    async def aclose(self) -> None:
        """Close the connections (on the loop that made them)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()
        self._made -= len(idle)
        if self._loop_conn is not None:
            self._loop_conn.close()
            self._loop_conn = None

    # PostgreSQL connections.
    async def _acquire(self) -> psycopg.AsyncConnection[Any]:
        if self._freed is None:
            self._freed = asyncio.Condition()
        async with self._freed:
            if not self._idle and self._made >= self.max_connections:
                try:
                    await asyncio.wait_for(self._freed.wait_for(lambda: bool(self._idle)), ACQUIRE_TIMEOUT_SECONDS)
                except TimeoutError:
                    raise StoreUnavailable(
                        f"no database connection free within {ACQUIRE_TIMEOUT_SECONDS:g} s"
                    ) from None
            if self._idle:
                return self._idle.pop()
            self._made += 1
        try:
            return await psycopg.AsyncConnection.connect(
                **self.database.connect_kwargs(),  # type: ignore[arg-type]
                autocommit=True, options=f"-c search_path={self.database.schema} -c lock_timeout=5000",
            )
        except psycopg.Error as e:
            await self._forget_one()
            raise StoreUnavailable(f"the read-model database is unreachable: {e}") from e
        except BaseException:
            await self._forget_one()
            raise

    async def _release(self, conn: psycopg.AsyncConnection[Any]) -> None:
        assert self._freed is not None
        async with self._freed:
            self._idle.append(conn)
            self._freed.notify()

    async def _discard(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            await conn.close()
        finally:
            await self._forget_one()

    async def _forget_one(self) -> None:
        assert self._freed is not None
        async with self._freed:
            self._made -= 1
            self._freed.notify()

    # SQLite.
    async def _sqlite_one(self, sql: str, params: tuple[Any, ...]) -> Row | None:
        if self._loop_conn is None:
            self._loop_conn = self._sqlite_connect(busy_timeout_ms=0)
        try:
            row = self._loop_conn.execute(sql, params).fetchone()
        except sqlite3.OperationalError:  # busy (or worse): wait for it in a thread, not here
            return await anyio.to_thread.run_sync(self._sqlite_waiting_one, sql, params)
        return None if row is None else tuple(row)

    def _sqlite_waiting_one(self, sql: str, params: tuple[Any, ...]) -> Row | None:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._sqlite_connect(busy_timeout_ms=BUSY_TIMEOUT_MS)
        try:
            row = conn.execute(sql, params).fetchone()
        except sqlite3.OperationalError as e:
            raise StoreUnavailable(f"the ledger file is busy or unreadable: {e}") from e
        return None if row is None else tuple(row)

    def _sqlite_connect(self, *, busy_timeout_ms: int) -> sqlite3.Connection:
        conn = sqlite3.connect(self.database.path, timeout=busy_timeout_ms / 1000, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        return conn
