"""Acts over HTTP: assertions, denials, retractions, voids; rules, If-Match."""

from __future__ import annotations

from tests.api import story
from tests.api.conftest import Api


def test_an_assertion_answers_201_with_act_id_version_and_position(api: Api) -> None:
    api.register()
    response = api.post(f"/v1/claims/{story.KEY}/assertions", story.elton_asserts())
    assert response.status_code == 201
    body = response.json()
    assert body["act_id"] == "elton-instagram"
    assert body["version"] == 2
    assert body["position"] == api.services.runtime.ledger.max_position()


def test_an_act_without_act_id_gets_one_from_the_server(api: Api) -> None:
    api.register()
    body = story.elton_asserts()
    del body["act_id"]
    response = api.post(f"/v1/claims/{story.KEY}/assertions", body)
    assert response.status_code == 201
    assert response.json()["act_id"].startswith("assert-")


def test_sending_the_same_act_again_answers_200_with_the_first_act(api: Api) -> None:
    api.register()
    first = api.act("assertions", story.elton_asserts())
    again = api.post(f"/v1/claims/{story.KEY}/assertions", story.elton_asserts())
    assert again.status_code == 200
    assert again.json() == first


def test_reusing_an_act_id_for_a_different_act_is_a_409(api: Api) -> None:
    api.seed()
    response = api.post(f"/v1/claims/{story.KEY}/denials", story.peskov_denies(quote="something else"))
    assert response.status_code == 409
    assert response.json()["type"].endswith(":act-id-conflict")


def test_a_denial_on_behalf_of_a_holder_gives_the_holder_the_stance(api: Api) -> None:
    api.register()
    denial = api.act("denials", story.peskov_denies())
    claim = api.read(f"/v1/claims/{story.KEY}", denial["position"]).json()
    assert claim["status"] == "denied"
    assert claim["stances"][0]["holder"] == story.PUTIN


def test_a_retraction_by_the_holder_withdraws_the_stance(api: Api) -> None:
    api.seed()
    retraction = api.act("retractions", {
        "retracts": "elton-instagram", "party": story.ELTON, "said_at": "2015-09-16",
        "reason": "It was a prank call", "act_id": "elton-retracts",
    })
    assert retraction["act_id"] == "elton-retracts"
    claim = api.read(f"/v1/claims/{story.KEY}", retraction["position"]).json()
    assert claim["status"] == "denied"
    stances = {s["holder"]["id"]: s["stance"] for s in claim["stances"]}
    assert stances["elton-john"] == "withdrawn"


def test_a_retraction_by_another_party_is_a_409(api: Api) -> None:
    api.seed()
    response = api.post(f"/v1/claims/{story.KEY}/retractions",
                        {"retracts": "elton-instagram", "party": story.PESKOV})
    assert response.status_code == 409
    assert response.json()["type"].endswith(":not-retractable")


def test_retracting_or_voiding_an_unknown_act_is_a_404(api: Api) -> None:
    api.register()
    retract = api.post(f"/v1/claims/{story.KEY}/retractions", {"retracts": "no-such-act", "party": story.ELTON})
    void = api.post(f"/v1/claims/{story.KEY}/voids", {"voids": "no-such-act", "reason": "typo"}, role="editor")
    assert retract.status_code == void.status_code == 404
    assert retract.json()["type"].endswith(":unknown-act")


def test_a_void_removes_the_act_from_stances_but_keeps_it_in_history(api: Api) -> None:
    api.seed()
    void = api.act("voids", {"voids": "peskov-tass", "reason": "Recorded against the wrong claim"})
    claim = api.read(f"/v1/claims/{story.KEY}", void["position"]).json()
    assert claim["status"] == "asserted"
    assert claim["counts"]["voids"] == 1
    history = api.get(f"/v1/claims/{story.KEY}/history").json()["events"]
    assert [e["type"] for e in history][-2:] == ["Denied", "ActVoided"]
    assert history[-1]["voids"] == "peskov-tass"


def test_voiding_twice_is_a_409(api: Api) -> None:
    api.seed()
    api.act("voids", {"voids": "peskov-tass", "reason": "Wrong claim"})
    again = api.post(f"/v1/claims/{story.KEY}/voids", {"voids": "peskov-tass", "reason": "Again"}, role="editor")
    assert again.status_code == 409


def test_acts_on_an_unknown_claim_are_a_404(api: Api) -> None:
    for kind, body in [("assertions", story.elton_asserts()), ("denials", story.peskov_denies()),
                       ("retractions", {"retracts": "x", "party": story.ELTON}),
                       ("voids", {"voids": "x", "reason": "typo"})]:
        response = api.post(f"/v1/claims/no-such-claim/{kind}", body, role="editor")
        assert response.status_code == 404, (kind, response.text)
        assert response.json()["type"].endswith(":unknown-claim")


def test_acts_reject_unknown_fields_and_bad_values_with_422_and_write_nothing(api: Api) -> None:
    registered = api.register()
    cases = [
        ("assertions", story.elton_asserts(stance="asserts"), "stance"),
        ("assertions", story.elton_asserts(party={"id": "elton-john", "name": "Elton", "age": 68}), "age"),
        ("assertions", story.elton_asserts(party={"id": "Elton John", "name": "Elton John"}), "id"),
        ("assertions", story.elton_asserts(said_at="14 September 2015"), "said_at"),
        ("assertions", story.elton_asserts(said_at="2015-02-30"), "said_at"),
        ("assertions", story.elton_asserts(source={"url": "instagram", "outlet": "Instagram"}), "source"),
        ("denials", story.peskov_denies(reported_via=[{"outlet": "TASS", "via": "x"}]), "via"),
        ("denials", {"said_at": "2015-09-15"}, "party"),
        ("retractions", {"party": story.ELTON}, "retracts"),
        ("voids", {"voids": "elton-instagram"}, "reason"),
        ("voids", {"voids": "elton-instagram", "reason": " "}, "reason"),
    ]
    for kind, body, field in cases:
        response = api.post(f"/v1/claims/{story.KEY}/{kind}", body, role="editor")
        assert response.status_code == 422, (kind, body, response.text)
        problem = response.json()
        locations = [str(loc) for error in problem.get("errors", []) for loc in error["loc"]]
        assert any(field in loc for loc in locations) or field in problem["detail"], problem
    assert api.services.runtime.ledger.max_position() == registered["position"]


def test_if_match_with_the_current_version_writes(api: Api) -> None:
    api.register()
    response = api.post(f"/v1/claims/{story.KEY}/assertions", story.elton_asserts(), headers={"If-Match": '"1"'})
    assert response.status_code == 201


def test_if_match_with_a_past_version_is_a_412_and_writes_nothing(api: Api) -> None:
    api.seed()
    response = api.post(f"/v1/claims/{story.KEY}/retractions",
                        {"retracts": "elton-instagram", "party": story.ELTON}, headers={"If-Match": '"2"'})
    assert response.status_code == 412
    problem = response.json()
    assert problem["type"].endswith(":version-mismatch")
    assert (problem["expected_version"], problem["current_version"]) == (2, 3)
    assert response.headers["ETag"] == '"3"'
    assert api.services.runtime.ledger.max_position() == 3


def test_a_malformed_if_match_is_a_422(api: Api) -> None:
    api.register()
    for value in ("1", 'W/"1"', '"1", "2"', '"0"', '"x"'):
        response = api.post(f"/v1/claims/{story.KEY}/assertions", story.elton_asserts(),
                            headers={"If-Match": value})
        assert response.status_code == 422, (value, response.text)


def test_if_match_star_means_any_version(api: Api) -> None:
    api.register()
    response = api.post(f"/v1/claims/{story.KEY}/assertions", story.elton_asserts(), headers={"If-Match": "*"})
    assert response.status_code == 201


def test_a_claim_moved_on_by_another_request_between_read_and_write_gets_412(api: Api) -> None:
    api.register()
    etag = api.read(f"/v1/claims/{story.KEY}", 1).headers["ETag"]
    api.act("assertions", story.elton_asserts())
    late = api.post(f"/v1/claims/{story.KEY}/denials", story.peskov_denies(), headers={"If-Match": etag})
    assert late.status_code == 412
