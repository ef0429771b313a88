"""PostgreSQL stopped under load, then started again, under a running `claims serve`.

tests/api/test_outage.py cuts a proxy in front of the database for an in-process app;
here a real PostgreSQL server is stopped (`pg_ctl stop -m fast`) while clients write and
read over HTTP, for a few seconds. It is a private cluster (tests/reliability/private_postgres.py):
the shared test server keeps serving every other test, which may run at the same time. While it is down every answer is a prompt 503 problem
document and /healthz says why; once it is back the same server process — API and
projection engine — recovers by itself, and every write a client retries with its
Idempotency-Key is recorded once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.reliability.checks import (
    assert_acknowledged_writes_stored,
    assert_each_act_stored_once,
    assert_projections_equal_a_fresh_rebuild,
    assert_versions_contiguous,
    stored_events,
)
from tests.reliability.conftest import StartServer
from tests.reliability.private_postgres import PrivateCluster, private_cluster
from tests.reliability.server import make_token, wait_until
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

CLAIMS = 4
WRITERS = 3
WRITE_TIMEOUT = 3.0  # LEDGER_WRITE_TIMEOUT for the server under test
# The slowest answer allowed while the database is down: the token lookup waits at most the
# read pool's 5 s, then the write its timeout; anything longer is a hang.
ANSWER_BOUND = 5.0 + WRITE_TIMEOUT + 2.0
# Past the read pool's 5 s wait for a connection, so reads and writes are refused, not only delayed.
OUTAGE_SECONDS = 4.5


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    with private_cluster() as pg:
        yield pg


@pytest.fixture
def postgres_url(cluster: PrivateCluster) -> str:
    return cluster.url("outage")


class OutageClients:
    """Writers that keep going through the outage (a refused write is put aside to retry) and a prober."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answers: list[Answer] = []
        self.probes: list[tuple[float, str, int | None, float, dict[str, object] | str]] = []

    def write(self, plan: list[Write]) -> None:
        client = Client(self.base, self.token)
        try:
            for write in plan:
                answer = client.send(write)
                with self.lock:
                    self.answers.append(answer)
                time.sleep(0.02)
        finally:
            client.close()

    def probe(self, path: str) -> None:
        """GET `path` again and again, noting how long each took, until told to stop."""
        with httpx.Client(base_url=self.base, timeout=30) as http:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    response = http.get(path)
                    status, body = response.status_code, response.json()
                except (httpx.TransportError, ValueError) as e:
                    status, body = None, repr(e)
                with self.lock:
                    self.probes.append((started, path, status, time.monotonic() - started, body))
                time.sleep(0.1)


@pytest.mark.postgres
@pytest.mark.slow
def test_while_postgresql_is_stopped_answers_are_prompt_503_problems_and_the_server_recovers_losing_nothing(
    cluster: PrivateCluster, postgres_url: str, start_server: StartServer
) -> None:
    server = start_server(postgres_url, extra_env={"LEDGER_WRITE_TIMEOUT": str(WRITE_TIMEOUT)})
    _, token = make_token(postgres_url, "recorder")
    setup = Client(server.base, token)
    for write in [Write("/v1/claims", {"statement": HOT_STATEMENT, "key": HOT_KEY})] + [
        Write("/v1/claims", registration(i)) for i in range(CLAIMS)
    ]:
        assert setup.send(write).status == 201
    plans = [acts_plan(f"w{i}", 60, [claim_key(i) for i in range(CLAIMS)], seed=i, idempotency=True)
             for i in range(WRITERS)]
    clients = OutageClients(server.base, token)
    threads = [threading.Thread(target=clients.write, args=(plan,)) for plan in plans]
    probes = [threading.Thread(target=clients.probe, args=(path,)) for path in ("/healthz", f"/v1/claims/{HOT_KEY}")]
    for t in threads + probes:
        t.start()
    try:
        wait_until(lambda: sum(a.ok for a in clients.answers) >= 20, 60, "writes flow before the outage")
        with cluster.stopped():
            down_at = time.monotonic()
            time.sleep(OUTAGE_SECONDS)
            restart_at = time.monotonic()
        wait_until(lambda: server.health()["status"] == "ok", 60, "the server says it is healthy again")
        recovered_at = time.monotonic()
    finally:
        for t in threads:
            t.join(180)
        clients.stop.set()
        for t in probes:
            t.join(60)
    assert server.starts == 1 and server.process is not None and server.process.poll() is None

    # While the database was down: 503 problem documents, promptly, and /healthz saying why.
    # (A request that waited out the outage may have succeeded late, within the bound.)
    refused = [a for a in clients.answers if not a.ok]
    assert all(a.status == 503 for a in refused), [(a.status, a.error or a.body) for a in refused]
    assert all(a.headers.get("content-type") == "application/problem+json" and a.headers["retry-after"]
               for a in refused)
    assert max(a.seconds for a in clients.answers) < ANSWER_BOUND
    for _, path, status, seconds, body in clients.probes:
        assert status in (200, 503), (path, status, body)
        assert seconds < ANSWER_BOUND, (path, seconds)
        if status == 503:
            assert isinstance(body, dict) and body["status" if path != "/healthz" else "database"], body
    outage = [p for p in clients.probes if down_at + 0.5 < p[0] and p[0] + p[3] < restart_at]
    health = [p for p in outage if p[1] == "/healthz"]
    assert health and all(p[2] == 503 for p in health), health
    assert all(isinstance(p[4], dict) and str(p[4]["database"]).startswith("postgres unreachable") for p in health)
    failed_reads = [p for p in clients.probes if p[1] != "/healthz" and p[2] == 503]
    assert refused or failed_reads, "no read or write was refused during the outage: the test proved nothing"
    assert recovered_at - restart_at < 30

    # After: every refused write, retried with its key, is recorded once; projections catch up.
    retry = Client(server.base, token)
    final = [a if a.ok else retry.send(a.write) for a in clients.answers]
    retry.close()
    setup.close()
    assert all(a.ok for a in final), [(a.status, a.body) for a in final if not a.ok]
    events = stored_events(postgres_url)
    assert_versions_contiguous(events)
    assert_each_act_stored_once(events)
    assert assert_acknowledged_writes_stored(final, events) == WRITERS * 60
    assert len(events) == CLAIMS + 1 + WRITERS * 60
    server.wait_projected()
    assert_projections_equal_a_fresh_rebuild(postgres_url, events[-1].position)
