"""Reads from a hot standby (LEDGER_READ_DATABASE_URL): a private primary and its streaming
standby (tests/reliability/private_postgres.py `private_pair`), made once for the module, and
real `claims serve` processes writing to the primary and reading from the standby.

Replay is paused on the standby (`pg_wal_replay_pause()`) to make it fall behind: a read then
shows the standby's older state, `min_position` waits on the standby's own projections, and
beyond LEDGER_READ_MAX_LAG_SECONDS reads go to the primary, or are refused (503, Retry-After)
with LEDGER_READ_FALLBACK=refuse. /healthz and /metrics say how far behind it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psycopg
import pytest

from tests.reliability.conftest import StartServer
from tests.reliability.private_postgres import PrivateCluster, private_pair
from tests.reliability.server import LedgerServer, make_token, wait_until
from tests.reliability.workload import HOT_KEY, HOT_STATEMENT, PARTIES

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
            metrics = http.get("/metrics").text
            assert f'claims_replica_usable{{replica="127.0.0.1:{standby.port}"}} 0.0' in metrics
            assert "claims_replica_lag_bytes" in metrics

            wait_until(lambda: refuses.health()["replicas"][0]["status"] == "behind", 10, "the refuser sees it")
            refused = refusing.get(f"/v1/claims/{HOT_KEY}/history")
            assert refused.status_code == 503 and refused.headers["Retry-After"], refused.text
            assert refused.json()["type"].endswith(":replica-behind"), refused.json()
            assert "no read replica is within 1 s" in refused.json()["detail"]
        wait_until(lambda: refuses.health()["replicas"][0]["status"] == "ok", 10, "the standby catches up")
        assert "while-paused" in act_ids(refusing, min_position=late["position"])
        assert refuses.health()["status"] == "ok"
