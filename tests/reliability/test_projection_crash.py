"""PostgreSQL crashes (`pg_ctl stop -m immediate`) while the projection engine commits its
batches with `synchronous_commit off`.

A projection batch is committed without waiting for its write-ahead log to reach the disk,
so a crash of the server can lose the last batches whole, tracking position included; the
engine must then apply them again, once. The ledger's own writes are durable: every write
acknowledged before a crash is there after it.

The cluster is a private one (tests/reliability/private_postgres.py), never the shared
server, set so that a batch's commit stays in PostgreSQL's memory until something flushes
it (the WAL writer only every 10 s, no background writer, no autovacuum): a crash right
after a batch committed loses it for sure. The writes come from a Ledger in a thread (the
group writer's way), the engine runs as `claims project`, its own process.

Two crashes: one in the middle of the stream (writes and batches in flight), one at the
instant the engine has applied the whole log in a batch that no later durable write has
flushed. Afterwards every event is applied exactly once: the read models equal a fresh
rebuild, each event has one history row and one Merkle leaf, and the tracking position is
the log's end.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psycopg
import pytest
from eventsourcing.persistence import PersistenceError

from domain.commands import Command
from domain.errors import StoreUnavailable
from projections.engine import TRACKING_NAME
from projections.tables import LIVE, Tables
from service.runtime import Runtime
from store.event_store import open_ledger
from store.settings import Database
from tests.cli.test_serve import CLAIMS as CLAIMS_COMMAND
from tests.reliability.checks import (
    assert_each_act_stored_once,
    assert_projections_equal_a_fresh_rebuild,
    assert_versions_contiguous,
    stored_events,
)
from tests.reliability.private_postgres import PrivateCluster, private_cluster
from tests.reliability.server import wait_until
from tests.reliability.test_crash import commands_of

CLAIMS = 300  # about 3,000 events
CHUNK = 10  # commands per write (one transaction)
SCHEMA = "ledger"
LOSS_ATTEMPTS = 3  # crashes tried, each right after an unflushed batch, until one loses a batch
# Nothing but a commit that waits for it flushes the write-ahead log: a projection batch's
# commit stays in shared memory (WAL buffers large enough to hold it) until the next
# durable write, or the WAL writer's round every 10 s.
UNFLUSHED = {
    "wal_writer_delay": "10s", "wal_writer_flush_after": "1GB", "wal_buffers": "64MB",
    "bgwriter_lru_maxpages": "0", "autovacuum": "off", "checkpoint_timeout": "1h", "max_wal_size": "4GB",
}
FAILURES = (StoreUnavailable, PersistenceError, psycopg.Error, OSError)


class Writer:
    """The Ledger in a thread writing `commands` a chunk (one transaction) at a time. A chunk
    that fails (the server crashed under it) is sent again once the server is up: every
    command names its claim by key and its act by act_id, so a chunk that was committed
    after all is answered as a retry and recorded once. `park_after(n)` stops it between
    chunks once n more are written, `release()` lets it go on."""

    def __init__(self, url: str, commands: Sequence[Command]) -> None:
        self.ledger = open_ledger(Database.from_url(url))
        self.chunks = [list(commands[i:i + CHUNK]) for i in range(0, len(commands), CHUNK)]
        self.committed = 0  # chunks written
        self.quarter = threading.Event()  # set once a quarter of the chunks are written
        self.failed_attempts = 0
        self.refused: list[str] = []  # commands the ledger refused (none should be)
        self.server_up = threading.Event()
        self.server_up.set()
        self.park_at: float = math.inf
        self.parked = threading.Event()
        self.resume = threading.Event()
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.run, name="ledger-writer")

    def run(self) -> None:
        try:
            while self.committed < len(self.chunks) and not self.stopping.is_set():
                if self.committed >= self.park_at:
                    self.parked.set()
                    self.resume.wait()
                    self.resume.clear()
                    self.parked.clear()
                self.write_next()
        except BaseException as e:
            self.error = e
            raise

    def write_next(self) -> None:
        chunk = self.chunks[self.committed]
        deadline = time.monotonic() + 120
        while not self.stopping.is_set():
            self.server_up.wait(120)
            try:
                outcomes = self.ledger.execute(chunk)
            except FAILURES:
                self.failed_attempts += 1
                if time.monotonic() > deadline:
                    raise
                continue
            self.refused += [str(o.error) for o in outcomes if o.error is not None]
            self.committed += 1
            if self.committed == len(self.chunks) // 4:
                self.quarter.set()
            return

    def park_after(self, chunks: int) -> None:
        """Returns once `chunks` more chunks are committed and the writer waits before the next."""
        self.park_at = self.committed + chunks
        wait_until(lambda: self.parked.is_set() or not self.thread.is_alive(), 120, "the writer parked")
        assert self.parked.is_set(), f"the writer ended before it parked ({self.committed} of {len(self.chunks)} chunks)"

    def release(self) -> None:
        self.park_at = math.inf
        self.resume.set()

    def stop(self) -> None:
        self.stopping.set()
        self.server_up.set()
        self.release()
        if self.thread.ident is not None:
            self.thread.join(120)
        self.ledger.close()


def reading(database: Database, sql: str, *params: object) -> int:
    """One number, read on a fresh connection (the server may have just restarted); `{schema}` names the ledger's."""
    with psycopg.connect(**database.connect_kwargs(), autocommit=True) as conn:  # type: ignore[arg-type]
        row = conn.execute(sql.replace("{schema}", f'"{database.schema}"'), params).fetchone()  # type: ignore[arg-type]
    return int(row[0]) if row and row[0] is not None else 0


def projected(database: Database) -> int:
    """The tracking position: the last log position the read models hold."""
    return reading(database, f"SELECT position FROM {{schema}}.{Tables(LIVE).tracking} WHERE name = %s", TRACKING_NAME)


def log_end(database: Database, events_table: str) -> int:
    """The newest position in the event log."""
    return reading(database, f"SELECT max(notification_id) FROM {{schema}}.{events_table}")


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    with private_cluster(**UNFLUSHED) as pg:
        yield pg


def start_projections(url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([*CLAIMS_COMMAND, "project"], env={**os.environ, "LEDGER_DATABASE_URL": url},
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.postgres
@pytest.mark.slow
def test_after_postgresql_crashes_under_unflushed_projection_batches_every_event_is_applied_exactly_once(
    cluster: PrivateCluster, tmp_path: Path,
) -> None:
    url = cluster.url(SCHEMA)
    database = Database.from_url(url)
    Runtime.open(url, pool_size=1).close()  # the tables, before two processes race to make them
    commands = list(commands_of(CLAIMS, seed=11, prefix="crash"))
    writer = Writer(url, commands)
    events_table = str(writer.ledger.recorder.events_table_name)  # type: ignore[attr-defined]
    log = tmp_path / "project.log"
    projections = start_projections(url, log)

    def crash_and_restart(*, engine_frozen: bool) -> int:
        """Crash the server and start it again; the tracking position it came back with
        (read before the engine, frozen meanwhile when `engine_frozen`, could move it)."""
        writer.server_up.clear()
        cluster.crash()
        cluster.start()
        position = projected(database)
        if engine_frozen:
            os.killpg(projections.pid, signal.SIGCONT)
        writer.server_up.set()
        return position

    def applied_up_to(position: int) -> Callable[[], bool]:
        return lambda: projected(database) == position

    lost: list[tuple[int, int]] = []  # (position applied before a crash, position after it)
    try:
        # The engine is up (its process started, the first write applied) before the stream.
        writer.write_next()
        wait_until(lambda: projected(database) > 0, 120, "the projection process applied the first write")
        writer.thread.start()

        # 1. Mid-stream: the writer a quarter through, the engine following it.
        wait_until(lambda: writer.quarter.is_set() and projected(database) > 0, 120,
                   "a quarter of the writes are committed and the engine applied some")
        mid_stream = (projected(database), log_end(database, events_table))
        crash_and_restart(engine_frozen=False)
        assert writer.error is None, writer.error
        assert writer.thread.is_alive() and writer.committed < len(writer.chunks), "the stream ended before the crash"

        # 2. Right after the engine applied the whole log in a batch nothing has flushed yet.
        for _ in range(LOSS_ATTEMPTS):
            writer.park_after(5)  # a few writes after the restart, then none
            head = log_end(database, events_table)
            wait_until(applied_up_to(head), 120, "the engine applied every event written")
            os.killpg(projections.pid, signal.SIGSTOP)  # so that it cannot apply anything before the position is read
            after = crash_and_restart(engine_frozen=True)
            lost.append((head, after))
            writer.release()
            if after < head:
                break
        assert any(after < head for head, after in lost), (
            f"no crash lost an unflushed projection batch (position before, after): {lost}; the test proved nothing"
        )

        writer.thread.join(300)
        assert not writer.thread.is_alive() and writer.error is None, writer.error
        assert writer.refused == []
        head = log_end(database, events_table)
        wait_until(lambda: projected(database) == head, 120, "the engine applied every event after the crashes")
    finally:
        os.killpg(projections.pid, signal.SIGCONT)
        projections.send_signal(signal.SIGTERM)
        try:
            stopped = projections.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(projections.pid, signal.SIGKILL)
            stopped = projections.wait(30)
        writer.stop()
    assert stopped == 0, log.read_text()
    # Each crash was one: the server recovered from its write-ahead log when it started again.
    assert cluster.log_text().count("automatic recovery in progress") == 1 + len(lost), cluster.log_text()[-3000:]

    events = stored_events(url)
    assert len(events) == len(commands)  # each command recorded once, retried or not
    assert_versions_contiguous(events)
    assert_each_act_stored_once(events)
    assert events[-1].position == head
    assert_projections_equal_a_fresh_rebuild(url, head)  # hashes, Merkle root, every table, position
    runtime = Runtime.open(url, pool_size=1)
    try:
        with runtime.store.reading() as cur:
            history = cur.execute(
                f"SELECT position, COUNT(*) FROM {Tables(LIVE).history} GROUP BY position ORDER BY position"
            ).fetchall()
            leaves = cur.execute(f"SELECT COUNT(*), COUNT(DISTINCT position) FROM {LIVE}merkle_leaves").fetchone()
        assert [(int(p), int(n)) for p, n in history] == [(e.position, 1) for e in events]
        assert leaves is not None and (int(leaves[0]), int(leaves[1])) == (len(events), len(events))
        assert runtime.engine.position() == runtime.ledger.max_position() == head
    finally:
        runtime.close()
    print(f"crash mid-stream at (applied, written) {mid_stream}; {len(lost)} crash(es) after an unflushed batch, "
          f"(applied before, after): {lost}; writes failed by the crashes and sent again: {writer.failed_attempts}")
