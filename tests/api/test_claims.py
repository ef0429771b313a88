"""Claims over HTTP: register, read (ETag, time travel), list, history."""

from __future__ import annotations

import uuid

from domain.values import claim_id_for_key
from tests.api import story
from tests.api.conftest import Api


def test_registering_a_claim_answers_201_with_its_id_key_version_and_position(api: Api) -> None:
    response = api.post("/v1/claims", story.registration())
    assert response.status_code == 201
    body = response.json()
    # A fresh ledger: its first event is at position 1, the log's newest.
    assert body == {"id": str(claim_id_for_key(story.KEY)), "key": story.KEY, "version": 1, "position": 1}
    assert api.services.runtime.ledger.max_position() == 1
    assert response.headers["Location"] == f"/v1/claims/{body['id']}"


def test_registering_the_same_key_and_statement_again_answers_200_and_writes_nothing(api: Api) -> None:
    first = api.post("/v1/claims", story.registration()).json()
    again = api.post("/v1/claims", story.registration())
    assert again.status_code == 200
    assert again.json() == first
    assert api.services.runtime.ledger.max_position() == first["position"]


def test_a_key_holding_another_statement_is_a_409_conflict(api: Api) -> None:
    api.register()
    response = api.post("/v1/claims", story.registration(statement="Elton John telephoned Putin"))
    assert response.status_code == 409
    problem = response.json()
    assert problem["type"].endswith(":key-conflict")
    assert story.KEY in problem["detail"]


def test_a_claim_without_a_key_gets_one_made_from_its_statement(api: Api) -> None:
    response = api.post("/v1/claims", {"statement": "Elton John met Vladimir Putin in 2016"})
    assert response.status_code == 201
    assert response.json()["key"].startswith("elton-john-met-vladimir-putin-in-2016-")


def test_registration_rejects_bad_values_with_422_naming_the_field(api: Api) -> None:
    cases = [
        ({"statement": ""}, "statement"),
        ({"statement": "x" * 2001}, "statement"),
        ({"statement": "ok", "key": "Not A Slug"}, "key"),
        ({"statement": "ok", "language": "english!"}, "language"),
        ({"statement": "ok", "subjects": "elton-john"}, "subjects"),
        ({"statement": "   "}, "statement"),
        ({"key": "no-statement"}, "statement"),
        ({"statement": "ok", "status": "asserted"}, "status"),
    ]
    for body, field in cases:
        response = api.post("/v1/claims", body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        locations = [loc for error in response.json().get("errors", []) for loc in error["loc"]]
        assert field in locations, (body, response.json())
    assert api.services.runtime.ledger.max_position() == 0


def test_a_claim_reads_back_with_status_stances_counts_and_an_etag(api: Api) -> None:
    _, _, denial = api.seed()
    response = api.read(f"/v1/claims/{story.KEY}", denial["position"])
    assert response.status_code == 200
    claim = response.json()
    assert claim["status"] == "disputed"
    assert claim["counts"] == {"assertions": 1, "denials": 1, "retractions": 0, "voids": 0, "reviews": 0}
    holders = {s["holder"]["id"]: s for s in claim["stances"]}
    assert holders["vladimir-putin"]["stance"] == "denies"
    assert holders["vladimir-putin"]["party"] == story.PESKOV
    assert holders["elton-john"]["stance"] == "asserts"
    assert response.headers["ETag"] == '"3"'


def test_a_claim_is_found_by_its_uuid_and_by_its_key(api: Api) -> None:
    registered = api.register()
    by_id = api.read(f"/v1/claims/{registered['id']}", registered["position"])
    by_key = api.get(f"/v1/claims/{story.KEY}")
    assert by_id.status_code == by_key.status_code == 200
    assert by_id.json() == by_key.json()


def test_a_uuid_shaped_key_is_found_by_key(api: Api) -> None:
    key = str(uuid.uuid4())
    registered = api.register(key=key)
    response = api.read(f"/v1/claims/{key}", registered["position"])
    assert response.status_code == 200
    assert response.json()["key"] == key


def test_an_unknown_claim_is_a_404_problem(api: Api) -> None:
    for ref in ("no-such-claim", str(uuid.uuid4())):
        response = api.get(f"/v1/claims/{ref}")
        assert response.status_code == 404
        assert response.json()["type"].endswith(":unknown-claim")
        assert api.get(f"/v1/claims/{ref}/history").status_code == 404


def test_if_none_match_with_the_current_etag_answers_304_and_a_stale_one_200(api: Api) -> None:
    _, asserted, _ = api.seed()
    current = api.read(f"/v1/claims/{story.KEY}", asserted["position"] + 1)
    etag = current.headers["ETag"]
    not_modified = api.get(f"/v1/claims/{story.KEY}", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["ETag"] == etag
    assert api.get(f"/v1/claims/{story.KEY}", headers={"If-None-Match": '"1", W/"3"'}).status_code == 304
    stale = api.get(f"/v1/claims/{story.KEY}", headers={"If-None-Match": '"2"'})
    assert stale.status_code == 200


def test_time_travel_by_version_shows_the_claim_as_it_was(api: Api) -> None:
    _, _, denial = api.seed()
    at_two = api.read(f"/v1/claims/{story.KEY}", denial["position"], version=2)
    assert at_two.status_code == 200
    assert at_two.json()["status"] == "asserted"
    assert at_two.json()["version"] == 2
    assert at_two.headers["ETag"] == '"2"'
    assert api.get(f"/v1/claims/{story.KEY}", version=9).status_code == 404


def test_time_travel_by_said_as_of_shows_the_world_at_that_moment(api: Api) -> None:
    _, _, denial = api.seed()
    # Elton John spoke on the 14th, Peskov on the 15th.
    on_14th = api.read(f"/v1/claims/{story.KEY}", denial["position"], said_as_of="2015-09-14")
    assert on_14th.json()["status"] == "asserted"
    assert "ETag" not in on_14th.headers
    before = api.get(f"/v1/claims/{story.KEY}", said_as_of="2015-09-13T00:00:00Z")
    assert before.json()["status"] == "unattested"
    assert api.get(f"/v1/claims/{story.KEY}", said_as_of="2015-09-15").json()["status"] == "disputed"


def test_time_travel_by_recorded_as_of_shows_what_the_ledger_knew(api: Api) -> None:
    registered, _, denial = api.seed()
    history = api.read(f"/v1/claims/{story.KEY}/history", denial["position"]).json()["events"]
    recorded_2 = history[1]["recorded_at"]
    knew = api.get(f"/v1/claims/{story.KEY}", recorded_as_of=recorded_2)
    assert knew.status_code == 200
    assert knew.json()["version"] == 2
    assert api.get(f"/v1/claims/{story.KEY}", recorded_as_of="2000-01-01").status_code == 404
    combined = api.get(f"/v1/claims/{story.KEY}", recorded_as_of=recorded_2, said_as_of="2015-09-13", version=3)
    assert combined.json()["status"] == "unattested"
    assert registered["version"] == 1


def test_time_travel_rejects_bad_values_with_422(api: Api) -> None:
    api.register()
    for params in ({"said_as_of": "yesterday"}, {"recorded_as_of": "2015-13-01"}, {"version": 0},
                   {"version": "two"}, {"said_as_of": "2015-09-14T10:00:00"}):
        response = api.get(f"/v1/claims/{story.KEY}", **params)
        assert response.status_code == 422, (params, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert api.get(f"/v1/claims/{story.KEY}/history", **params).status_code == 422


def test_history_lists_every_event_with_positions_and_hash_chain(api: Api) -> None:
    _, _, denial = api.seed()
    response = api.read(f"/v1/claims/{story.KEY}/history", denial["position"])
    assert response.status_code == 200
    history = response.json()
    assert history["claim_id"] == str(claim_id_for_key(story.KEY))
    events = history["events"]
    assert [e["type"] for e in events] == ["ClaimRegistered", "Asserted", "Denied"]
    assert events[0]["prev_hash"] == "0" * 64
    assert [e["prev_hash"] for e in events[1:]] == [e["hash"] for e in events[:-1]]
    assert events[2]["on_behalf_of"] == story.PUTIN
    assert events[2]["position"] == denial["position"]


def test_history_time_travels_too(api: Api) -> None:
    _, _, denial = api.seed()
    upto_2 = api.read(f"/v1/claims/{story.KEY}/history", denial["position"], version=2).json()["events"]
    assert [e["version"] for e in upto_2] == [1, 2]
    said = api.get(f"/v1/claims/{story.KEY}/history", said_as_of="2015-09-14").json()["events"]
    assert [e["type"] for e in said] == ["ClaimRegistered", "Asserted"]


def test_listing_filters_by_status_party_subject_and_text(api: Api) -> None:
    api.seed()
    other = api.register(statement="Elton John performed in Moscow in 2015", key="elton-moscow-2015",
                         subjects=["elton-john"])
    last = api.read("/v1/claims", other["position"]).json()
    assert len(last["items"]) == 2

    def keys(**params: str) -> list[str]:
        response = api.client.get("/v1/claims", params=params)
        assert response.status_code == 200, response.text
        return [c["key"] for c in response.json()["items"]]

    assert keys(status="disputed") == [story.KEY]
    assert keys(status="unattested") == ["elton-moscow-2015"]
    assert keys(party="vladimir-putin") == [story.KEY]
    assert keys(party="dmitry-peskov") == [story.KEY]
    assert keys(subject="elton-john") == [story.KEY, "elton-moscow-2015"]
    assert keys(q="telephoned") == [story.KEY]
    assert keys(q="moscow") == ["elton-moscow-2015"]


def test_listing_pages_with_an_opaque_cursor(api: Api) -> None:
    last = {}
    for i in range(5):
        last = api.register(statement=f"Claim number {i}", key=f"claim-{i}")
    api.read("/v1/claims", last["position"])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = api.client.get("/v1/claims", params=params).json()
        seen += [c["key"] for c in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"claim-{i}" for i in range(5)]
    assert pages == 3


def test_listing_rejects_bad_parameters_with_422(api: Api) -> None:
    for params in ({"limit": 0}, {"limit": 501}, {"status": "true"}, {"cursor": "not-a-cursor"},
                   {"party": "Not A Slug"}, {"q": "!!!"}):
        response = api.get("/v1/claims", **params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["status"] == 422
