"""Content negotiation over HTTP, with the fast lane on and off (both must answer the same):
JSON-LD, Turtle and PROV JSON-LD for a claim, now and at a past moment; CSV for the list
(every page) and a history; problems stay problems."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest
from rdflib import Graph

from fixtures.replay import import_fixture
from formats import jsonld, prov
from formats.csv import CLAIM_COLUMNS, claim_row
from formats.history import folded
from tests.api.conftest import Api, open_api
from tests.conftest import drop_schema, new_database_url
from tests.formats.conftest import SEED_KEY, STORIES

BASE = "http://testserver"  # the TestClient's own URL: the base of the IRIs the API writes
LANES = [("sqlite", True), ("sqlite", False), ("postgres", True), ("postgres", False)]


@pytest.fixture(scope="module", params=LANES, ids=[f"{b}-lane-{'on' if on else 'off'}" for b, on in LANES])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    backend, fast_lane = request.param
    url = new_database_url(backend, tmp_path_factory.mktemp("formats-api"))
    try:
        for api in open_api(url, fast_lane=fast_lane):
            runtime = api.services.runtime
            for story in STORIES:
                import_fixture(runtime.ledger, story)
            assert runtime.read.wait_for(runtime.ledger.max_position(), timeout=10)
            yield api
    finally:
        drop_schema(url)


def history_of(api: Api, ref: str, **travel: Any) -> Any:
    found = api.services.runtime.read.history_at(ref, **travel)
    assert found is not None
    return folded(found["claim_id"], found["events"])


def test_accept_ld_json_answers_schema_org(api: Api) -> None:
    response = api.get(f"/v1/claims/{SEED_KEY}", headers={"Accept": "application/ld+json"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/ld+json"
    assert response.headers["vary"] == "Accept"
    assert response.json() == jsonld.claim_document(history_of(api, SEED_KEY), BASE)


def test_turtle_and_prov_jsonld_hold_the_provenance_graph(api: Api) -> None:
    expected = prov.claim_graph(history_of(api, SEED_KEY), BASE)
    turtle = api.get(f"/v1/claims/{SEED_KEY}", headers={"Accept": "text/turtle"})
    assert turtle.status_code == 200 and turtle.headers["content-type"].startswith("text/turtle")
    assert Graph().parse(data=turtle.text, format="turtle").isomorphic(expected)
    for request in ({"params": {"format": "prov"}},
                    {"headers": {"Accept": 'application/ld+json; profile="http://www.w3.org/ns/prov#"'}}):
        answer = api.client.get(f"/v1/claims/{SEED_KEY}", **request)
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/ld+json"
        assert Graph().parse(data=answer.text, format="json-ld").isomorphic(expected)


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "application/json, application/ld+json;q=0.5",
                                    "text/csv"])
def test_json_stays_the_answer_unless_another_format_is_preferred(api: Api, accept: str | None) -> None:
    headers = {} if accept is None else {"Accept": accept}
    response = api.client.get(f"/v1/claims/{SEED_KEY}", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["status"] == "disputed"
    assert response.headers["vary"] == "Accept", "the answer depends on Accept: caches must know"


def test_each_format_has_an_etag_of_its_own(api: Api) -> None:
    tags = set()
    for accept in ("application/json", "application/ld+json", "text/turtle"):
        first = api.get(f"/v1/claims/{SEED_KEY}", headers={"Accept": accept})
        tags.add(first.headers["etag"])
        again = api.get(f"/v1/claims/{SEED_KEY}", headers={"Accept": accept, "If-None-Match": first.headers["etag"]})
        assert again.status_code == 304 and again.headers["etag"] == first.headers["etag"]
    assert tags == {'"3"', '"3-schema"', '"3-turtle"'}
    cut = api.get(f"/v1/claims/{SEED_KEY}", headers={"Accept": "text/turtle"}, said_as_of="2015-09-14")
    assert "etag" not in cut.headers  # a said_as_of cut is no version of the claim


def test_formats_travel_in_time_like_the_json(api: Api) -> None:
    response = api.get(f"/v1/claims/{SEED_KEY}", headers={"Accept": "application/ld+json"}, said_as_of="2015-09-14")
    (claim, *_) = response.json()["@graph"]
    assert claim["ledger:status"] == "asserted" and claim["ledger:version"] == 2
    assert [a["identifier"] for a in claim["ledger:act"]] == ["elton-john-instagram"]


def test_problems_stay_problem_documents(api: Api) -> None:
    missing = api.get("/v1/claims/no-such-claim", headers={"Accept": "text/turtle"})
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    bad = api.client.get(f"/v1/claims/{SEED_KEY}", params={"format": "xml"})
    assert bad.status_code == 422 and "format" in bad.json()["detail"]
    # A Host header no IRI can be made of is not used (Starlette falls back to the server's address).
    host = api.client.get(f"/v1/claims/{SEED_KEY}", headers={"Accept": "text/turtle", "Host": 'evil"<x>'})
    assert host.status_code == 200 and "evil" not in host.text
    cursor = api.get("/v1/claims", headers={"Accept": "text/csv"}, cursor="forged")
    assert cursor.status_code == 422 and cursor.headers["content-type"] == "application/problem+json"


def test_the_csv_list_streams_every_page_with_the_same_filters(api: Api) -> None:
    everything: list[Any] = []
    cursor = None
    while True:
        page = api.get("/v1/claims", limit=2, **({"cursor": cursor} if cursor else {})).json()
        everything += page["items"]
        if (cursor := page["next_cursor"]) is None:
            break
    assert len(everything) > 2
    response = api.get("/v1/claims", headers={"Accept": "text/csv"}, limit=2)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text, newline="")))
    assert tuple(rows[0]) == CLAIM_COLUMNS
    assert rows[1:] == [claim_row(view) for view in everything]
    disputed = api.get("/v1/claims", headers={"Accept": "text/csv"}, status="disputed")
    statuses = [row["status"] for row in csv.DictReader(io.StringIO(disputed.text, newline=""))]
    assert statuses and set(statuses) == {"disputed"}


def test_a_history_as_csv(api: Api) -> None:
    response = api.get(f"/v1/claims/{SEED_KEY}/history", headers={"Accept": "text/csv"})
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.text, newline="")))
    assert [(r["type"], r["act_id"]) for r in rows] == [
        ("ClaimRegistered", ""), ("Asserted", "elton-john-instagram"), ("Denied", "peskov-tass-denial"),
    ]
