"""Schemathesis against a real server on PostgreSQL: no 5xx, answers as documented, refusals write nothing.

tests/api/test_openapi_fuzz.py runs 20 examples per operation and mode in-process on
SQLite. Here the same operations and checks run over HTTP against `claims serve` on
PostgreSQL (where strings reach a real text type), with EXAMPLES examples each, and
every write refused with a 4xx must leave the log's newest position where it was.

The run is bounded by the number of examples, not by a clock: a clock that stops
Hypothesis (by raising out of the test body) also throws away a failure found late or
while shrinking. Any failing example fails the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from store.settings import Database
from tests.api import story
from tests.api.test_openapi_fuzz import CASES, CHECKS
from tests.conftest import drop_schema, new_database_url
from tests.reliability.server import LedgerServer, make_token

# Per operation and mode: 29 cases x 30 examples, at most 870 requests (~30 s here).
EXAMPLES = 30
# No shrinking: each step of it is a round trip to a real server, and Hypothesis may spend
# minutes on it. A failure is still raised (with the example as generated) and fails the test.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate]


@dataclass
class Fuzzed:
    server: LedgerServer
    schema: Any
    session: requests.Session
    store: psycopg.Connection[Any]
    sent: int = 0

    def head(self) -> int:
        """The log's newest position, read straight from the event store."""
        schema = Database.from_url(self.server.database_url).schema
        row = self.store.execute(f'SELECT COALESCE(MAX(notification_id), 0) FROM "{schema}".ledger_events').fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    url = new_database_url("postgres", workdir)
    server = LedgerServer(url, workdir)
    try:
        server.start()
        _, token = make_token(url, "admin")
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        for path, body in (("/v1/claims", story.registration()),
                           (f"/v1/claims/{story.KEY}/assertions", story.elton_asserts())):
            assert session.post(server.base + path, json=body, timeout=30).status_code == 201
        server.wait_projected()
        with psycopg.connect(**Database.from_url(url).connect_kwargs(), autocommit=True) as store:  # type: ignore[arg-type]
            yield Fuzzed(server, schemathesis.openapi.from_url(f"{server.base}/openapi.json"), session, store)
        session.close()
    finally:
        server.kill()
        drop_schema(url)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {mode.value}" for m, p, mode in CASES])
def test_generated_requests_to_a_real_server_are_answered_as_documented_and_refused_writes_change_nothing(
    fuzzed: Fuzzed, method: str, path: str, mode: schemathesis.GenerationMode
) -> None:
    operation = fuzzed.schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, phases=PHASES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def answered_as_documented(case: schemathesis.Case) -> None:
        head = fuzzed.head() if method == "POST" else None
        response = case.call_and_validate(session=fuzzed.session, checks=CHECKS, timeout=30)
        fuzzed.sent += 1
        if head is not None and 400 <= response.status_code < 500:
            assert fuzzed.head() == head, f"a refused {method} {path} ({response.status_code}) wrote events"

    sent_before = fuzzed.sent
    answered_as_documented()  # a failing example raises here, whenever it was found
    assert fuzzed.sent > sent_before, "no request was generated"
