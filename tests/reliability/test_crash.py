"""Crashes: the server or the projection process killed with SIGKILL while the ledger is written to.

A write answered 2xx was committed first, so it survives the crash; a write that got no
answer is retried by its client with the same Idempotency-Key and is then recorded once.
The projection process commits each batch with its tracking position, so killed mid-batch
it resumes where the last commit left it, and the read models end equal to a rebuild.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from domain.commands import Command
from fixtures.generator import generate
from fixtures.replay import command_of, import_fixture, read_lines
from service.runtime import Runtime
from store.event_store import open_ledger
from store.settings import Database
from tests.cli.test_serve import CLAIMS as CLAIMS_COMMAND
from tests.reliability.checks import (
    assert_acknowledged_writes_stored,
    assert_each_act_stored_once,
    assert_projections_equal_a_fresh_rebuild,
    assert_versions_contiguous,
    stored_events,
)
from tests.reliability.conftest import StartServer
from tests.reliability.server import LedgerServer, make_token, wait_until
from tests.reliability.workload import (
    HOT_KEY,
    HOT_STATEMENT,
    Answer,
    Client,
    Write,
    acts_plan,
    claim_key,
    registration,
)

CLAIMS = 8
CLIENTS = 6
WRITES_PER_CLIENT = 40
KILLS = 2
ACKS_BETWEEN_KILLS = 50


def crash_plan(client: str, seed: int) -> list[Write]:
    """Acts (most without an act_id, so the key names them) and a few new claims, all with a key."""
    plan = acts_plan(client, WRITES_PER_CLIENT, [claim_key(i) for i in range(CLAIMS)], seed=seed,
                     idempotency=True, client_act_ids=0.2)
    for n in range(0, WRITES_PER_CLIENT, 8):
        plan[n] = Write("/v1/claims", registration(1000 + seed * 100 + n, key=f"{client}-late-claim-{n}"),
                        idempotency_key=f"{client}-key-{n}")
    return plan


class CrashingClients:
    """Clients that, when a write gets no answer, wait for the server and retry it with its key."""

    def __init__(self, server: LedgerServer, token: str) -> None:
        self.server = server
        self.token = token
        self.up = threading.Event()
        self.up.set()
        self.lock = threading.Lock()
        self.acknowledged = 0
        self.final: list[Answer] = []
        self.no_answer: list[Answer] = []
        self.server_errors: list[Answer] = []

    def run(self, plan: list[Write]) -> None:
        client = Client(self.server.base, self.token)
        try:
            for write in plan:
                while True:
                    self.up.wait(120)
                    answer = client.send(write)
                    if answer.answered and answer.status != 503:
                        break
                    with self.lock:
                        (self.no_answer if not answer.answered else self.server_errors).append(answer)
                    time.sleep(0.05)
                with self.lock:
                    self.final.append(answer)
                    self.acknowledged += answer.ok
                if answer.status is not None and answer.status >= 500:
                    with self.lock:
                        self.server_errors.append(answer)
        finally:
            client.close()

    def kill_and_restart_when(self, acknowledged: int) -> None:
        wait_until(lambda: self.acknowledged >= acknowledged, 120, f"{acknowledged} writes were acknowledged")
        self.up.clear()  # clients whose write fails wait for the restart; writes in flight die
        self.server.kill()
        self.server.start()
        self.up.set()


@pytest.mark.slow
def test_writes_answered_before_a_sigkill_survive_it_and_retries_with_the_same_key_record_each_write_once(
    database_url: str, start_server: StartServer
) -> None:
    server = start_server(database_url)
    _, token = make_token(database_url, "recorder")
    setup = Client(server.base, token)
    for write in [Write("/v1/claims", {"statement": HOT_STATEMENT, "key": HOT_KEY})] + [
        Write("/v1/claims", registration(i)) for i in range(CLAIMS)
    ]:
        assert setup.send(write).status == 201
    setup.close()

    clients = CrashingClients(server, token)
    plans = [crash_plan(f"c{i}", i) for i in range(CLIENTS)]
    threads = [threading.Thread(target=clients.run, args=(plan,)) for plan in plans]
    for t in threads:
        t.start()
    try:
        for k in range(1, KILLS + 1):
            clients.kill_and_restart_when(k * ACKS_BETWEEN_KILLS)
    finally:
        clients.up.set()
        for t in threads:
            t.join(180)
    assert server.starts == KILLS + 1

    writes = [w for plan in plans for w in plan]
    assert len(clients.final) == len(writes)
    assert all(a.ok for a in clients.final), [(a.write.path, a.status, a.body) for a in clients.final if not a.ok]
    assert not [a for a in clients.server_errors if a.status != 503], clients.server_errors
    assert clients.no_answer, "no write was in flight when the server was killed: the test proved nothing"

    events = stored_events(database_url)
    assert_versions_contiguous(events)
    assert_each_act_stored_once(events)
    assert assert_acknowledged_writes_stored(clients.final, events) == len(writes)
    assert len(events) == CLAIMS + 1 + len(writes)  # each write recorded once, retried or not

    # A retry of any write, answered or not the first time, answers with the same event.
    again = Client(server.base, token)
    try:
        for first in clients.final:
            retry = again.send(first.write)
            assert retry.ok and retry.body is not None and first.body is not None
            fields = ("id" if first.write.kind == "claims" else "act_id", "version", "position")
            assert [retry.body[f] for f in fields] == [first.body[f] for f in fields], (first.body, retry.body)
    finally:
        again.close()
    assert len(stored_events(database_url)) == len(events)

    server.wait_projected()
    assert_projections_equal_a_fresh_rebuild(database_url, events[-1].position)


# -- The projection process ----------------------------------------------------------------------

PROJECTION_KILLS = 3
BACKLOG_CLAIMS = 2000  # about 21,000 events: more than the engine applies before the first kills


def commands_of(claims: int, seed: int, prefix: str) -> Iterator[Command]:
    """The generator's fixture lines as commands, keys made unique by `prefix`, made the way an
    import makes them: an act the line gives no act_id gets the stable one `claims import` gives
    it, so a command sent again after a crash that hid its commit is recorded once."""
    def prefixed(line: dict[str, object]) -> str:
        line = {k: v for k, v in line.items() if k != "recorded_at"}
        if line["op"] == "register":
            line["key"] = f"{prefix}-{line['key']}"
        if "claim" in line:
            line["claim"] = f"{prefix}-{line['claim']}"
        return json.dumps(line)

    for line in read_lines((prefixed(line) for line in generate(claims, seed)), prefix):
        yield command_of(line)


def backlog(claims: int, seed: int) -> Iterator[str]:
    """Fixture lines for the bulk import: a ledger with a history before projections start."""
    return (json.dumps(line) for line in generate(claims, seed))


@pytest.mark.slow
def test_a_projection_process_killed_mid_batch_again_and_again_applies_every_event_exactly_once(
    database_url: str, tmp_path: Path
) -> None:
    ledger = open_ledger(Database.from_url(database_url))
    runtime = Runtime.open(database_url, pool_size=1)
    env = {**os.environ, "LEDGER_DATABASE_URL": database_url}
    log = tmp_path / "project.log"
    stop = threading.Event()

    def keep_writing() -> None:  # a live ledger: new events arrive while projections crash
        commands = commands_of(200, seed=99, prefix="live")
        while not stop.is_set():
            chunk = [c for _, c in zip(range(10), commands, strict=False)]
            if not chunk:
                return
            assert all(o.error is None for o in ledger.execute(chunk))
            time.sleep(0.02)

    def project() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen([*CLAIMS_COMMAND, "project"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    try:
        import_fixture(ledger, backlog(BACKLOG_CLAIMS, seed=7))
        writer = threading.Thread(target=keep_writing)
        writer.start()
        rng = random.Random(3)
        positions = [runtime.engine.position()]
        killed_behind = 0
        for _ in range(PROJECTION_KILLS):
            process = project()
            wait_until(lambda: runtime.engine.position() > positions[-1], 60,
                       "the projection process committed a batch")
            time.sleep(rng.uniform(0.02, 0.15))  # into the next batch (one takes 0.2-0.6 s)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
            positions.append(runtime.engine.position())
            assert positions[-1] >= positions[-2]
            killed_behind += positions[-1] < ledger.max_position()
        # On a quiet machine a later kill can find the engine caught up with the writer;
        # the first ones land while it still works through the backlog.
        assert killed_behind >= 1, "the engine finished before any kill"
        stop.set()
        writer.join(60)

        process = project()
        try:
            head = ledger.max_position()
            wait_until(lambda: runtime.engine.position() == head, 120, "the projection process caught up")
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0, log.read_text()
        assert_projections_equal_a_fresh_rebuild(database_url, head)
        with runtime.store.reading() as cur:
            rows = cur.execute("SELECT COUNT(*) FROM rm_history").fetchone()
        assert rows is not None and rows[0] == len(stored_events(database_url))
    finally:
        stop.set()
        runtime.close()
        ledger.close()
