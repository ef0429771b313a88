"""Reads from PostgreSQL hot standbys (LEDGER_READ_DATABASE_URL).

A standby is a streaming replica of the ledger's whole database: the event log and the read
models the primary's projection engine keeps, with the tracking position they were made up
to. `ReadRouter` is where every projection read goes (projections/queries.py takes it in
place of the primary's ReadStore): to a standby within LEDGER_READ_MAX_LAG_SECONDS of the
primary, else to the primary (LEDGER_READ_FALLBACK=primary) or nowhere (`refuse`: 503 with
Retry-After). A read that waits for `min_position` waits on the tracking position of the store
it reads, the standby's own.

The lag is probed at most every PROBE_SECONDS, by the thread that finds the last probe old:
the primary's WAL position (`pg_current_wal_lsn`) against each standby's replayed one
(`pg_last_wal_replay_lsn`), in bytes, and in seconds since the standby replayed its last
transaction (`pg_last_xact_replay_timestamp`), counted only while it is behind in bytes (an
idle primary sends nothing, and its standby is then not behind at all). Nothing listens on a
standby: waits there poll.

While the primary is unreachable (stopped, crashed, cut off) its WAL position cannot be read,
but a standby still holds everything it had replayed: it keeps serving reads, its lag counted
in seconds from the moment it was last measured current (`lag_bytes` unknown), so once the
outage is longer than LEDGER_READ_MAX_LAG_SECONDS it counts as behind like any other stale
standby. Writes fail meanwhile (they need the primary): no acknowledged write is missing from
such a read unless another node still reaches the primary.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import psycopg

from domain.errors import StoreUnavailable
from store.db import Cursor, Params, ReadStore
from store.settings import Database

log = logging.getLogger("claims.replicas")

PROBE_SECONDS = 0.5  # the lag is measured again when the last measure is older than this
PROBE_TIMEOUT_SECONDS = 2


class ReplicaBehind(StoreUnavailable):
    """No standby is close enough to the primary and reads must not fall back to it (503)."""

    code = "replica-behind"
    title = "Replicas behind"


@dataclass(frozen=True)
class Lag:
    """How far one standby is behind the primary, as last measured."""

    name: str
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    paused: bool = False
    problem: str | None = None  # why it could not be measured (unreachable, not a standby)
    note: str | None = None  # how it was measured, when not against the primary

    def usable(self, max_seconds: float) -> bool:
        return self.problem is None and self.lag_seconds is not None and self.lag_seconds <= max_seconds

    def health(self, max_seconds: float) -> dict[str, Any]:
        status = "unreachable" if self.problem else "ok" if self.usable(max_seconds) else "behind"
        return {"name": self.name, "status": status, "lag_bytes": self.lag_bytes, "lag_seconds": self.lag_seconds,
                "replay_paused": self.paused, "problem": self.problem, "note": self.note}


def lsn(text: str) -> int:
    """A PostgreSQL WAL position (`16/B374D848`) as a byte offset."""
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def standby_database(url: str, primary: Database) -> Database:
    """A standby's Database: the primary's schema unless its URL names one."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if "schema" not in query:
        query["schema"] = [primary.schema]
        url = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
    return Database.from_url(url, primary.settings)


class ReadRouter:
    """The read side of a ledger with hot standbys: `reading()` like a ReadStore's, on the
    store the read should go to now."""

    def __init__(self, primary: ReadStore, standby_urls: list[str], *, pool_size: int = 8) -> None:
        if primary.backend != "postgres":
            raise StoreUnavailable("LEDGER_READ_DATABASE_URL needs the ledger on PostgreSQL (standbys replicate it)")
        self.primary = primary
        self.database = primary.database
        self.backend = primary.backend
        settings = primary.database.settings
        self.max_lag_seconds = settings.read_max_lag_seconds
        self.fallback = settings.read_fallback
        self.standbys = [ReadStore(standby_database(url, self.database), pool_size, standby=True)
                         for url in standby_urls]
        self._lags = [Lag(_name(s.database), problem="not measured yet") for s in self.standbys]
        self._probed = -float("inf")
        # When each standby was last known current (monotonic): its measure's time less its lag.
        self._current_at: dict[str, float] = {}
        self._probe_lock = threading.Lock()
        self._turn = itertools.count()

    def close(self) -> None:
        for standby in self.standbys:
            standby.close()

    # Where a read goes.
    def choose(self, *, wait: bool = True) -> ReadStore:
        """A standby within the lag allowed (in turn, when several are), else the fallback.

        `wait=False` (for the event loop, which must not wait on a probe): by the last measure,
        when there has been one; an old measure is taken again in a thread of its own."""
        if wait or not self.measured:
            lags = self.lags()
        else:
            lags = self._lags
            if time.monotonic() - self._probed >= PROBE_SECONDS and not self._probe_lock.locked():
                threading.Thread(target=self.lags, name="claims-replica-probe", daemon=True).start()
        fit = [store for store, lag in zip(self.standbys, lags, strict=True) if lag.usable(self.max_lag_seconds)]
        if fit:
            return fit[next(self._turn) % len(fit)]
        if self.fallback == "refuse":
            worst = "; ".join(f"{lag.name}: {lag.problem or f'{lag.lag_seconds:.1f} s behind'}" for lag in lags)
            raise ReplicaBehind(
                f"no read replica is within {self.max_lag_seconds:g} s of the primary ({worst}); retry shortly"
            )
        return self.primary

    @contextmanager
    def reading(self) -> Iterator[Cursor]:
        with self.choose().reading() as cur:
            yield cur

    def query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        return self.choose().query(sql, params)

    # Lag.
    @property
    def measured(self) -> bool:
        """Whether the lag has been measured at all since start-up."""
        return self._probed != -float("inf")

    def lags(self) -> list[Lag]:
        """Each standby's lag, measured again when the last measure is older than PROBE_SECONDS."""
        if time.monotonic() - self._probed >= PROBE_SECONDS and self._probe_lock.acquire(blocking=False):
            try:
                self._lags = self._probe()
                self._probed = time.monotonic()
            finally:
                self._probe_lock.release()
        return self._lags

    def _probe(self) -> list[Lag]:
        now = time.monotonic()
        try:
            head: int | None = lsn(str(_one(self.database, "SELECT pg_current_wal_lsn()::text")[0]))
            primary_problem = None
        except (psycopg.Error, OSError) as e:
            head, primary_problem = None, str(e).strip() or type(e).__name__
        lags = [self._measure(store, head) for store in self.standbys]
        if primary_problem is None:
            for lag in lags:
                if lag.problem is None and lag.lag_seconds is not None:
                    self._current_at[lag.name] = now - lag.lag_seconds
            return lags
        return [self._without_primary(lag, primary_problem, now) for lag in lags]

    def _without_primary(self, lag: Lag, problem: str, now: float) -> Lag:
        """A reachable standby's lag while the primary's position is unknown: the seconds since
        it was last measured current (never measured: unknown, and it serves no reads)."""
        if lag.problem is not None:
            return lag
        current_at = self._current_at.get(lag.name)
        if current_at is None:
            return Lag(lag.name, paused=lag.paused, problem=f"the primary's WAL position is unknown: {problem}")
        return Lag(lag.name, None, round(now - current_at, 3), lag.paused,
                   note=f"the primary is unreachable ({problem}); lag counted from when this standby was last"
                        " seen current")

    def _measure(self, store: ReadStore, head: int | None) -> Lag:
        name = _name(store.database)
        try:
            recovering, replayed, age, paused = _one(
                store.database,
                "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,"
                " extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8,"
                " CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END",
            )
        except (psycopg.Error, OSError) as e:
            return Lag(name, problem=f"unreachable: {str(e).strip() or type(e).__name__}")
        if not recovering or replayed is None:
            return Lag(name, problem="not a hot standby (pg_is_in_recovery() is false)")
        if head is None:  # the primary's position is unknown: _without_primary() says how far behind
            return Lag(name, paused=bool(paused))
        behind = max(0, head - lsn(str(replayed)))
        seconds = 0.0 if behind == 0 else max(0.0, float(age)) if age is not None else None
        return Lag(name, behind, seconds, bool(paused))


def _one(database: Database, sql: str) -> tuple[Any, ...]:
    kwargs: dict[str, Any] = {**database.connect_kwargs(), "connect_timeout": PROBE_TIMEOUT_SECONDS,
                              "autocommit": True, "options": f"-c statement_timeout={PROBE_TIMEOUT_SECONDS * 1000}"}
    with psycopg.connect(**kwargs) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return tuple(row)


def _name(database: Database) -> str:
    return f"{database.host}:{database.port}"
