"""Two nodes on one PostgreSQL ledger: two `claims serve` processes that share no socket and
no file, only the database.

Both take writes; one projection engine applies the log, the holder of the engine's lease
(store/lease.py), while the other stands by. Every write is stored once at the version and
position it was answered with, an Idempotency-Key holds across the nodes, and when the
leader is killed (SIGKILL, mid-stream) the other node's engine takes over within seconds and
every event is applied exactly once: the read models equal a fresh rebuild (one history row
and one Merkle leaf per event, the tracking position at the log's end). A token made or
revoked by `claims token` holds on both nodes at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from tests.conftest import drop_schema, new_database_url
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

CLAIMS = 20
TAKEOVER_GOAL_SECONDS = 5.0
NODE_ENV = {"LEDGER_LEASE_RETRY_SECONDS": "0.25"}


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    url = new_database_url("postgres", tmp_path)
    yield url
    drop_schema(url)


def lease_of(node: LedgerServer) -> str:
    return str(node.health()["projections"]["lease"])


def two_nodes(url: str, start_server: StartServer) -> tuple[LedgerServer, LedgerServer]:
    """Node A, leading once it answers, then node B, standing by."""
    a = start_server(url, extra_env=NODE_ENV)
    wait_until(lambda: lease_of(a) == "leader", 10, "node A's engine leads")
    b = start_server(url, extra_env=NODE_ENV)
    assert lease_of(b) == "standby"
    return a, b


def register(base: str, token: str) -> list[str]:
    keys = [claim_key(i) for i in range(CLAIMS)]
    with closing(Client(base, token)) as client:
        for body in [{"statement": HOT_STATEMENT, "key": HOT_KEY}, *(registration(i) for i in range(CLAIMS))]:
            answer = client.send(Write("/v1/claims", body))
            assert answer.status == 201, answer
    return keys


def stream(base: str, token: str, plan: list[Write], stop: threading.Event, answers: list[Answer]) -> None:
    """Send the plan's writes one after another until it ends or `stop` is set."""
    with closing(Client(base, token)) as client:
        for write in plan:
            if stop.is_set():
                return
            answers.append(client.send(write))


def check_every_write(url: str, answers: list[Answer], node: LedgerServer) -> None:
    node.wait_projected(30)
    events = stored_events(url)
    assert_versions_contiguous(events)
    assert_each_act_stored_once(events)
    assert assert_acknowledged_writes_stored(answers, events) == sum(a.ok for a in answers)
    assert_projections_equal_a_fresh_rebuild(url, events[-1].position)


def test_two_nodes_take_writes_and_one_engine_applies_them(pg_url: str, start_server: StartServer) -> None:
    _, token = make_token(pg_url, "recorder")
    a, b = two_nodes(pg_url, start_server)
    keys = register(a.base, token)
    answers: list[list[Answer]] = [[], []]
    never = threading.Event()
    writers = [
        threading.Thread(target=stream, args=(node.base, token, acts_plan(f"node{i}", 150, keys, seed=i,
                                                                           idempotency=True), never, answers[i]))
        for i, node in enumerate((a, b))
    ]
    for t in writers:
        t.start()
    # The same write, with one Idempotency-Key, to both nodes at once: one act, the same answer.
    same = Write(f"/v1/claims/{keys[0]}/assertions", {"party": {"id": "tass", "name": "TASS"},
                                                      "said_at": "2015-09-15", "quote": "Once, through two nodes"},
                 idempotency_key="both-nodes")
    both: list[Answer] = []
    barrier = threading.Barrier(2)

    def send_same(node: LedgerServer) -> None:
        with closing(Client(node.base, token)) as client:
            barrier.wait(10)
            both.append(client.send(same))

    racers = [threading.Thread(target=send_same, args=(node,)) for node in (a, b)]
    for t in racers:
        t.start()
    for t in racers + writers:
        t.join(120)
    # One act: the second is answered with the first's kept response, or, when both were in
    # flight at once, as a retry of the same act (the act_id derived from the key).
    assert all(x.ok for x in both) and both[0].body and both[1].body, [x.body for x in both]
    assert len({(x.body["act_id"], x.body["position"]) for x in both if x.body}) == 1, [x.body for x in both]
    written = answers[0] + answers[1]
    assert all(x.ok for x in written), [x for x in written if not x.ok][:3]
    assert (lease_of(a), lease_of(b)) == ("leader", "standby")
    check_every_write(pg_url, [*written, *both], b)
    # Reads on the standby's node show the leader's work (one database).
    assert b.health()["projections"]["position"] == b.head()
    metrics = httpx.get(f"{b.base}/metrics", timeout=5).text
    assert 'claims_lease_leader{lease="projections"} 0.0' in metrics


def test_killing_the_engine_leader_mid_stream_hands_the_log_over_once(
    pg_url: str, start_server: StartServer
) -> None:
    _, token = make_token(pg_url, "recorder")
    a, b = two_nodes(pg_url, start_server)
    keys = register(b.base, token)
    answers: list[Answer] = []
    stop = threading.Event()
    writer = threading.Thread(target=stream, args=(b.base, token, acts_plan("w", 100_000, keys, seed=7), stop,
                                                   answers))
    writer.start()
    try:
        wait_until(lambda: len(answers) >= 200, 30, "writes stream in")
        position_at_kill = b.health()["projections"]["position"]
        killed = time.monotonic()
        a.kill()
        wait_until(lambda: lease_of(b) == "leader", TAKEOVER_GOAL_SECONDS * 2, "node B's engine takes over")
        took_over = time.monotonic() - killed
        wait_until(lambda: b.health()["projections"]["position"] > position_at_kill, 10,
                   "node B's engine applies the log")
        applying = time.monotonic() - killed
        written_at_kill = len(answers)
        wait_until(lambda: len(answers) >= written_at_kill + 200, 30, "writes go on after the takeover")
    finally:
        stop.set()
        writer.join(60)
    print(f"takeover: lease after {took_over:.2f} s, applying after {applying:.2f} s")
    assert took_over < TAKEOVER_GOAL_SECONDS
    assert applying < TAKEOVER_GOAL_SECONDS
    assert all(x.ok for x in answers), [x for x in answers if not x.ok][:3]
    check_every_write(pg_url, answers, b)
    # The killed node comes back standing by.
    a.start()
    assert lease_of(a) == "standby"


def test_a_token_made_or_revoked_by_a_command_holds_on_every_node_at_once(
    pg_url: str, start_server: StartServer
) -> None:
    """Tokens live in the shared `api_tokens` table and are looked up on every request (no
    cache): one made with `claims token create` works on both nodes at once, and after
    `claims token revoke` both refuse it (401) on the very next request."""
    a, b = two_nodes(pg_url, start_server)
    made = a.claims("token", "create", "--role", "recorder", "--label", "two nodes")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    token_id = made.stderr.split("created token ", 1)[1].split(" ", 1)[0]
    keys = {a.port: "made-on-a-used-on-a", b.port: "made-on-a-used-on-b"}
    clients = {node.port: httpx.Client(base_url=node.base, timeout=10,
                                       headers={"Authorization": f"Bearer {token}"})
               for node in (a, b)}
    try:
        for node in (b, a):  # no request in between: the node that did not make it first
            key = keys[node.port]
            written = clients[node.port].post("/v1/claims", json={"statement": f"Written with a token, {key}",
                                                                  "key": key})
            assert written.status_code == 201, written.text

        revoked = b.claims("token", "revoke", token_id)
        assert revoked.returncode == 0 and f"revoked token {token_id}" in revoked.stderr, revoked.stderr
        for node in (a, b):
            refused = clients[node.port].post(f"/v1/claims/{keys[node.port]}/assertions",
                                         json={"party": {"id": "tass", "name": "TASS"}, "said_at": "2015-09-15"})
            assert refused.status_code == 401, (node.base, refused.status_code, refused.text)
            assert refused.headers["content-type"] == "application/problem+json", refused.headers
    finally:
        for client in clients.values():
            client.close()
    a.wait_projected(30)  # one database: the leader's projections serve both nodes' reads
    for node in (a, b):  # each node serves what was written through the other
        for key in keys.values():
            assert httpx.get(f"{node.base}/v1/claims/{key}", timeout=10).status_code == 200, (node.base, key)
    listed = a.claims("token", "list")
    assert listed.returncode == 0 and any(
        line.startswith(token_id) and "two nodes" in line and line.split()[3] != "-"
        for line in listed.stdout.splitlines()
    ), listed.stdout
