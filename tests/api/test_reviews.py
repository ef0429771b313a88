"""Reviews over HTTP: POST /v1/claims/{id}/reviews, and reviews in the claim view, its time
travel, its history and the reviewer's party page (one app per backend for the module; each
test on its own claim)."""

from __future__ import annotations

from typing import Any

import pytest

from api.schemas import ClaimView
from tests.api import story
from tests.api.conftest import Api

Json = dict[str, Any]
NORTHVALE = {"id": "northvale-fact-check", "name": "Northvale Fact Check"}
COASTLINE = {"id": "coastline-verify", "name": "Coastline Verify"}


def review(**overrides: Any) -> Json:
    return {
        "reviewer": NORTHVALE, "rating": {"text": "Unproven"},
        "url": "https://factcheck.northvale.example/2015/09/putin-elton-john", "reviewed_at": "2015-09-16",
        **overrides,
    }


@pytest.fixture
def claim(shared_api: Api, request: pytest.FixtureRequest) -> str:
    """A claim of this test's own, asserted by Elton John and denied for Putin."""
    key = request.node.name.split("[")[0].replace("_", "-")[:100]
    shared_api.register(key=key, statement=f"{story.STATEMENT} ({key})")
    shared_api.act("assertions", story.elton_asserts(), claim=key)
    shared_api.act("denials", story.peskov_denies(), claim=key)
    return key


def post_review(api: Api, key: str, body: Json, **kwargs: Any) -> Json:
    response = api.post(f"/v1/claims/{key}/reviews", body, **kwargs)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_a_review_answers_201_and_shows_in_the_view_without_changing_the_status(shared_api: Api, claim: str) -> None:
    written = post_review(shared_api, claim, review(
        act_id="nv-1", rating={"text": "False", "value": 1, "best": 5, "worst": 1}, summary="No call was logged.",
    ))
    assert (written["act_id"], written["version"]) == ("nv-1", 4)
    response = shared_api.read(f"/v1/claims/{claim}", written["position"])
    assert response.headers["etag"] == '"4"'
    view = response.json()
    assert view["status"] == "disputed"
    assert view["reviews"] == [{
        "act_id": "nv-1", "reviewer": NORTHVALE, "rating": {"text": "False", "value": 1, "best": 5, "worst": 1},
        "url": "https://factcheck.northvale.example/2015/09/putin-elton-john", "reviewed_at": "2015-09-16",
        "summary": "No call was logged.", "version": 4, "recorded_at": view["updated_at"],
    }]
    assert view["counts"] == {"assertions": 1, "denials": 1, "retractions": 0, "voids": 0, "reviews": 1}
    # The stored view is sent as it is: byte for byte what the documented model would write.
    post_review(shared_api, claim, review(act_id="cv-1", reviewer=COASTLINE, reviewed_at=None))
    stored = shared_api.get(f"/v1/claims/{claim}", min_position=written["position"] + 1).content
    assert stored == ClaimView.model_validate_json(stored).model_dump_json().encode()


def test_time_travel_answers_the_same_shape_and_cuts_reviews_by_reviewed_at(shared_api: Api, claim: str) -> None:
    first = post_review(shared_api, claim, review(act_id="nv-1"))
    post_review(shared_api, claim, review(act_id="cv-1", reviewer=COASTLINE, rating={"text": "Mostly False"},
                                          reviewed_at="2015-09-20T10:00:00Z"))
    now = shared_api.get(f"/v1/claims/{claim}", min_position=first["position"] + 1).json()
    assert [r["act_id"] for r in now["reviews"]] == ["cv-1", "nv-1"]
    # Through FastAPI's response model: absent optional members stay absent, as stored.
    at_version = shared_api.get(f"/v1/claims/{claim}", version=now["version"]).json()
    assert at_version == now
    said = shared_api.get(f"/v1/claims/{claim}", said_as_of="2015-09-17").json()
    assert ([r["act_id"] for r in said["reviews"]], said["counts"]["reviews"]) == (["nv-1"], 1)
    before = shared_api.get(f"/v1/claims/{claim}", version=first["version"] - 1).json()
    assert (before["reviews"], before["counts"]["reviews"]) == ([], 0)


def test_the_reviewer_retracts_a_review_and_anyone_else_is_refused_409(shared_api: Api, claim: str) -> None:
    post_review(shared_api, claim, review(act_id="nv-1"))
    other = shared_api.post(f"/v1/claims/{claim}/retractions", {"retracts": "nv-1", "party": story.ELTON})
    assert other.status_code == 409
    assert other.json()["type"].endswith(":not-retractable")
    assert "only its reviewer" in other.json()["detail"]
    withdrawn = shared_api.act("retractions", {"retracts": "nv-1", "party": NORTHVALE, "act_id": "nv-withdrawn"},
                               claim=claim)
    view = shared_api.read(f"/v1/claims/{claim}", withdrawn["position"]).json()
    assert (view["reviews"], view["counts"]["retractions"], view["status"]) == ([], 1, "disputed")


def test_staff_void_a_review_once(shared_api: Api, claim: str) -> None:
    post_review(shared_api, claim, review(act_id="nv-1"))
    void = shared_api.act("voids", {"voids": "nv-1", "reason": "Recorded on the wrong claim"}, claim=claim)
    assert shared_api.read(f"/v1/claims/{claim}", void["position"]).json()["reviews"] == []
    again = shared_api.post(f"/v1/claims/{claim}/voids", {"voids": "nv-1", "reason": "Again"}, role="editor")
    assert again.status_code == 409


def test_the_same_review_again_is_200_another_under_its_act_id_409_and_idempotency_keys_replay(
    shared_api: Api, claim: str,
) -> None:
    first = post_review(shared_api, claim, review(act_id="nv-1"))
    again = shared_api.post(f"/v1/claims/{claim}/reviews", review(act_id="nv-1"))
    assert (again.status_code, again.json()) == (200, first)
    clash = shared_api.post(f"/v1/claims/{claim}/reviews", review(act_id="nv-1", rating={"text": "True"}))
    assert clash.status_code == 409
    assert clash.json()["type"].endswith(":act-id-conflict")
    headers = {"Idempotency-Key": f"{claim}-review"}
    keyed = shared_api.post(f"/v1/claims/{claim}/reviews", review(reviewer=COASTLINE), headers=headers)
    replay = shared_api.post(f"/v1/claims/{claim}/reviews", review(reviewer=COASTLINE), headers=headers)
    assert keyed.status_code == replay.status_code == 201  # the first response, replayed
    assert replay.json() == keyed.json()
    assert replay.headers["idempotent-replayed"] == "true"
    stale = shared_api.post(f"/v1/claims/{claim}/reviews", review(reviewer=COASTLINE, act_id="cv-2"),
                            headers={"If-Match": '"3"'})
    assert stale.status_code == 412


def test_reviews_need_a_recorder_and_a_known_claim(shared_api: Api, claim: str) -> None:
    assert shared_api.post(f"/v1/claims/{claim}/reviews", review(), role=None).status_code == 401
    assert shared_api.post(f"/v1/claims/{claim}/reviews", review(), role="reader").status_code == 403
    unknown = shared_api.post("/v1/claims/no-such-claim/reviews", review())
    assert unknown.status_code == 404
    assert unknown.json()["type"].endswith(":unknown-claim")


BAD = [
    (review(verdict="False"), "verdict"),
    (review(reviewer="Northvale"), "reviewer"),
    (review(rating=None), "rating"),
    (review(rating={"text": ""}), "text"),
    (review(rating={"text": "F" * 201}), "text"),
    (review(rating={"text": "False", "scale": 5}), "scale"),
    (review(rating={"text": "False", "value": "1", "best": 5, "worst": 1}), "value"),
    (review(rating={"text": "False", "value": True, "best": 5, "worst": 1}), "value"),
    (review(rating={"text": "False", "value": 1}), "rating.value needs rating.best and rating.worst"),
    (review(rating={"text": "False", "best": 5}), "come together"),
    (review(rating={"text": "False", "value": 9, "best": 5, "worst": 1}), "outside the scale"),
    (review(url="ftp://checks.example/1"), "url"),
    (review(url="https://checks.example/a b"), "absolute http or https URL"),
    ({k: v for k, v in review().items() if k != "url"}, "url"),
    (review(reviewed_at="16 September 2015"), "reviewed_at"),
    (review(reviewed_at="2015-02-30"), "not a real date"),
    (review(summary="s" * 10_001), "summary"),
]


def test_bad_reviews_are_422_problems_naming_what_to_fix_and_write_nothing(shared_api: Api, claim: str) -> None:
    before = shared_api.services.runtime.ledger.max_position()
    for body, what in BAD:
        response = shared_api.post(f"/v1/claims/{claim}/reviews", body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        locations = [str(loc) for error in problem.get("errors", []) for loc in error["loc"]]
        assert any(what in loc for loc in locations) or what in problem["detail"], (what, problem)
    assert shared_api.services.runtime.ledger.max_position() == before


def test_history_and_party_pages_show_reviews(shared_api: Api, claim: str) -> None:
    post_review(shared_api, claim, review(act_id="nv-1", rating={"text": "False", "value": 1, "best": 5, "worst": 1}))
    last = post_review(shared_api, claim, review(act_id="nv-2", reviewed_at=None, summary="Updated."))
    history = shared_api.read(f"/v1/claims/{claim}/history", last["position"]).json()["events"]
    reviews = [e for e in history if e["type"] == "Reviewed"]
    # reviewed_at and summary only when known, and the other events without a review's fields.
    assert [(e["act_id"], e["reviewer"], e.get("reviewed_at"), e.get("summary")) for e in reviews] == [
        ("nv-1", NORTHVALE, "2015-09-16", None), ("nv-2", NORTHVALE, None, "Updated."),
    ]
    assert ("summary" not in reviews[0], "reviewed_at" not in reviews[1]) == (True, True)
    assert not {"reviewer", "rating", "url"} & set(history[1])
    assert reviews[0]["rating"] == {"text": "False", "value": 1, "best": 5, "worst": 1}
    assert reviews[1]["rating"] == {"text": "Unproven"}
    assert reviews[0]["url"] == "https://factcheck.northvale.example/2015/09/putin-elton-john"
    page = shared_api.get(f"/v1/parties/{NORTHVALE['id']}").json()
    assert (page["name"], page["stances"], page["spoken_for_others"]) == (NORTHVALE["name"], [], [])
    mine = [r for r in page["reviews"] if r["key"] == claim]
    assert [(r["act_id"], r["status"], r["rating"]) for r in mine] == [("nv-2", "disputed", {"text": "Unproven"})]
    assert "summary" in mine[0] and "value" not in mine[0]["rating"]
    elton = shared_api.get("/v1/parties/elton-john").json()
    assert elton["reviews"] == []
