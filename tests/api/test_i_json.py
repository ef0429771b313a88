"""Request bodies are I-JSON (RFC 7493) or refused: 422 naming the member, nothing recorded.

Each refusal is checked over the real app on both backends: the problem names the member, the
claim's version and the log's head do not move, and an Idempotency-Key sent with the refused
body is not used up. `make test` runs these with the fast lane on and off; a request with an
Idempotency-Key goes through FastAPI even with the lane on.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import APIRouter, FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.body import JsonRoute, unparsed_bodies
from api.schemas import VoidBody
from domain.errors import json_path
from tests.api import story
from tests.api.conftest import Api
from tests.json_text import Style, tree, with_a_member_twice, write

K = story.KEY
JSON = {"Content-Type": "application/json"}
ACTS = f"/v1/claims/{K}"
PARTY = '{"id":"elton-john","name":"Elton John"}'
ESCAPED = Style("every colon in a string and every non-ASCII character escaped", ascii=True, escaped_colons=True)


@pytest.fixture(scope="module")
def ledger(shared_api: Api) -> Iterator[Api]:
    """The seed story (registered, asserted, denied) on one app per backend."""
    shared_api.register()
    for kind, body in (("assertions", story.elton_asserts()), ("denials", story.peskov_denies())):
        shared_api.post(f"{ACTS}/{kind}", body, role="editor")
    yield shared_api


def head(api: Api) -> int:
    return api.services.runtime.ledger.max_position()


def version(api: Api) -> int:
    found = api.read(f"/v1/claims/{K}", head(api)).json()["version"]
    assert isinstance(found, int)
    return found


def send(api: Api, path: str, body: bytes | str, role: str = "editor", **headers: str) -> Any:
    return api.client.post(path, content=body.encode() if isinstance(body, str) else body,
                           headers={**api.auth(role), **JSON, **headers})


# (what, path, body, the member's place, the problem's code)
REFUSED: list[tuple[str, str, str, list[str], str]] = [
    ("a top-level member twice", f"{ACTS}/assertions",
     f'{{"party":{PARTY},"quote":"one","quote":"two"}}', ["quote"], "duplicate-member"),
    ("the same member twice with the same value", f"{ACTS}/assertions",
     f'{{"party":{PARTY},"quote":"one","quote":"one"}}', ["quote"], "duplicate-member"),
    ("a member of party twice", f"{ACTS}/assertions",
     '{"party":{"id":"elton-john","name":"Elton John","id":"dmitry-peskov"}}', ["party", "id"], "duplicate-member"),
    ("a member of on_behalf_of twice", f"{ACTS}/denials",
     '{"party":{"id":"dmitry-peskov","name":"Dmitry Peskov"},'
     '"on_behalf_of":{"id":"vladimir-putin","name":"Vladimir Putin","name":"Elton John"}}',
     ["on_behalf_of", "name"], "duplicate-member"),
    ("a member of source twice", f"{ACTS}/assertions",
     f'{{"party":{PARTY},"source":{{"url":"https://www.instagram.com/p/1/","outlet":"Instagram",'
     '"url":"https://example.org/forged"}}', ["source", "url"], "duplicate-member"),
    ("a member of reported_via[1] twice", f"{ACTS}/denials",
     '{"party":{"id":"dmitry-peskov","name":"Dmitry Peskov"},"reported_via":[{"outlet":"TASS"},'
     '{"outlet":"The Moscow Times","url":"https://www.themoscowtimes.com/","outlet":"RT"}]}',
     ["reported_via", "1", "outlet"], "duplicate-member"),
    ("a retraction's retracts twice", f"{ACTS}/retractions",
     f'{{"retracts":"elton-instagram","party":{PARTY},"retracts":"peskov-tass"}}', ["retracts"], "duplicate-member"),
    ("a void's reason twice", f"{ACTS}/voids",
     '{"voids":"elton-instagram","reason":"recorded twice","reason":"never said"}', ["reason"], "duplicate-member"),
    ("a registration's statement twice", "/v1/claims",
     '{"statement":"Elton John met Putin","key":"elton-met-putin","statement":"Putin met Elton John"}',
     ["statement"], "duplicate-member"),
    ("a lone surrogate in party.name", f"{ACTS}/assertions",
     '{"party":{"id":"elton-john","name":"Elton \\ud800John"}}', ["party", "name"], "lone-surrogate"),
    ("a lone surrogate in a registration's statement", "/v1/claims",
     '{"statement":"Putin \\udc00 phoned","key":"putin-surrogate"}', ["statement"], "lone-surrogate"),
    ("a number beyond a double's range", f"{ACTS}/assertions",
     f'{{"party":{PARTY},"quote":1e400}}', ["quote"], "inexact-number"),
    ("a number with more digits than a double holds", f"{ACTS}/assertions",
     f'{{"party":{PARTY},"source":{{"title":3.141592653589793238462643383279}}}}', ["source", "title"],
     "inexact-number"),
    ("an integer past 2**53 a double does not hold", f"{ACTS}/denials",
     '{"party":{"id":"dmitry-peskov","name":"Dmitry Peskov"},"said_at":9007199254740993}', ["said_at"],
     "inexact-number"),
]


@pytest.mark.parametrize("idempotency_key", [None, "retry-after-fixing"], ids=["plain", "with Idempotency-Key"])
@pytest.mark.parametrize(("what", "path", "body", "loc", "code"), REFUSED, ids=[case[0] for case in REFUSED])
def test_a_body_that_is_not_i_json_is_a_422_naming_the_member_and_records_nothing(
    ledger: Api, what: str, path: str, body: str, loc: list[str], code: str, idempotency_key: str | None,
) -> None:
    before = (head(ledger), version(ledger))
    slug = re.sub(r"[^a-z0-9]+", "-", what)
    headers = {"Idempotency-Key": f"{idempotency_key}-{slug}"} if idempotency_key else {}
    response = send(ledger, path, body, **headers)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == f"urn:claims-ledger:problem:{code}"
    member = json_path(tuple(int(step) if step.isdigit() else step for step in loc))
    assert f" {member} " in problem["detail"] and "I-JSON (RFC 7493)" in problem["detail"]
    assert problem["errors"][0]["loc"] == ["body", *loc]
    assert problem["errors"][0]["type"] == code
    assert (head(ledger), version(ledger)) == before
    if idempotency_key:  # the key was not used up: the mended request is carried out with it
        mended = send(ledger, f"{ACTS}/assertions", json.dumps(story.elton_asserts(act_id=f"mended-{slug}")),
                      **headers)
        assert mended.status_code == 201, mended.text


def test_a_client_reading_the_first_of_two_members_would_see_another_act_than_the_one_recorded(ledger: Api) -> None:
    """Why the rule exists: the same bytes, read by a first-wins and a last-wins reader."""
    body = f'{{"party":{PARTY},"quote":"one","quote":"two"}}'
    pairs = json.loads(body, object_pairs_hook=lambda members: members)
    assert [value for name, value in pairs if name == "quote"] == ["one", "two"]
    assert send(ledger, f"{ACTS}/assertions", body).status_code == 422


def test_escaped_characters_in_a_body_are_recorded_as_every_reader_reads_them(ledger: Api) -> None:
    quote = "Kremlin: \u00abno call\u00bb \U0001f600"
    body = write(tree(story.elton_asserts(act_id="escaped", quote=quote)), ESCAPED)
    assert "\\u003a" in body and "\\ud83d\\ude00" in body
    written = send(ledger, f"{ACTS}/assertions", body)
    assert written.status_code == 201, written.text
    history = ledger.read(f"/v1/claims/{K}/history", written.json()["position"]).json()["events"]
    assert [event["quote"] for event in history if event["act_id"] == "escaped"] == [quote]


# -- Integers where a count, version or position is expected ------------------------------------

BEYOND = str(2**53)


def cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(("path", "params", "field"), [
    ("/v1/events", {"after": BEYOND}, "after"),
    (f"/v1/claims/{K}", {"min_position": BEYOND}, "min_position"),
    ("/v1/audit/proofs/inclusion", {"position": BEYOND}, "position"),
    ("/v1/audit/proofs/consistency", {"from_size": "1", "to_size": BEYOND}, "to_size"),
])
def test_a_position_or_size_past_2_to_the_53_minus_1_is_a_422_naming_it(
    ledger: Api, path: str, params: dict[str, str], field: str,
) -> None:
    response = ledger.get(path, role="auditor", **params)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["query", field]
    assert "9007199254740991" in response.json()["detail"]


def test_an_if_match_past_2_to_the_53_minus_1_is_a_422_and_records_nothing(ledger: Api) -> None:
    before = head(ledger)
    response = send(ledger, f"{ACTS}/assertions", json.dumps(story.elton_asserts(act_id="too-far")),
                    **{"If-Match": f'"{BEYOND}"'})
    assert response.status_code == 422
    assert response.json()["type"].endswith(":invalid-if-match") and "9007199254740991" in response.json()["detail"]
    assert head(ledger) == before


@pytest.mark.parametrize("forged", ['{"after":0,"after":1}', f'{{"after":{BEYOND}}}', '{"after":1e400}'])
def test_a_forged_cursor_is_a_422_naming_the_cursor(ledger: Api, forged: str) -> None:
    response = ledger.get("/v1/claims", cursor=cursor(forged))
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["cursor"]


# -- The property: a body with a member given twice is never accepted ---------------------------

WRITES = [("/v1/claims", "/v1/claims")] + [
    (f"/v1/claims/{{id}}/{kind}", f"{ACTS}/{kind}") for kind in ("assertions", "denials", "retractions", "voids")
]


@pytest.mark.parametrize(("operation", "path"), WRITES, ids=[path for _, path in WRITES])
def test_any_valid_body_with_one_member_given_twice_is_never_accepted_and_records_nothing(
    ledger: Api, operation: str, path: str,
) -> None:
    """Schemathesis makes bodies valid by the OpenAPI document; one member of one of their
    objects, at any depth, is then given twice (in the text: a dict cannot hold it)."""
    schema = schemathesis.openapi.from_dict(ledger.app.openapi())
    bodies = schema[operation]["POST"].as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE)

    @given(case=bodies, data=st.data())
    @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def never_accepted(case: Any, data: st.DataObject) -> None:
        text, loc = with_a_member_twice(case.body, data.draw)
        before = head(ledger)
        response = send(ledger, path, text, role="admin")
        assert response.status_code == 422, (text, response.text)
        assert response.json()["type"] == "urn:claims-ledger:problem:duplicate-member"
        assert response.json()["errors"][0]["loc"] == ["body", *map(str, loc)]
        assert head(ledger) == before

    never_accepted()


# -- Every body goes through the one parser -----------------------------------------------------


def test_a_route_whose_body_fastapi_would_parse_itself_is_named_and_the_ledger_has_none(ledger: Api) -> None:
    assert list(unparsed_bodies(ledger.app.routes)) == []

    plain, parsed = APIRouter(), APIRouter(route_class=JsonRoute)

    @plain.post("/parsed-by-the-standard-library")
    @parsed.post("/parsed-once")
    @parsed.api_route("/read-with-get", methods=["GET"])
    def endpoint(body: VoidBody) -> None:
        pass

    app = FastAPI()
    app.include_router(plain)
    app.include_router(parsed)
    assert list(unparsed_bodies(app.routes)) == ["POST /parsed-by-the-standard-library", "GET /read-with-get"]
