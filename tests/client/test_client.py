"""`LedgerClient` against a real `claims serve`: every endpoint answers what raw HTTP answers,
every problem document is its typed exception, and a retried write is recorded once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest

from client import (
    AsyncLedgerClient,
    Backoff,
    Conflict,
    Forbidden,
    InvalidRequest,
    LedgerClient,
    LedgerError,
    NotFound,
    PreconditionFailed,
    Unauthorized,
    Unavailable,
    Unreachable,
)
from tests.api import story
from tests.client.conftest import Served

Json = dict[str, Any]
FAST = Backoff(initial=0.01, cap=0.05)


@pytest.fixture(scope="module")
def ledger(served: Served) -> Iterator[LedgerClient]:
    with served.client("auditor") as client:
        yield client


# (what, the client's call, the raw path, its query)
READS: list[tuple[str, Callable[[LedgerClient], Any], str, Json]] = [
    ("claim", lambda c: c.get_claim(story.KEY), f"/v1/claims/{story.KEY}", {}),
    ("claim at version", lambda c: c.get_claim(story.KEY, version=2), f"/v1/claims/{story.KEY}", {"version": 2}),
    ("claim said as of a date", lambda c: c.get_claim(story.KEY, said_as_of=date(2015, 9, 14)),
     f"/v1/claims/{story.KEY}", {"said_as_of": "2015-09-14"}),
    ("claim recorded as of a datetime", lambda c: c.get_claim(story.KEY, recorded_as_of=datetime(2100, 1, 1, tzinfo=UTC)),
     f"/v1/claims/{story.KEY}", {"recorded_as_of": "2100-01-01T00:00:00+00:00"}),
    ("history", lambda c: c.history(story.KEY), f"/v1/claims/{story.KEY}/history", {}),
    ("history at version", lambda c: c.history(story.KEY, version=1), f"/v1/claims/{story.KEY}/history", {"version": 1}),
    ("list", lambda c: c.list_claims(), "/v1/claims", {}),
    ("list filtered", lambda c: c.list_claims(status="disputed", party="dmitry-peskov", subject="elton-john", q="telephoned"),
     "/v1/claims", {"status": "disputed", "party": "dmitry-peskov", "subject": "elton-john", "q": "telephoned"}),
    ("party", lambda c: c.party("vladimir-putin"), "/v1/parties/vladimir-putin", {}),
    ("events", lambda c: c.events(), "/v1/events", {}),
    ("events page", lambda c: c.events(after=1, limit=1), "/v1/events", {"after": 1, "limit": 1}),
    ("checkpoint", lambda c: c.checkpoint(), "/v1/audit/checkpoint", {}),
    ("inclusion proof", lambda c: c.inclusion_proof(2, tree_size=3), "/v1/audit/proofs/inclusion",
     {"position": 2, "tree_size": 3}),
    ("consistency proof", lambda c: c.consistency_proof(1, 3), "/v1/audit/proofs/consistency",
     {"from_size": 1, "to_size": 3}),
    ("public key", lambda c: c.public_key(), "/v1/audit/public-key", {}),
    ("any GET", lambda c: c.get("/v1/claims", {"limit": 1}), "/v1/claims", {"limit": 1}),
]


@pytest.mark.parametrize(("what", "call", "path", "params"), READS, ids=[r[0] for r in READS])
def test_each_read_answers_what_raw_http_answers(
    served: Served, ledger: LedgerClient, what: str, call: Callable[[LedgerClient], Any], path: str, params: Json,
) -> None:
    assert comparable(what, call(ledger)) == comparable(what, served.raw_json(path, **params))


def comparable(what: str, answer: Json) -> Json:
    """A checkpoint is signed afresh at each request: its tree is what must be equal."""
    return {k: answer[k] for k in ("tree_size", "root_hash")} if what == "checkpoint" else answer


def test_the_async_client_answers_what_raw_http_and_the_sync_client_answer(served: Served, ledger: LedgerClient) -> None:
    async def run() -> tuple[list[Json], list[Json], list[Json], list[Json], NotFound]:
        async with AsyncLedgerClient(served.base, served.tokens["auditor"]) as client:
            answers = [comparable(what, await call(client)) for what, call, _, _ in READS]  # type: ignore[arg-type]
            events = [item async for item in client.iter_events()]
            pages = [page async for page in client.event_pages(limit=2)]
            claims = [item async for item in client.iter_claims(page_size=1)]
            with pytest.raises(NotFound) as raised:
                await client.get_claim("no-such-claim")
            return answers, events, pages, claims, raised.value

    answers, events, pages, claims, not_found = asyncio.run(run())
    assert answers == [comparable(what, served.raw_json(path, **params)) for what, _, path, params in READS]
    assert events == list(ledger.iter_events()) == [i for page in pages for i in page["items"]]
    assert claims == list(ledger.iter_claims())
    assert not_found.status == 404 and not_found.code == "unknown-claim"


def test_health_answers_the_servers_document(served: Served, ledger: LedgerClient) -> None:
    health = ledger.health()
    assert health == served.raw_json("/healthz", None)
    assert health["status"] == "ok" and health["backend"] == "sqlite"


def test_iterators_walk_every_page(served: Served, ledger: LedgerClient) -> None:
    feed = served.raw_json("/v1/events", limit=1000)["items"]
    assert len(feed) >= 3
    assert list(ledger.iter_events()) == feed
    assert list(ledger.iter_events(after=1, limit=1)) == feed[1:2]
    pages = list(ledger.event_pages(limit=2))
    assert [item for page in pages for item in page["items"]] == feed
    assert all(len(page["items"]) <= 2 for page in pages)
    claims = served.raw_json("/v1/claims", limit=500)["items"]
    assert list(ledger.iter_claims(page_size=1)) == claims


def test_a_naive_datetime_is_refused_before_anything_is_sent(ledger: LedgerClient) -> None:
    with pytest.raises(ValueError, match="has no time zone"):
        ledger.get_claim(story.KEY, said_as_of=datetime(2015, 9, 14, 12))


# -- Errors --------------------------------------------------------------------------------------


def check_problem(error: LedgerError, served: Served, method: str, path: str, role: str | None, **kwargs: Any) -> None:
    """The exception carries the whole document raw HTTP gets (its request id aside)."""
    raw = served.raw(method, path, role, **kwargs)
    assert raw.headers["content-type"] == "application/problem+json"
    document = raw.json()
    assert error.status == raw.status_code == document["status"]
    assert (error.type, error.title, error.detail) == (document["type"], document["title"], document["detail"])
    assert {k: v for k, v in error.document.items() if k != "request_id"} == {
        k: v for k, v in document.items() if k != "request_id"
    }
    assert error.request_id and error.request_id != document["request_id"]


def test_an_unknown_claim_raises_not_found(served: Served, ledger: LedgerClient) -> None:
    with pytest.raises(NotFound) as raised:
        ledger.get_claim("no-such-claim")
    assert raised.value.code == "unknown-claim"
    check_problem(raised.value, served, "GET", "/v1/claims/no-such-claim", "auditor")


def test_another_statement_under_a_taken_key_raises_conflict(served: Served) -> None:
    body = {"statement": "Elton John telephoned Vladimir Putin", "key": story.KEY}
    with served.client("recorder") as client, pytest.raises(Conflict) as raised:
        client.register(body["statement"], key=story.KEY)
    assert raised.value.code == "key-conflict"
    check_problem(raised.value, served, "POST", "/v1/claims", "recorder", json=body)


def test_an_unknown_token_raises_unauthorized_and_a_low_role_forbidden(served: Served) -> None:
    with LedgerClient(served.base, "clm_not-a-token") as client, pytest.raises(Unauthorized) as unknown:
        client.events()
    assert unknown.value.status == 401
    with served.client("recorder") as client, pytest.raises(Forbidden) as low:
        client.events()
    check_problem(low.value, served, "GET", "/v1/events", "recorder")
    with served.client(None) as client, pytest.raises(Unauthorized) as missing:
        client.events()
    check_problem(missing.value, served, "GET", "/v1/events", None)


def test_a_bad_body_raises_invalid_request_naming_the_member(served: Served) -> None:
    body = {"party": {"id": "Not A Slug", "name": "Elton John"}}
    with served.client("recorder") as client, pytest.raises(InvalidRequest) as raised:
        client.record_act("assert", story.KEY, body)
    assert raised.value.status == 422
    assert ["body", "party", "id"] in [e["loc"] for e in raised.value.document["errors"]]
    check_problem(raised.value, served, "POST", f"/v1/claims/{story.KEY}/assertions", "recorder", json=body)


def test_if_match_on_a_moved_claim_raises_precondition_failed(served: Served) -> None:
    with served.client("recorder") as client, pytest.raises(PreconditionFailed) as raised:
        client.assert_claim(story.KEY, story.ELTON, act_id="too-late", if_match=1)
    assert isinstance(raised.value, Conflict) and raised.value.status == 412
    assert raised.value.document["expected_version"] == 1


def test_no_server_raises_unreachable_after_the_retries() -> None:
    with LedgerClient("http://127.0.0.1:9", retries=2, backoff=FAST) as client, pytest.raises(Unreachable) as raised:
        client.health()
    assert raised.value.status is None and "GET /healthz failed" in raised.value.detail


# -- Writes and their retries --------------------------------------------------------------------


class CutAnswers(httpx.BaseTransport):
    """Real HTTP to the server; the answers to the first `cut` writes are lost on their way
    back, as when a connection drops after the server acted: the client sees a transport error."""

    def __init__(self, cut: int = 1) -> None:
        self.http = httpx.HTTPTransport()
        self.cut = cut
        self.keys: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.http.handle_request(request)
        if request.method == "POST":
            self.keys.append(request.headers.get("idempotency-key"))
            if self.cut > 0:
                self.cut -= 1
                response.read()
                response.close()
                raise httpx.ReadError("connection lost before the answer", request=request)
        return response


class Busy(httpx.BaseTransport):
    """A front that answers the first `busy` requests 503 with Retry-After 0 (as the ledger
    does when a write was not taken in time), then lets the rest through to the server."""

    def __init__(self, busy: int = 1) -> None:
        self.http = httpx.HTTPTransport()
        self.busy = busy
        self.seen = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen += 1
        if self.busy > 0:
            self.busy -= 1
            return httpx.Response(503, headers={"Retry-After": "0", "Content-Type": "application/problem+json"},
                                  json={"type": "urn:claims-ledger:problem:store-unavailable", "title": "Store unavailable",
                                        "status": 503, "detail": "the write was not taken in time", "instance": ""})
        return self.http.handle_request(request)


def events_of(served: Served, claim: str) -> list[Json]:
    events: list[Json] = served.raw_json(f"/v1/claims/{claim}/history")["events"]
    return events


def test_the_write_path_records_each_act_and_answers_where(served_on: Served) -> None:
    key = f"client-writes-{uuid.uuid4().hex[:8]}"
    with served_on.client("editor") as client:
        registered = client.register(story.STATEMENT + " (writes)", key=key, subjects=["elton-john"])
        asserted = client.assert_claim(key, story.ELTON, said_at="2015-09-14", quote="Thank you", act_id="elton")
        denied = client.deny_claim(key, story.PESKOV, on_behalf_of=story.PUTIN, said_at="2015-09-15",
                                   source={"url": "https://tass.com/politics/821412", "outlet": "TASS"}, act_id="peskov")
        retracted = client.retract(key, "elton", story.ELTON, reason="misled", act_id="elton-takes-back")
        voided = client.void(key, "peskov", "recorded in error", act_id="void-peskov", if_match=4)
        reviewed = client.review(key, {"id": "fact-checkers", "name": "Fact Checkers"},
                                 {"text": "Unproven", "value": 2, "best": 5, "worst": 1},
                                 "https://www.example.org/fact-checks/putin-elton-john", reviewed_at="2015-09-16",
                                 summary="No record of the call", act_id="review")
        view = client.get_claim(key, min_position=reviewed["position"])
    assert registered["key"] == key and registered["version"] == 1
    assert [w["act_id"] for w in (asserted, denied, retracted, voided, reviewed)] == [
        "elton", "peskov", "elton-takes-back", "void-peskov", "review",
    ]
    history = events_of(served_on, key)
    assert [(e["type"], e["version"], e["position"]) for e in history] == [
        (t, w["version"], w["position"]) for t, w in zip(
            ("ClaimRegistered", "Asserted", "Denied", "Retracted", "ActVoided", "Reviewed"),
            (registered, asserted, denied, retracted, voided, reviewed), strict=True,
        )
    ]
    assert history[2]["on_behalf_of"] == story.PUTIN and history[2]["source"]["outlet"] == "TASS"
    assert history[5]["rating"] == {"text": "Unproven", "value": 2, "best": 5, "worst": 1}
    assert view == served_on.raw_json(f"/v1/claims/{key}") and view["version"] == 6
    assert [r["act_id"] for r in view["reviews"]] == ["review"]


def test_a_write_whose_answer_was_lost_is_retried_with_its_key_and_recorded_once(served_on: Served) -> None:
    key = f"client-retry-{uuid.uuid4().hex[:8]}"
    with served_on.client("recorder") as client:
        client.register(story.STATEMENT + " (retry)", key=key)
    cut = CutAnswers(cut=1)
    with served_on.client("recorder", transport=cut, backoff=FAST) as client:
        written = client.assert_claim(key, story.ELTON, said_at="2015-09-14")  # no act_id: the key makes it one
    assert len(cut.keys) == 2 and cut.keys[0] == cut.keys[1] and cut.keys[0]
    history = events_of(served_on, key)
    assert [e["type"] for e in history] == ["ClaimRegistered", "Asserted"]
    assert (history[1]["act_id"], history[1]["version"]) == (written["act_id"], written["version"])


def test_a_registration_whose_answer_was_lost_is_recorded_once(served_on: Served) -> None:
    key = f"client-retry-register-{uuid.uuid4().hex[:8]}"
    cut = CutAnswers(cut=2)
    with served_on.client("recorder", transport=cut, backoff=FAST) as client:
        written = client.register(story.STATEMENT + " (lost)", key=key)
    assert len(cut.keys) == 3 and len(set(cut.keys)) == 1
    assert [(e["type"], e["position"]) for e in events_of(served_on, key)] == [("ClaimRegistered", written["position"])]


def test_a_503_is_retried_after_retry_after(served: Served) -> None:
    busy = Busy(busy=2)
    with served.client("auditor", transport=busy, backoff=FAST) as client:
        assert client.get_claim(story.KEY) == served.raw_json(f"/v1/claims/{story.KEY}")
    assert busy.seen == 3
    with served.client("auditor", transport=Busy(busy=5), retries=1, backoff=FAST) as client, \
            pytest.raises(Unavailable) as raised:
        client.get_claim(story.KEY)
    assert raised.value.retry_after == 0 and raised.value.code == "store-unavailable"


def test_one_key_for_two_different_writes_is_refused_and_not_retried(served: Served) -> None:
    key = str(uuid.uuid4())
    with served.client("recorder", transport=(front := Busy(busy=0))) as client:
        client.assert_claim(story.KEY, story.ELTON, act_id="key-reuse-one", idempotency_key=key)
        with pytest.raises(InvalidRequest) as raised:
            client.assert_claim(story.KEY, story.ELTON, act_id="key-reuse-two", idempotency_key=key)
    assert raised.value.code == "idempotency-key-reused" and front.seen == 2
    assert "key-reuse-two" not in [e["act_id"] for e in events_of(served, story.KEY)]


class AsyncCutAnswers(httpx.AsyncBaseTransport):
    """`CutAnswers` for the async client."""

    def __init__(self, cut: int = 1) -> None:
        self.http = httpx.AsyncHTTPTransport()
        self.cut = cut
        self.keys: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.http.handle_async_request(request)
        if request.method == "POST":
            self.keys.append(request.headers.get("idempotency-key"))
            if self.cut > 0:
                self.cut -= 1
                await response.aread()
                await response.aclose()
                raise httpx.ReadError("connection lost before the answer", request=request)
        return response


def test_the_async_client_writes_once_through_lost_answers(served_on: Served) -> None:
    key = f"client-async-{uuid.uuid4().hex[:8]}"
    cut = AsyncCutAnswers(cut=2)

    async def run() -> tuple[Json, Json, Forbidden]:
        async with AsyncLedgerClient(served_on.base, served_on.tokens["recorder"], transport=cut, backoff=FAST) as client:
            registered = await client.register(story.STATEMENT + " (async)", key=key)
            asserted = await client.assert_claim(key, story.ELTON, said_at="2015-09-14")
            with pytest.raises(Forbidden) as raised:
                await client.void(key, asserted["act_id"], "not an editor")
            return registered, asserted, raised.value

    registered, asserted, forbidden = asyncio.run(run())
    assert cut.keys[0] == cut.keys[1] == cut.keys[2] != cut.keys[3]  # one key per write, kept across retries
    assert [(e["type"], e["version"]) for e in events_of(served_on, key)] == [
        ("ClaimRegistered", registered["version"]), ("Asserted", asserted["version"]),
    ]
    assert forbidden.status == 403
