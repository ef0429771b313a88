"""Every error is an RFC 9457 problem; nothing a client sends produces a 500."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from tests.api import story
from tests.api.conftest import Api

PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance"}


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert set(problem) >= PROBLEM_FIELDS
    assert problem["status"] == status
    assert problem["detail"]
    return dict(problem)


def test_an_unknown_route_is_a_404_problem(sqlite_api: Api) -> None:
    problem = assert_problem(sqlite_api.client.get("/v1/claimz"), 404)
    assert problem["type"] == "about:blank"
    assert problem["instance"] == "/v1/claimz"


def test_a_wrong_method_is_a_405_problem_with_allow(sqlite_api: Api) -> None:
    response = sqlite_api.client.delete(f"/v1/claims/{story.KEY}")
    assert_problem(response, 405)
    assert "GET" in response.headers["Allow"]


def test_a_body_declared_over_64_kib_is_a_413(sqlite_api: Api) -> None:
    body = json.dumps(story.registration(statement="x" * 70_000)).encode()
    response = sqlite_api.client.post("/v1/claims", content=body, headers=sqlite_api.auth(
        **{"Content-Type": "application/json"}))
    problem = assert_problem(response, 413)
    assert "64 KiB" in str(problem["detail"])


def test_a_body_streamed_past_64_kib_without_length_is_a_413(sqlite_api: Api) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"statement": "'
        for _ in range(20):
            yield b"y" * 4096
        yield b'"}'

    response = sqlite_api.client.post("/v1/claims", content=chunks(), headers=sqlite_api.auth(
        **{"Content-Type": "application/json"}))
    assert_problem(response, 413)
    assert sqlite_api.services.runtime.ledger.max_position() == 0


def test_a_body_just_under_the_limit_is_read(sqlite_api: Api) -> None:
    body = story.elton_asserts(quote="q" * 10_000, note="n" * 10_000)
    sqlite_api.register()
    response = sqlite_api.post(f"/v1/claims/{story.KEY}/assertions", body)
    assert response.status_code == 201


def test_a_body_that_is_not_json_is_a_415(sqlite_api: Api) -> None:
    response = sqlite_api.client.post("/v1/claims", content=b"statement=hello",
                                      headers=sqlite_api.auth(**{"Content-Type": "application/x-www-form-urlencoded"}))
    assert_problem(response, 415)


def test_invalid_utf8_is_a_422_problem(sqlite_api: Api) -> None:
    response = sqlite_api.client.post("/v1/claims", content=b'{"statement": "caf\xe9"}',
                                      headers=sqlite_api.auth(**{"Content-Type": "application/json"}))
    problem = assert_problem(response, 422)
    assert "UTF-8" in str(problem["detail"])


@pytest.mark.parametrize("body", [b'{"statement": ', b"[1, 2", b"nul", b"\"just a string\"", b"[]", b"null",
                                  b"[" * 5000 + b"]" * 5000, b'{"statement": NaN}'])
def test_malformed_or_non_object_json_is_a_4xx_problem_never_a_500(sqlite_api: Api, body: bytes) -> None:
    response = sqlite_api.client.post("/v1/claims", content=body,
                                      headers=sqlite_api.auth(**{"Content-Type": "application/json"}))
    assert response.status_code in (400, 422), response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_unknown_fields_are_a_422_naming_them(sqlite_api: Api) -> None:
    response = sqlite_api.post("/v1/claims", story.registration(verdict="false"))
    problem = assert_problem(response, 422)
    assert problem["errors"] == [{"loc": ["body", "verdict"], "msg": "Extra inputs are not permitted",
                                  "type": "extra_forbidden"}]


def test_a_request_id_is_echoed_or_made(sqlite_api: Api) -> None:
    given = sqlite_api.client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert given.headers["X-Request-Id"] == "abc-123"
    made = sqlite_api.client.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"})
    assert len(made.headers["X-Request-Id"]) == 32
    problem = sqlite_api.client.get("/v1/claims/nope").json()
    assert problem["request_id"]


def test_an_unexpected_fault_is_logged_and_answered_as_a_500_problem(
    sqlite_api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("a bug")

    sqlite_api.app.add_api_route("/test-only/broken", broken)
    with caplog.at_level(logging.ERROR, logger="claims.api"):
        response = sqlite_api.client.get("/test-only/broken")
    problem = assert_problem(response, 500)
    assert "a bug" not in str(problem["detail"])
    assert problem["request_id"] == response.headers["X-Request-Id"]
    assert any(str(problem["request_id"]) in r.getMessage() for r in caplog.records)


def test_an_unexpected_fault_in_the_fast_lane_is_logged_and_answered_as_a_500_problem(
    sqlite_api: Api, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    sqlite_api.register()

    async def broken(*_: object) -> None:
        raise RuntimeError("a bug in the write path")

    monkeypatch.setattr(sqlite_api.services, "write", broken)
    with caplog.at_level(logging.ERROR, logger="claims.api"):
        response = sqlite_api.post(f"/v1/claims/{story.KEY}/assertions", story.elton_asserts())
    problem = assert_problem(response, 500)
    assert "a bug" not in str(problem["detail"])
    assert problem["request_id"] == response.headers["X-Request-Id"]
    assert any(str(problem["request_id"]) in r.getMessage() for r in caplog.records)


def test_tokens_never_reach_the_log(sqlite_api: Api, caplog: pytest.LogCaptureFixture) -> None:
    token = sqlite_api.token("recorder")
    with caplog.at_level(logging.DEBUG):
        sqlite_api.post("/v1/claims", story.registration())
        sqlite_api.client.get("/v1/claims", headers={"Authorization": "Bearer clm_wrong"})
    assert all(token not in r.getMessage() and "clm_wrong" not in r.getMessage() for r in caplog.records)
