"""Reads from a hot standby (LEDGER_READ_DATABASE_URL): a private primary and its streaming
standby (tests/reliability/private_postgres.py `private_pair`), made once for the module, and
real `claims serve` processes writing to the primary and reading from the standby.

Replay is paused on the standby (`pg_wal_replay_pause()`) to make it fall behind: a read then
shows the standby's older state, `min_position` waits on the standby's own projections, and
beyond LEDGER_READ_MAX_LAG_SECONDS reads go to the primary, or are refused (503, Retry-After)
with LEDGER_READ_FALLBACK=refuse. /healthz and /metrics say how far behind it is.

Last (it stops the module's primary): the primary is stopped while clients write and read.
Writes are prompt 503 problems, reads go on from the standby (its lag counted from when it was
last seen current), /healthz says the primary is unreachable; once the primary is back the same
server recovers, every write retried with its Idempotency-Key is recorded once, and the
standby catches up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager

import httpx
import psycopg
import pytest

from store.db import ReadStore
from store.replicas import ReadRouter
from store.settings import Database, Settings
from tests.reliability.checks import (
    assert_acknowledged_writes_stored,
    assert_each_act_stored_once,
    assert_versions_contiguous,
    stored_events,
)
from tests.reliability.conftest import StartServer
from tests.reliability.private_postgres import PrivateCluster, private_pair
from tests.reliability.server import LedgerServer, make_token, wait_until
from tests.reliability.test_outage import OutageClients
from tests.reliability.workload import HOT_KEY, HOT_STATEMENT, PARTIES, Client, Write, acts_plan, registration

SCHEMA = "ledger"
Pair = tuple[PrivateCluster, PrivateCluster]


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with private_pair() as made:
        yield made


@contextmanager
def replay_paused(standby: PrivateCluster) -> Iterator[None]:
    with psycopg.connect(standby.url(SCHEMA).split("?")[0], autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
        try:
            yield
        finally:
            conn.execute("SELECT pg_wal_replay_resume()")


def serve(pair: Pair, start_server: StartServer, **env: str) -> LedgerServer:
    primary, standby = pair
    return start_server(primary.url(SCHEMA), extra_env={"LEDGER_READ_DATABASE_URL": standby.url(SCHEMA), **env})


def assertion(http: httpx.Client, act_id: str) -> dict[str, object]:
    answer = http.post(f"/v1/claims/{HOT_KEY}/assertions",
                       json={"party": PARTIES[0], "said_at": "2015-09-14", "quote": act_id, "act_id": act_id})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert isinstance(body, dict)
    return body


def act_ids(http: httpx.Client, **params: object) -> list[str]:
    read = http.get(f"/v1/claims/{HOT_KEY}/history", params=params)
    assert read.status_code == 200, read.text
    return [e["act_id"] for e in read.json()["events"] if e["act_id"]]


def test_reads_come_from_the_standby_and_min_position_waits_on_its_own_projections(
    pair: Pair, start_server: StartServer,
) -> None:
    primary, standby = pair
    _, token = make_token(primary.url(SCHEMA), "recorder")
    node = serve(pair, start_server, LEDGER_READ_MAX_LAG_SECONDS="60")
    with httpx.Client(base_url=node.base, timeout=10, headers={"Authorization": f"Bearer {token}"}) as http:
        registered = http.post("/v1/claims", json={"statement": HOT_STATEMENT, "key": HOT_KEY})
        assert registered.status_code == 201, registered.text
        first = assertion(http, "first")
        assert act_ids(http, min_position=first["position"]) == ["first"]  # read-your-writes, on the standby
        replica = node.health()["replicas"][0]
        assert replica["name"] == f"127.0.0.1:{standby.port}" and replica["status"] == "ok", replica

        with replay_paused(standby):
            second = assertion(http, "second")
            node.wait_projected()  # the primary's projections hold it; the standby's do not
            assert act_ids(http) == ["first"]  # served by the standby, as it stands
            stale = http.get(f"/v1/claims/{HOT_KEY}")  # the fast lane's lookup too, on the standby
            assert stale.status_code == 200 and stale.headers["ETag"] == '"2"', stale.text
            waited = http.get(f"/v1/claims/{HOT_KEY}/history", params={"min_position": second["position"]})
            assert waited.status_code == 503 and waited.headers["Retry-After"], waited.text
            assert "have not reached position" in waited.json()["detail"]
            wait_until(lambda: node.health()["replicas"][0]["lag_bytes"] > 0, 5, "the lag is seen")
            assert node.health()["replicas"][0]["replay_paused"] is True
        assert act_ids(http, min_position=second["position"]) == ["first", "second"]
        fast = http.get(f"/v1/claims/{HOT_KEY}")  # the fast lane's read goes to the standby too
        assert fast.status_code == 200 and fast.headers["ETag"] == '"3"'


def test_a_standby_too_far_behind_sends_reads_to_the_primary_or_refuses_them(
    pair: Pair, start_server: StartServer,
) -> None:
    primary, standby = pair
    _, token = make_token(primary.url(SCHEMA), "recorder")
    falls_back = serve(pair, start_server, LEDGER_READ_MAX_LAG_SECONDS="1")
    refuses = serve(pair, start_server, LEDGER_READ_MAX_LAG_SECONDS="1", LEDGER_READ_FALLBACK="refuse")
    auth = {"Authorization": f"Bearer {token}"}
    with (httpx.Client(base_url=falls_back.base, timeout=10, headers=auth) as http,
          httpx.Client(base_url=refuses.base, timeout=10) as refusing):
        if http.get(f"/v1/claims/{HOT_KEY}").status_code == 404:
            assert http.post("/v1/claims", json={"statement": HOT_STATEMENT, "key": HOT_KEY}).status_code == 201
        with replay_paused(standby):
            late = assertion(http, "while-paused")
            falls_back.wait_projected()
            wait_until(lambda: falls_back.health()["replicas"][0]["status"] == "behind", 10,
                       "the standby counts as behind")
            health = falls_back.health()
            assert health["status"] == "degraded" and health["replicas"][0]["lag_seconds"] > 1, health
            assert "while-paused" in act_ids(http, min_position=late["position"])  # from the primary
            current = http.get(f"/v1/claims/{HOT_KEY}")  # the fast lane's lookup, on the primary too
            assert current.status_code == 200 and current.headers["ETag"] == f'"{late["version"]}"', current.text
            metrics = http.get("/metrics").text
            assert f'claims_replica_usable{{replica="127.0.0.1:{standby.port}"}} 0.0' in metrics
            assert "claims_replica_lag_bytes" in metrics

            wait_until(lambda: refuses.health()["replicas"][0]["status"] == "behind", 10, "the refuser sees it")
            refused = refusing.get(f"/v1/claims/{HOT_KEY}/history")
            assert refused.status_code == 503 and refused.headers["Retry-After"], refused.text
            assert refused.json()["type"].endswith(":replica-behind"), refused.json()
            assert "no read replica is within 1 s" in refused.json()["detail"]
            refused = refusing.get(f"/v1/claims/{HOT_KEY}")  # by the fast lane's lookup too
            assert refused.status_code == 503 and refused.headers["Retry-After"], refused.text
            assert refused.json()["type"].endswith(":replica-behind"), refused.json()
        wait_until(lambda: refuses.health()["replicas"][0]["status"] == "ok", 10, "the standby catches up")
        assert "while-paused" in act_ids(refusing, min_position=late["position"])
        assert refuses.health()["status"] == "ok"


def test_the_event_loop_reads_where_the_last_measure_says_and_never_waits_for_a_probe(pair: Pair) -> None:
    """`choose(wait=False)`, as the fast lane's lookups ask it: the first time it measures, then
    it answers by the last measure at once, and an old measure is taken again in the background."""
    primary, standby = pair
    store = ReadStore(Database.from_url(primary.url(SCHEMA), Settings(read_max_lag_seconds=0.5)), 2)
    router = ReadRouter(store, [standby.url(SCHEMA)], pool_size=2)
    try:
        assert not router.measured
        assert router.choose(wait=False) is router.standbys[0]
        assert router.measured
        with replay_paused(standby), psycopg.connect(primary.url(SCHEMA).split("?")[0], autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS public.router_probe (n int)")
            conn.execute("INSERT INTO public.router_probe VALUES (1)")
            wait_until(lambda: router.choose(wait=False) is router.primary, 10, "reads go to the primary")
            assert router.lags()[0].lag_bytes and router.lags()[0].paused
        wait_until(lambda: router.choose(wait=False) is router.standbys[0], 10, "reads go back to the standby")
    finally:
        router.close()
        store.close()


OUTAGE_CLAIMS = [f"primary-outage-{i}" for i in range(3)]
OUTAGE_WRITERS = 2
WRITE_TIMEOUT = 3.0
# The slowest answer allowed while the primary is down: the token lookup waits at most the
# read pool's 5 s, then the write its timeout; anything longer is a hang.
ANSWER_BOUND = 5.0 + WRITE_TIMEOUT + 2.0
OUTAGE_SECONDS = 6.0  # past the read pool's 5 s wait, so writes are refused, not only delayed


def test_with_the_primary_stopped_writes_are_refused_reads_go_on_from_the_standby_and_all_recovers(
    pair: Pair, start_server: StartServer,
) -> None:
    primary, standby = pair
    url = primary.url(SCHEMA)
    _, token = make_token(url, "recorder")
    # Reads may be up to 60 s stale: the standby serves them through the outage (default 5 s).
    node = serve(pair, start_server, LEDGER_READ_MAX_LAG_SECONDS="60", LEDGER_WRITE_TIMEOUT=str(WRITE_TIMEOUT))
    with closing(Client(node.base, token)) as setup:
        registered = [setup.send(Write("/v1/claims", registration(i, key))) for i, key in enumerate(OUTAGE_CLAIMS)]
    assert all(a.status == 201 and a.body for a in registered), registered
    first = int(registered[0].body["position"]) if registered[0].body else 0
    plans = [acts_plan(f"outage{i}", 10_000, OUTAGE_CLAIMS, seed=i, hot_share=0.0, idempotency=True)
             for i in range(OUTAGE_WRITERS)]
    clients = OutageClients(node.base, token)
    enough = threading.Event()

    def write(plan: list[Write]) -> None:
        """The plan's writes one after another (a refused one is put aside to retry) until `enough`."""
        with closing(Client(node.base, token)) as client:
            for w in plan:
                if enough.is_set():
                    return
                answer = client.send(w)
                with clients.lock:
                    clients.answers.append(answer)
                time.sleep(0.02)

    threads = [threading.Thread(target=write, args=(plan,)) for plan in plans]
    read_path = f"/v1/claims/{OUTAGE_CLAIMS[0]}"
    probes = [threading.Thread(target=clients.probe, args=(path,)) for path in ("/healthz", read_path)]
    for t in threads + probes:
        t.start()
    try:
        wait_until(lambda: sum(a.ok for a in clients.answers) >= 15, 60, "writes flow before the outage")
        wait_until(lambda: node.health()["replicas"][0]["status"] == "ok", 10, "the standby serves reads")
        with primary.stopped():
            down_at = time.monotonic()
            time.sleep(2.0)
            during = node.health()
            with httpx.Client(base_url=node.base, timeout=10) as http:
                history = http.get(f"/v1/claims/{OUTAGE_CLAIMS[0]}/history")
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
            restart_at = time.monotonic()
        wait_until(lambda: node.health()["status"] == "ok", 60, "the server says it is healthy again")
        recovered_at = time.monotonic()
        settled = len(clients.answers)
        wait_until(lambda: sum(a.ok for a in clients.answers[settled:]) >= 10, 60, "writes flow again")
    finally:
        enough.set()
        for t in threads:
            t.join(240)
        clients.stop.set()
        for t in probes:
            t.join(60)
    assert node.starts == 1 and node.process is not None and node.process.poll() is None

    # While the primary was down: /healthz 200, degraded, naming it; writes unavailable; the
    # standby still ok, reading (a load balancer keeps the node for its reads).
    assert during["status"] == "degraded" and during["writes"] == "unavailable", during
    assert str(during["database"]).startswith("postgres unreachable"), during
    replica = during["replicas"][0]
    assert replica["name"] == f"127.0.0.1:{standby.port}", replica
    assert replica["status"] == "ok" and replica["lag_bytes"] is None, replica
    assert "the primary is unreachable" in str(replica["note"]), replica
    assert history.status_code == 200 and history.json()["events"], history.text
    outage = [p for p in clients.probes if down_at + 1.0 < p[0] and p[0] + p[3] < restart_at]
    reads = [p for p in outage if p[1] == read_path]
    assert reads and all(p[2] == 200 for p in reads), [(p[2], p[4]) for p in reads if p[2] != 200][:3]
    health = [p for p in outage if p[1] == "/healthz"]
    assert health and all(p[2] == 200 for p in health), [(p[2], p[4]) for p in health]
    # Writes: prompt 503 problem documents with Retry-After, never a hang.
    refused = [a for a in clients.answers if not a.ok]
    assert refused, "no write was refused during the outage: the test proved nothing"
    assert all(a.status == 503 for a in refused), [(a.status, a.error or a.body) for a in refused]
    assert all(a.headers.get("content-type") == "application/problem+json" and a.headers["retry-after"]
               for a in refused)
    assert max(a.seconds for a in clients.answers) < ANSWER_BOUND
    assert all(p[3] < ANSWER_BOUND for p in clients.probes), max(p[3] for p in clients.probes)
    assert recovered_at - restart_at < 30

    # After: every refused write, retried with its key, is recorded once.
    with closing(Client(node.base, token)) as retry:
        final = [a if a.ok else retry.send(a.write) for a in clients.answers]
    assert all(a.ok for a in final), [(a.status, a.body) for a in final if not a.ok]
    events = stored_events(url)
    assert_versions_contiguous(events)
    assert_each_act_stored_once(events)
    assert assert_acknowledged_writes_stored(final, events) == len(final)
    assert len([e for e in events if e.position >= first]) == len(OUTAGE_CLAIMS) + len(final)  # nothing more

    # The standby catches up: read-your-writes with min_position, from the standby, again.
    last = max(final, key=lambda a: int(a.body["position"]) if a.body else 0)
    assert last.body is not None
    position, act_id, history_path = int(last.body["position"]), last.body["act_id"], f"/v1/claims/{last.write.claim}/history"
    wait_until(lambda: node.health()["replicas"][0]["note"] is None, 30, "the lag is measured against the primary")
    with httpx.Client(base_url=node.base, timeout=10) as http:
        wait_until(lambda: http.get(history_path, params={"min_position": position}).status_code == 200,
                   30, "the standby's projections reach the last write")
        read = http.get(history_path, params={"min_position": position})
    assert act_id in [e["act_id"] for e in read.json()["events"]]
    assert node.health()["replicas"][0]["status"] == "ok"
