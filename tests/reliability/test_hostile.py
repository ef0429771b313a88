"""Hostile input over real HTTP: every request gets a 4xx problem document and the ledger is unchanged.

One server per backend (`claims serve` in its own process) holds the seed story; each
request below is sent as a client would send it — raw bytes where an HTTP library would
tidy it up — and the log's newest position and the claim's view are the same afterwards.
tests/api/test_errors.py covers the common cases in-process; these go through uvicorn
and both databases, where NUL bytes and out-of-range dates used to reach PostgreSQL or
the clock arithmetic and come back as 500s.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.api import story
from tests.conftest import drop_schema, new_database_url
from tests.reliability.server import LedgerServer, make_token

K = story.KEY
JSON = {"Content-Type": "application/json"}


@dataclass
class Target:
    server: LedgerServer
    http: httpx.Client
    token: str
    view: dict[str, Any] = field(default_factory=dict)

    def head(self) -> int:
        return self.server.head()

    def claim_view(self) -> dict[str, Any]:
        response = self.http.get(f"/v1/claims/{K}")
        assert response.status_code == 200, response.text
        body = response.json()
        assert isinstance(body, dict)
        return body


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    workdir = tmp_path_factory.mktemp("hostile")
    url = new_database_url(str(request.param), workdir)
    server = LedgerServer(url, workdir)
    try:
        server.start()
        _, token = make_token(url, "admin")
        http = httpx.Client(base_url=server.base, timeout=30, headers={"Authorization": f"Bearer {token}"})
        for path, body in (("/v1/claims", story.registration()), (f"/v1/claims/{K}/assertions", story.elton_asserts()),
                           (f"/v1/claims/{K}/denials", story.peskov_denies())):
            assert http.post(path, json=body).status_code == 201
        server.wait_projected()
        found = Target(server, http, token)
        found.view = found.claim_view()
        yield found
        http.close()
    finally:
        server.kill()
        drop_schema(url)


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    return b'{"a":' * depth + leaf + b"}" * depth


def act(**fields: Any) -> bytes:
    return json.dumps({"party": story.ELTON, **fields}).encode()


# (name, method, path, body bytes or None, extra headers)
Hostile = tuple[str, str, str, bytes | None, dict[str, str]]
BODIES: list[Hostile] = [
    ("body declared over the size limit", "POST", "/v1/claims", b'{"statement": "' + b"x" * 70_000 + b'"}', JSON),
    ("invalid UTF-8", "POST", "/v1/claims", b'{"statement": "Kremlin caf\xe9 call"}', JSON),
    ("UTF-16 JSON", "POST", "/v1/claims", json.dumps(story.registration()).encode("utf-16"), JSON),
    ("arrays nested 30000 deep", "POST", "/v1/claims", b'{"statement":' + b"[" * 30_000 + b"]" * 30_000 + b"}", JSON),
    ("objects nested 10000 deep in a party", "POST", f"/v1/claims/{K}/assertions",
     b'{"party":' + nested(10_000) + b"}", JSON),
    ("a number of 5000 digits", "POST", "/v1/claims", b'{"statement": ' + b"9" * 5000 + b"}", JSON),
    ("a number beyond float range", "POST", "/v1/claims", b'{"statement": 1e999}', JSON),
    ("NaN", "POST", "/v1/claims", b'{"statement": NaN}', JSON),
    ("a lone surrogate escape", "POST", "/v1/claims", b'{"statement": "Putin \\ud800 phoned"}', JSON),
    ("a member of party named twice", "POST", f"/v1/claims/{K}/assertions",
     b'{"party": {"id": "elton-john", "name": "Elton John", "id": "dmitry-peskov"}}', JSON),
    ("a quote named twice", "POST", f"/v1/claims/{K}/assertions",
     act(quote="one")[:-1] + b', "quote": "two"}', JSON),
    ("NUL in a statement", "POST", "/v1/claims", b'{"statement": "Putin \\u0000 phoned"}', JSON),
    ("NUL in a party name", "POST", f"/v1/claims/{K}/assertions",
     b'{"party": {"id": "elton-john", "name": "Elton\\u0000John"}}', JSON),
    ("NUL in a source url", "POST", f"/v1/claims/{K}/denials", act(source={"url": "https://tass.com/\x00"}), JSON),
    ("a statement of 60000 characters", "POST", "/v1/claims", json.dumps({"statement": "x" * 60_000}).encode(), JSON),
    ("a quote of 60000 characters", "POST", f"/v1/claims/{K}/assertions", act(quote="q" * 60_000), JSON),
    ("10000 subjects", "POST", "/v1/claims", json.dumps({"statement": "s", "subjects": ["a"] * 10_000}).encode(), JSON),
    ("a statement that is a number", "POST", "/v1/claims", b'{"statement": 42}', JSON),
    ("subjects that are a string", "POST", "/v1/claims", b'{"statement": "s", "subjects": "Elton John"}', JSON),
    ("a key that is a number", "POST", "/v1/claims", b'{"statement": "s", "key": 123}', JSON),
    ("a party that is a list", "POST", f"/v1/claims/{K}/assertions", b'{"party": ["elton-john"]}', JSON),
    ("said_at that is a number", "POST", f"/v1/claims/{K}/assertions", act(said_at=20150914), JSON),
    ("an act_id that is an object", "POST", f"/v1/claims/{K}/assertions", act(act_id={"id": 1}), JSON),
    ("reported_via that is a string", "POST", f"/v1/claims/{K}/assertions", act(reported_via="TASS"), JSON),
    ("a retraction without retracts", "POST", f"/v1/claims/{K}/retractions", act(), JSON),
    ("a void with an empty reason", "POST", f"/v1/claims/{K}/voids", b'{"voids": "peskov-tass", "reason": ""}', JSON),
    ("said_at past year 9999 in UTC", "POST", f"/v1/claims/{K}/assertions",
     act(said_at="9999-12-31T23:59:59-01:00"), JSON),
    ("said_at before year 1 in UTC", "POST", f"/v1/claims/{K}/denials", act(said_at="0001-01-01T00:00:00+01:00"), JSON),
    ("said_at on 30 February", "POST", f"/v1/claims/{K}/assertions", act(said_at="2015-02-30"), JSON),
    ("a key that walks up directories", "POST", "/v1/claims",
     json.dumps(story.registration(key="../../etc/passwd")).encode(), JSON),
    ("an act_id that walks up directories", "POST", f"/v1/claims/{K}/assertions", act(act_id="../../x"), JSON),
    ("an unknown field", "POST", "/v1/claims", json.dumps(story.registration(verdict="false")).encode(), JSON),
    ("a form instead of JSON", "POST", "/v1/claims", b"statement=hello", {"Content-Type": "application/x-www-form-urlencoded"}),
    ("a JSON array", "POST", "/v1/claims", b"[1, 2]", JSON),
    ("JSON null", "POST", "/v1/claims", b"null", JSON),
    ("no body", "POST", f"/v1/claims/{K}/assertions", b"", JSON),
    ("truncated JSON", "POST", "/v1/claims", b'{"statement": "Putin', JSON),
    ("an If-Match that is not an entity tag", "POST", f"/v1/claims/{K}/assertions", act(), {**JSON, "If-Match": "3; DROP"}),
    ("an If-Match beyond any version", "POST", f"/v1/claims/{K}/assertions", act(), {**JSON, "If-Match": '"99999999999999999999"'}),
    ("an Idempotency-Key with spaces", "POST", f"/v1/claims/{K}/assertions", act(), {**JSON, "Idempotency-Key": "a b"}),
    ("an Idempotency-Key of 300 characters", "POST", f"/v1/claims/{K}/assertions", act(), {**JSON, "Idempotency-Key": "k" * 300}),
    ("a bearer token of 10000 characters", "POST", "/v1/claims", json.dumps(story.registration()).encode(),
     {**JSON, "Authorization": "Bearer " + "t" * 10_000}),
]
IDS = ["' OR '1'='1", "%00", "x%3B%20DROP%20TABLE%20rm_claims%3B%20--", "..%2F..%2Fetc%2Fpasswd", "%2e%2e",
       "a" * 201, "%ff%fe", "%c0%ae%c0%ae"]
QUERIES: list[Hostile] = [
    *[(f"claim id {ref!r:.30}", "GET", f"/v1/claims/{ref}", None, {}) for ref in IDS],
    *[(f"history of claim id {ref!r:.30}", "GET", f"/v1/claims/{ref}/history", None, {}) for ref in IDS],
    *[(f"assertion on claim id {ref!r:.30}", "POST", f"/v1/claims/{ref}/assertions", act(), JSON) for ref in IDS],
    *[(f"party id {ref!r:.30}", "GET", f"/v1/parties/{ref}", None, {}) for ref in IDS],
    ("NUL as a subject", "GET", "/v1/claims?subject=%00", None, {}),
    ("NUL as a party", "GET", "/v1/claims?party=%00", None, {}),
    ("NUL as q", "GET", "/v1/claims?q=%00", None, {}),
    ("SQL as a cursor", "GET", "/v1/claims?cursor=%27%20OR%201%3D1", None, {}),
    ("a limit that is not a number", "GET", "/v1/claims?limit=abc", None, {}),
    ("a limit of zero", "GET", "/v1/claims?limit=0", None, {}),
    ("a limit beyond 64 bits", "GET", "/v1/claims?limit=99999999999999999999999", None, {}),
    ("an unknown status", "GET", "/v1/claims?status=true%27--", None, {}),
    ("a min_position beyond 64 bits", "GET", f"/v1/claims/{K}?min_position=99999999999999999999", None, {}),
    ("a min_position past the log", "GET", f"/v1/claims/{K}?min_position=4000000000", None, {}),
    ("version zero", "GET", f"/v1/claims/{K}?version=0", None, {}),
    ("a version that is SQL", "GET", f"/v1/claims/{K}/history?version=1%20OR%201%3D1", None, {}),
    ("recorded_as_of with NUL", "GET", f"/v1/claims/{K}?recorded_as_of=%00", None, {}),
    ("recorded_as_of past year 9999 in UTC", "GET", f"/v1/claims/{K}?recorded_as_of=9999-12-31T23:59:59-23:59", None, {}),
    ("said_as_of before year 1 in UTC", "GET", f"/v1/claims/{K}/history?said_as_of=0001-01-01T00:00:00%2B23:59", None, {}),
    ("said_as_of on month 13", "GET", f"/v1/claims/{K}?said_as_of=2015-13-01", None, {}),
    ("a negative feed position", "GET", "/v1/events?after=-1", None, {}),
    ("a feed limit beyond the maximum", "GET", "/v1/events?limit=1000000", None, {}),
    ("an inclusion proof for position zero", "GET", "/v1/audit/proofs/inclusion?position=0", None, {}),
    ("a consistency proof for a tree larger than the log", "GET",
     "/v1/audit/proofs/consistency?from_size=1&to_size=4611686018427387904", None, {}),
]
ROUTES: list[Hostile] = [
    *[(f"unknown route {p}", "GET", p, None, {}) for p in (
        "/v2/claims", "/v1/claimz", f"/v1/claims/{K}/unknown", f"/v1/claims/{K}/history/extra", "/v1/events/1",
        "/admin", "/.env", "/v1/audit/private-key", "/static/..%2F..%2Fetc%2Fpasswd")],
    *[(f"{m} on a claim", m, f"/v1/claims/{K}", act() if m != "DELETE" else None, JSON) for m in ("PUT", "PATCH", "DELETE")],
    ("DELETE on the claims", "DELETE", "/v1/claims", None, {}),
    ("GET on assertions", "GET", f"/v1/claims/{K}/assertions", None, {}),
    ("DELETE on an event", "DELETE", "/v1/events", None, {}),
    ("POST on the feed", "POST", "/v1/events", b"{}", JSON),
    ("POST on health", "POST", "/healthz", b"{}", JSON),
    ("OPTIONS on the claims", "OPTIONS", "/v1/claims", None, {}),
    ("TRACE on a claim", "TRACE", f"/v1/claims/{K}", None, {}),
]
RAW: list[tuple[str, bytes]] = [
    ("a path that walks up from a claim", b"GET /v1/claims/../../etc/passwd HTTP/1.1\r\n"),
    ("a path that walks up from the docs", b"GET /docs/../../../etc/passwd HTTP/1.1\r\n"),
    ("a path that walks up from a party", b"GET /v1/parties/../../../../etc/shadow HTTP/1.1\r\n"),
    ("a Content-Length far beyond any body", b"POST /v1/claims HTTP/1.1\r\nContent-Type: application/json\r\n"
     b"Content-Length: 99999999999999\r\n"),
]
# Refused by uvicorn's HTTP parser before the app sees them: a 400 in plain text.
UNPARSABLE: list[tuple[str, bytes]] = [
    ("a request line that is not UTF-8", b"POST /v1/claims/\xff\xfe/assertions HTTP/1.1\r\n"
     b"Content-Type: application/json\r\nContent-Length: 2\r\n"),
    ("a negative Content-Length", b"POST /v1/claims HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: -5\r\n"),
]


def assert_problem(response: httpx.Response, name: str) -> None:
    assert 400 <= response.status_code < 500, f"{name}: {response.status_code} {response.text[:300]}"
    assert response.headers["content-type"] == "application/problem+json", f"{name}: {response.headers}"
    problem = response.json()
    assert problem["status"] == response.status_code and problem["detail"] and problem["title"], (name, problem)


def assert_unchanged(target: Target, head: int) -> None:
    assert target.head() == head
    assert target.claim_view() == target.view


@pytest.mark.parametrize(("name", "method", "path", "body", "headers"), BODIES + QUERIES + ROUTES,
                         ids=[h[0] for h in BODIES + QUERIES + ROUTES])
def test_a_hostile_request_gets_a_4xx_problem_document_and_changes_nothing(
    target: Target, name: str, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> None:
    head = target.head()
    response = target.http.request(method, path, content=body, headers=headers)
    assert_problem(response, name)
    assert_unchanged(target, head)


def test_a_body_streamed_past_the_size_limit_is_refused_before_it_is_read_whole(target: Target) -> None:
    head = target.head()

    def chunks() -> Iterator[bytes]:
        yield b'{"statement": "'
        for _ in range(64):
            yield b"y" * 4096
        yield b'"}'

    response = target.http.post("/v1/claims", content=chunks(), headers=JSON)
    assert response.status_code == 413
    assert_problem(response, "streamed body")
    assert_unchanged(target, head)


def raw_request(target: Target, head_lines: bytes, body: bytes = b"{}") -> bytes:
    request = head_lines + f"Host: 127.0.0.1\r\nAuthorization: Bearer {target.token}\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", target.server.port), timeout=30) as sock:
        sock.sendall(request + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(("name", "head_lines"), RAW, ids=[r[0] for r in RAW])
def test_a_raw_request_no_client_library_would_send_gets_a_4xx_problem_document(
    target: Target, name: str, head_lines: bytes
) -> None:
    head = target.head()
    answer = raw_request(target, head_lines)
    status_line, _, rest = answer.partition(b"\r\n")
    status = int(status_line.split()[1])
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert 400 <= status < 500, (name, answer[:300])
    assert b"content-type: application/problem+json" in headers.lower(), (name, answer[:300])
    assert json.loads(body)["status"] == status
    assert b"root:" not in body
    assert_unchanged(target, head)


@pytest.mark.parametrize(("name", "head_lines"), UNPARSABLE, ids=[r[0] for r in UNPARSABLE])
def test_a_request_http_cannot_parse_is_refused_by_the_http_server_and_changes_nothing(
    target: Target, name: str, head_lines: bytes
) -> None:
    """uvicorn's parser refuses it (400, plain text) before the app sees it: no problem
    document is possible there, but it is a 4xx and nothing is written."""
    head = target.head()
    answer = raw_request(target, head_lines)
    assert answer.startswith(b"HTTP/1.1 400 "), (name, answer[:200])
    assert_unchanged(target, head)


QS = ["' OR 1=1 --", "x'; DROP TABLE rm_claims; --", '"unterminated', "NEAR(putin elton)", "putin*", "statement:putin",
      "putin AND OR NOT", "^putin", "-putin", "putin:*", "(", "\\", "%", "_", "putin | elton & !x", "<->", "\ud7ff"]


@pytest.mark.parametrize("q", QS)
def test_sql_and_full_text_query_syntax_in_q_is_searched_as_text_or_refused(target: Target, q: str) -> None:
    head = target.head()
    response = target.http.get("/v1/claims", params={"q": q})
    if response.status_code == 200:
        page = response.json()
        assert set(page) == {"items", "next_cursor"}
        assert all(item["key"] == K for item in page["items"])  # only a statement with the words matches
    else:
        assert_problem(response, f"q={q!r}")
    assert_unchanged(target, head)
    found = target.http.get("/v1/claims", params={"q": "Putin telephoned"}).json()["items"]
    assert [item["key"] for item in found] == [K]  # the search tables are still whole
