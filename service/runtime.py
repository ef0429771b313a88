"""Everything one process needs to run the ledger: the event store, read store, engine, queries."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from domain.errors import StoreUnavailable
from domain.ledger import Ledger
from projections.engine import ProjectionEngine
from projections.queries import ReadModels
from store.db import ReadStore
from store.event_store import open_ledger
from store.settings import Database


@dataclass
class Runtime:
    database: Database
    ledger: Ledger
    store: ReadStore
    engine: ProjectionEngine
    read: ReadModels

    @classmethod
    def open(cls, url: str | None = None, *, pool_size: int = 8) -> Runtime:
        database = Database.from_url(url)
        with _one_at_a_time(database):
            ledger = open_ledger(database)
            store = ReadStore(database, pool_size=pool_size)
            engine = ProjectionEngine(ledger, store)
            engine.ensure_tables()
        return cls(database, ledger, store, engine, ReadModels(store))

    def close(self) -> None:
        self.engine.stop()
        self.store.close()
        self.ledger.close()


@contextmanager
def _one_at_a_time(database: Database) -> Iterator[None]:
    """Processes opening one PostgreSQL ledger at the same moment (API workers, projections)
    make its tables in turn: the library's CREATE OR REPLACE FUNCTION, run on every start,
    and CREATE ... IF NOT EXISTS fail when two run at once."""
    if database.backend != "postgres":
        yield
        return
    try:
        conn = psycopg.connect(**database.connect_kwargs(), autocommit=True)  # type: ignore[arg-type]
    except psycopg.OperationalError as e:
        raise StoreUnavailable(f"the ledger's database is unreachable: {e}") from e
    with conn:  # the lock is the session's: closing the connection releases it
        conn.execute("SET lock_timeout = '60s'")
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"claims-ledger tables {database.schema}",))
        yield
