"""Everything one process needs to run the ledger: the event store, read store, engine, queries."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from audit.rollback import TreeGuard
from audit.signing import checkpoint_signer
from domain.errors import StoreUnavailable
from domain.ledger import Ledger
from domain.note import Note
from projections.engine import ProjectionEngine
from projections.queries import ReadModels
from store.db import ReadStore
from store.event_store import open_ledger
from store.identity import ensure_identity, ledger_identity
from store.replicas import ReadRouter
from store.settings import Database


@dataclass
class Runtime:
    database: Database
    ledger: Ledger
    store: ReadStore
    engine: ProjectionEngine
    read: ReadModels  # the projections' reads: on the hot standbys when there are (`replicas`)
    replicas: ReadRouter | None = None
    guard: TreeGuard | None = None  # the one signer of checkpoints (audit/rollback.py); set by open()

    @classmethod
    def open(cls, url: str | None = None, *, pool_size: int = 8) -> Runtime:
        database = Database.from_url(url)
        with _one_at_a_time(database):
            ledger = open_ledger(database)
            store = ReadStore(database, pool_size=pool_size)
            engine = ProjectionEngine(ledger, store)
            engine.ensure_tables()
            ensure_identity(store)
        standbys = database.settings.read_database_urls()
        replicas = ReadRouter(store, standbys, pool_size=pool_size) if standbys else None
        runtime = cls(database, ledger, store, engine, ReadModels(replicas or store), replicas)
        runtime.guard = TreeGuard(checkpoint_signer(database), ledger_identity(store), runtime.consistency)
        return runtime

    def tree_head(self) -> tuple[int, bytes]:
        """The Merkle tree of the log as the projections hold it now: (size, root hash)."""
        merkle = self.engine.merkle
        with self.store.reading() as cur:
            size = merkle.size(cur)
            return size, merkle.root(cur, size)

    def consistency(self, first_size: int, second_size: int) -> list[bytes]:
        with self.store.reading() as cur:
            return self.engine.merkle.consistency(cur, first_size, second_size)

    def sign_checkpoint(self, size: int, root: bytes) -> Note:
        """The signed checkpoint of the tree (size, root): RolledBack when it does not extend the
        largest tree this ledger signed (audit/rollback.py)."""
        assert self.guard is not None, "Runtime.open sets the guard"
        return self.guard.sign(size, root)

    def close(self) -> None:
        self.engine.stop()
        if self.replicas is not None:
            self.replicas.close()
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
