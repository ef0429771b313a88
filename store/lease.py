"""Leases: one process at a time does a job (the projection engine, checkpoint witnessing)
among every process that may, on several machines, sharing one PostgreSQL ledger.

A lease is a PostgreSQL session advisory lock (`pg_try_advisory_lock`) held on a connection
of its own: the server releases it when that session ends, whether its process stopped,
crashed or lost the network, and another process's next try takes it. Its key is derived from
the job, the database and the schema, so two ledgers in one database never share a lease.

The lease decides who works, not what is correct: the jobs stay safe with two processes at
once (the projection engine's tracking position applies each batch once whoever applies it),
so a holder that has lost its session without knowing yet does no harm before it checks.

On SQLite (one machine, one file) the lease is always held.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from typing import Any

import psycopg

from store.settings import Database

log = logging.getLogger("claims.lease")

# A holder checks that its session is alive at most this often (one round trip).
CHECK_SECONDS = 1.0
# The longest a check or a try waits on an unresponsive server before giving the lease up.
STATEMENT_TIMEOUT_MS = 2000

LEADER = "leader"
STANDBY = "standby"
SOLE = "sole"  # SQLite: the only process there can be


def lease_key(database: Database, job: str) -> int:
    """The advisory lock's 64-bit key of `job` in this database and schema."""
    text = f"claims-ledger lease {job} {database.dbname} {database.schema}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


class Lease:
    """One job's lease for this process: `keep()` before each piece of the job says whether
    this process holds it (taking it if it is free); `release()` gives it up."""

    def __init__(self, database: Database, job: str) -> None:
        self.database = database
        self.job = job
        self.key = lease_key(database, job)
        self._conn: Any = None
        self._held = database.backend != "postgres"
        self._checked = 0.0
        self._lock = threading.Lock()
        self.acquired = 0  # how many times this process took the lease

    @property
    def role(self) -> str:
        if self.database.backend != "postgres":
            return SOLE
        return LEADER if self._held else STANDBY

    @property
    def held(self) -> bool:
        return self._held

    def keep(self) -> bool:
        """True when this process holds the lease now: checked on its session (at most every
        CHECK_SECONDS) when it held it, tried when it did not."""
        if self.database.backend != "postgres":
            return True
        with self._lock:
            now = time.monotonic()
            if self._held and now - self._checked < CHECK_SECONDS:
                return True
            try:
                if self._conn is None:
                    self._connect()
                if self._held:
                    self._conn.execute("SELECT 1")
                else:
                    row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
                    if row and row[0]:
                        self._held = True
                        self.acquired += 1
                        log.info("this process now holds the %s lease", self.job)
                self._checked = now
            except psycopg.Error as e:
                if self._held:
                    log.warning("the %s lease is lost (its session failed: %s)", self.job, e)
                self._drop()
            return self._held

    def _connect(self) -> None:
        kwargs: dict[str, Any] = {**self.database.connect_kwargs(), "autocommit": True,
                                  "application_name": f"claims-ledger {self.job} lease"}
        # A server that stops answering is noticed by the checks' timeout, a dead peer by keepalives.
        kwargs.update(keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=2)
        self._conn = psycopg.connect(**kwargs)
        self._conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")

    def _drop(self) -> None:
        self._held = False
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def release(self) -> None:
        """Give the lease up (closing its session releases the lock) so another takes it at once."""
        if self.database.backend != "postgres":
            return
        with self._lock:
            if self._held:
                log.info("this process gives up the %s lease", self.job)
            self._drop()
