"""Everything one process needs to run the ledger: the event store, read store, engine, queries."""

from __future__ import annotations

from dataclasses import dataclass

from domain.ledger import Ledger
from domain.settings import Database
from projections.db import ReadStore
from projections.engine import ProjectionEngine
from projections.queries import ReadModels


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
        ledger = Ledger(database)
        store = ReadStore(database, pool_size=pool_size)
        engine = ProjectionEngine(ledger, store)
        engine.ensure_tables()
        return cls(database, ledger, store, engine, ReadModels(store))

    def close(self) -> None:
        self.engine.stop()
        self.store.close()
        self.ledger.close()
