"""Schemathesis over the OpenAPI document, in-process: no 5xx, every answer as documented.

Valid and invalid requests are generated for every operation (as an admin, so writes
reach the ledger); a few hundred examples in all. Invalid requests are not required to
be refused — unknown query parameters are ignored, as usual — only to be answered with a
documented status, content type and body.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.routes.deps import Services
from domain.commands import RecordAct, RegisterClaim
from store.tokens import Role
from tests.api import story
from tests.conftest import new_database_url

EXAMPLES = 20
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
PATHS = create_app(url="sqlite:///not-opened.db").openapi()["paths"]
# (method, path, mode): invalid requests only where a request has something to get wrong.
# Server-Sent Event streams never end, so they are left out: tests/api/test_streams.py sends
# them every kind of bad input.
CASES = [
    (method.upper(), path, mode)
    for path, item in PATHS.items()
    for method, operation in item.items()
    for mode in (POSITIVE, NEGATIVE)
    if mode is POSITIVE or operation.get("parameters") or operation.get("requestBody")
    if "text/event-stream" not in operation.get("responses", {}).get("200", {}).get("content", {})
]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, fast_lane: bool) -> Iterator[tuple[Any, str]]:
    app = create_app(url=new_database_url("sqlite", tmp_path_factory.mktemp("fuzz")), fast_lane=fast_lane)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the app's lifespan
    try:
        services = app.state.services
        assert isinstance(services, Services)
        _, token = services.tokens.create(Role.ADMIN, label="schemathesis")
        services.writer.execute(RegisterClaim.build(story.registration()), timeout=10)
        services.writer.execute(RecordAct.build("assert", story.KEY, story.elton_asserts()), timeout=10)
        yield schema, token
    finally:
        asgi.shutdown_lifespans()


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {mode.value}" for m, p, mode in CASES])
def test_every_generated_request_is_answered_as_documented_without_a_5xx(
    fuzzed: tuple[Any, str], method: str, path: str, mode: schemathesis.GenerationMode
) -> None:
    schema, token = fuzzed
    operation = schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def answered_as_documented(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)

    answered_as_documented()
