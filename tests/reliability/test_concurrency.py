"""Many clients at once — threads here and in other processes — writing to one claim and to many.

The server runs as `claims serve --workers 2`: two API processes, each with its own
group-commit writer, race for the same claims, and a separate projection process follows.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict

import httpx
import pytest

from tests.reliability.checks import (
    assert_acknowledged_writes_stored,
    assert_each_act_stored_once,
    assert_projections_equal_a_fresh_rebuild,
    assert_refused_writes_not_stored,
    assert_versions_contiguous,
    claim_id_of,
    stored_events,
)
from tests.reliability.conftest import StartServer
from tests.reliability.server import make_token, open_ledger_at
from tests.reliability.workload import (
    HOT_KEY,
    HOT_STATEMENT,
    Answer,
    Client,
    Write,
    acts_plan,
    answer_from,
    claim_key,
    registration,
    run_in_process,
    run_plan,
)

CLAIMS = 10
THREAD_CLIENTS = 4
PROCESSES = 2
CLIENTS_PER_PROCESS = 3
WRITES_PER_CLIENT = 25
READ_EVERY = 5  # every 5th acknowledged write is read back at its position
OPENERS = 6


def register_all_at_once(base: str, token: str) -> list[Answer]:
    """Three clients register every claim at the same time."""
    writes = [Write("/v1/claims", {"statement": HOT_STATEMENT, "key": HOT_KEY})]
    writes += [Write("/v1/claims", registration(i)) for i in range(CLAIMS)]
    clients = [Client(base, token) for _ in range(3)]
    try:
        with ThreadPoolExecutor(len(clients) * 2) as pool:
            return list(pool.map(lambda job: clients[job[0] % 3].send(job[1]), enumerate(writes * 3)))
    finally:
        for client in clients:
            client.close()


@pytest.mark.slow
def test_concurrent_writers_over_http_lose_no_acknowledged_write_and_projections_equal_a_rebuild(
    database_url: str, start_server: StartServer
) -> None:
    server = start_server(database_url, "--workers", "2")
    token_id, token = make_token(database_url, "recorder")

    registered = register_all_at_once(server.base, token)
    assert all(a.ok for a in registered), [(a.status, a.error or a.body) for a in registered if not a.ok]
    for key in {a.write.body["key"] for a in registered}:
        same = [a for a in registered if a.write.body["key"] == key]
        assert sorted(a.status or 0 for a in same) == [200, 200, 201], (key, [a.status for a in same])
        assert {a.body["id"] for a in same if a.body} == {claim_id_of(key)}

    keys = [claim_key(i) for i in range(CLAIMS)]
    plans = [
        acts_plan(f"c{i}", WRITES_PER_CLIENT, keys, seed=i, stale_if_match=0.1)
        for i in range(THREAD_CLIENTS + PROCESSES * CLIENTS_PER_PROCESS)
    ]
    start_at = time.time() + 3.0  # the other processes need a moment to start
    answers: list[Answer] = []
    unseen: list[Answer] = []
    lock = threading.Lock()

    def thread_client(plan: list[Write]) -> None:
        got, missed = run_plan(server.base, token, plan, check_reads_every=READ_EVERY, start_at=start_at)
        with lock:
            answers.extend(got)
            unseen.extend(missed)

    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(PROCESSES, mp_context=spawn) as processes:
        remote = [
            processes.submit(
                run_in_process, server.base, token,
                [[asdict(w) for w in plan] for plan in plans[THREAD_CLIENTS + p * CLIENTS_PER_PROCESS:][:CLIENTS_PER_PROCESS]],
                READ_EVERY, start_at,
            )
            for p in range(PROCESSES)
        ]
        threads = [threading.Thread(target=thread_client, args=(plan,)) for plan in plans[:THREAD_CLIENTS]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for future in remote:
            for client_answers in future.result(timeout=300):
                for data in client_answers:
                    answer, missed = answer_from(data)
                    answers.append(answer)
                    if missed:
                        unseen.append(answer)

    assert len(answers) == len(plans) * WRITES_PER_CLIENT
    statuses = Counter(a.status for a in answers)
    unexpected = [(a.write.path, a.status, a.error or a.body) for a in answers if a.status not in (201, 412)]
    assert not unexpected, f"{statuses}: {unexpected[:5]}"
    assert statuses[412] > 0, "no stale If-Match was refused: the test did not exercise it"
    assert not unseen, [(a.write.path, a.body, a.error) for a in unseen]

    events = stored_events(database_url)
    assert_versions_contiguous(events)
    assert_each_act_stored_once(events)
    acknowledged = assert_acknowledged_writes_stored(answers, events)
    assert acknowledged == statuses[201]
    assert assert_refused_writes_not_stored(answers, events, token_id) > 0
    assert len(events) == CLAIMS + 1 + acknowledged  # the registrations, and nothing unacknowledged

    server.wait_projected()
    head = events[-1].position
    hot = httpx.get(f"{server.base}/v1/claims/{HOT_KEY}", params={"min_position": head}, timeout=10).json()
    assert hot["version"] == sum(1 for e in events if e.claim_id == claim_id_of(HOT_KEY))
    assert_projections_equal_a_fresh_rebuild(database_url, head)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_processes_opening_one_postgresql_ledger_at_the_same_moment_all_start(database_url: str) -> None:
    """What `claims serve --workers N` (or serve and project started together) does at every
    start: first on a new schema, then again once its tables exist."""
    with ProcessPoolExecutor(OPENERS, mp_context=multiprocessing.get_context("spawn")) as processes:
        for _ in ("new schema", "existing tables"):
            start_at = time.time() + 2.0  # the first time, the processes need a moment to start
            opened = list(processes.map(open_ledger_at, [database_url] * OPENERS, [start_at] * OPENERS))
            assert opened == ["ok"] * OPENERS, opened
