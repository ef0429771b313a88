"""Reviews: fact-checkers' verdicts in the fold (pure), the command's validation, and the
claim's rules on SQLite and PostgreSQL."""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import pytest

from domain import Ledger
from domain.claim import EVENT_OF_OP, OP_OF_TYPE, Claim
from domain.commands import RecordAct
from domain.errors import ActIdConflict, InvalidInput, NotRetractable, NotVoidable
from domain.fold import ClaimFold
from domain.values import parse_as_of
from tests.domain.test_fold import History
from tests.story import CLAIM_KEY, ELTON, PESKOV, STATEMENT, elton_asserts, peskov_denies

NORTHVALE = {"id": "northvale-fact-check", "name": "Northvale Fact Check"}
COASTLINE = {"id": "coastline-verify", "name": "Coastline Verify"}


def reviewed(history: History, act_id: str, reviewer: dict[str, str], text: str, *,
             reviewed_at: str | None = None, recorded_at: str | None = None, **rating: Any) -> History:
    return history.add(
        "Reviewed", recorded_at, act_id=act_id, reviewer=reviewer, rating={"text": text, **rating},
        url=f"https://checks.example/{act_id}", reviewed_at=reviewed_at, summary=None,
    )


def verdicts(view: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(r["reviewer"]["id"], r["act_id"], r["rating"]["text"]) for r in view["reviews"]]


# The fold.
def test_a_standing_review_is_shown_in_the_views_shape_and_counted() -> None:
    history = reviewed(History(), "nv-1", NORTHVALE, "False", reviewed_at="2015-09-20", value=1, best=5, worst=1)
    view = history.view()
    assert view["reviews"] == [{
        "act_id": "nv-1", "reviewer": NORTHVALE, "rating": {"text": "False", "value": 1, "best": 5, "worst": 1},
        "url": "https://checks.example/nv-1", "reviewed_at": "2015-09-20", "version": 2,
        "recorded_at": "2026-01-01T00:00:02Z",
    }]
    assert view["counts"] == {"assertions": 0, "denials": 0, "retractions": 0, "voids": 0, "reviews": 1}
    assert list(view) == ["id", "key", "statement", "language", "subjects", "status", "stances", "reviews",
                          "counts", "version", "registered_at", "updated_at"]


def test_a_summary_is_shown_only_when_given_and_ratings_keep_their_order_whatever_the_data() -> None:
    history = History().add(
        "Reviewed", act_id="nv-1", reviewer=NORTHVALE, url="https://checks.example/1", reviewed_at=None,
        rating={"worst": 1, "value": 2, "text": "Mostly False", "best": 5}, summary="Gauge readings say otherwise.",
    )
    (review,) = history.view()["reviews"]
    assert list(review["rating"]) == ["text", "value", "best", "worst"]
    assert review["summary"] == "Gauge readings say otherwise."
    assert list(review) == ["act_id", "reviewer", "rating", "url", "reviewed_at", "summary", "version", "recorded_at"]


def test_reviews_never_change_the_status_nor_the_stances() -> None:
    only_reviews = reviewed(History(), "nv-1", NORTHVALE, "False")
    assert only_reviews.status() == "unattested"
    assert only_reviews.view()["stances"] == []
    asserted = History().act("assert", "a-1", "elton-john")
    before = asserted.view()
    reviewed(asserted, "nv-1", NORTHVALE, "Pants on Fire")
    after = asserted.view()
    assert (after["status"], after["stances"]) == (before["status"], before["stances"]) == (
        "asserted", before["stances"])


def test_each_reviewer_shows_their_latest_review_by_reviewed_at_then_version_sorted_by_reviewer() -> None:
    history = History()
    reviewed(history, "nv-1", NORTHVALE, "False", reviewed_at="2015-09-20")
    reviewed(history, "cv-1", COASTLINE, "Unproven")  # reviewed_at unknown: its recorded_at counts
    reviewed(history, "nv-2", NORTHVALE, "Misleading", reviewed_at="2015-09-18")  # recorded later, said earlier
    assert verdicts(history.view()) == [
        ("coastline-verify", "cv-1", "Unproven"), ("northvale-fact-check", "nv-1", "False"),
    ]
    reviewed(history, "nv-3", NORTHVALE, "True", reviewed_at="2015-09-20")  # the same day: the later version
    assert verdicts(history.view())[1] == ("northvale-fact-check", "nv-3", "True")
    assert history.view()["counts"]["reviews"] == 2


def test_a_retracted_review_gives_way_to_the_reviewers_previous_one_and_then_to_none() -> None:
    history = History()
    reviewed(history, "nv-1", NORTHVALE, "False", reviewed_at="2015-09-20")
    reviewed(history, "nv-2", NORTHVALE, "Misleading", reviewed_at="2015-09-25")
    history.retract("r-1", "nv-2", NORTHVALE["id"])
    view = history.view()
    assert verdicts(view) == [("northvale-fact-check", "nv-1", "False")]
    assert view["counts"]["retractions"] == 1
    history.retract("r-2", "nv-1", NORTHVALE["id"])
    view = history.view()
    assert (view["reviews"], view["counts"]["reviews"], view["status"]) == ([], 0, "unattested")


def test_a_voided_review_counts_for_nothing_and_a_voided_retraction_restores_the_review() -> None:
    history = History()
    reviewed(history, "nv-1", NORTHVALE, "False")
    reviewed(history, "cv-1", COASTLINE, "True")
    history.void("v-1", "cv-1")
    assert verdicts(history.view()) == [("northvale-fact-check", "nv-1", "False")]
    history.retract("r-1", "nv-1", NORTHVALE["id"])
    assert history.view()["reviews"] == []
    history.void("v-2", "r-1")
    assert verdicts(history.view()) == [("northvale-fact-check", "nv-1", "False")]
    assert history.view()["counts"] == {"assertions": 0, "denials": 0, "retractions": 1, "voids": 2, "reviews": 1}


def test_a_party_who_asserts_and_reviews_keeps_the_two_apart() -> None:
    history = History().act("assert", "a-1", "northvale-fact-check")
    reviewed(history, "nv-1", NORTHVALE, "True")
    history.retract("r-1", "nv-1", NORTHVALE["id"])
    view = history.view()
    assert [(s["holder"]["id"], s["stance"]) for s in view["stances"]] == [("northvale-fact-check", "asserts")]
    assert view["reviews"] == []


def test_time_travel_cuts_reviews_by_version_recorded_time_and_reviewed_at() -> None:
    history = History()
    reviewed(history, "nv-1", NORTHVALE, "False", reviewed_at="2026-02-20", recorded_at="2026-02-21T10:00:00Z")
    reviewed(history, "cv-1", COASTLINE, "Unproven", recorded_at="2026-02-22T10:00:00Z")  # no reviewed_at
    reviewed(history, "nv-2", NORTHVALE, "True", reviewed_at="2026-02-23T08:00:00Z",
             recorded_at="2026-02-23T09:00:00Z")
    history.add("Retracted", "2026-02-24T09:00:00Z", act_id="r-1", retracts="nv-2", party=NORTHVALE,
                said_at="2026-02-24", reason=None, source=None)
    assert verdicts(history.view()) == [("coastline-verify", "cv-1", "Unproven"),
                                        ("northvale-fact-check", "nv-1", "False")]
    assert verdicts(history.view(version=4))[1][1] == "nv-2"
    assert verdicts(history.view(version=2)) == [("northvale-fact-check", "nv-1", "False")]
    at = parse_as_of("2026-02-23T12:00:00Z", "t")
    assert verdicts(history.view(recorded_as_of=at))[1][1] == "nv-2"
    # said_as_of: a review counts from when it was published (reviewed_at, else recorded_at), its
    # retraction from when the reviewer said it.
    assert verdicts(history.view(said_as_of=at))[1][1] == "nv-2"
    assert verdicts(history.view(said_as_of=parse_as_of("2026-02-21", "t"))) == [
        ("northvale-fact-check", "nv-1", "False")]
    assert history.view(said_as_of=parse_as_of("2026-02-19", "t"))["reviews"] == []


def test_a_copied_fold_changes_apart_from_its_original() -> None:
    fold = ClaimFold()
    for body in reviewed(History(), "nv-1", NORTHVALE, "False").bodies:
        fold.apply(body)
    clone = deepcopy(fold)
    clone.apply({"claim_id": "c", "version": 3, "type": "Retracted", "recorded_at": "2026-01-01T00:00:03Z",
                 "prev_hash": "0" * 64, "data": {"act_id": "r-1", "retracts": "nv-1", "party": NORTHVALE}})
    assert clone.view()["reviews"] == []
    assert [r["act_id"] for r in fold.view()["reviews"]] == ["nv-1"]


# The command: one validation for the API body, the fixture line and the ledger.
def review(**fields: Any) -> dict[str, Any]:
    body = {"reviewer": NORTHVALE, "rating": {"text": "False", "value": 1, "best": 5, "worst": 1},
            "url": "https://factcheck.northvale.example/2015/09/putin-elton-john", "reviewed_at": "2015-09-16"}
    body.update(fields)
    return {name: value for name, value in body.items() if value is not ...}


def test_reviewed_is_an_event_like_the_others_with_op_review() -> None:
    assert EVENT_OF_OP["review"] is Claim.Reviewed
    assert OP_OF_TYPE["Reviewed"] == "review"
    command = RecordAct.build("review", CLAIM_KEY, review(summary="No call was logged."))
    assert command.data == {
        "act_id": None, "reviewer": NORTHVALE, "rating": {"text": "False", "value": 1, "best": 5, "worst": 1},
        "url": "https://factcheck.northvale.example/2015/09/putin-elton-john", "reviewed_at": "2015-09-16",
        "summary": "No call was logged.",
    }


@pytest.mark.parametrize(("rating", "kept"), [
    ({"text": "Unproven"}, {"text": "Unproven"}),
    ({"text": "Mostly False", "best": 5, "worst": 1}, {"text": "Mostly False", "best": 5, "worst": 1}),
    ({"text": "Half True", "value": 2.5, "best": 5, "worst": 1}, {"text": "Half True", "value": 2.5, "best": 5, "worst": 1}),
    ({"text": "True", "value": 5.0, "best": 5.0, "worst": 1}, {"text": "True", "value": 5, "best": 5, "worst": 1}),
    ({"text": "Best", "value": 1, "best": 1, "worst": 10}, {"text": "Best", "value": 1, "best": 1, "worst": 10}),
])
def test_good_ratings_are_kept_as_given_with_integral_numbers_as_integers(rating: dict[str, Any],
                                                                          kept: dict[str, Any]) -> None:
    data = RecordAct.build("review", CLAIM_KEY, review(rating=rating)).data
    assert data["rating"] == kept
    assert all(type(data["rating"][n]) is type(kept[n]) for n in kept)


def test_reviewed_at_is_normalised_like_said_at_and_may_be_unknown() -> None:
    assert RecordAct.build("review", CLAIM_KEY, review(reviewed_at="2015-09-16T12:00:00+03:00")).data[
        "reviewed_at"] == "2015-09-16T09:00:00Z"
    assert RecordAct.build("review", CLAIM_KEY, review(reviewed_at=...)).data["reviewed_at"] is None


BAD_REVIEWS = [
    ("no reviewer", review(reviewer=...), "reviewer", "reviewer is required"),
    ("a reviewer that is text", review(reviewer="Northvale"), "reviewer", "reviewer must be an object"),
    ("a reviewer without a name", review(reviewer={"id": "northvale"}), "reviewer.name", "reviewer.name is required"),
    ("no rating", review(rating=...), "rating", "rating is required"),
    ("a rating that is text", review(rating="False"), "rating", "rating must be an object"),
    ("a rating with an unknown field", review(rating={"text": "False", "scale": 5}), "rating",
     "rating has unknown fields ['scale']"),
    ("a rating without text", review(rating={"value": 1, "best": 5, "worst": 1}), "rating.text",
     "rating.text is required"),
    ("a blank rating text", review(rating={"text": "  "}), "rating.text", "at least 1 non-blank"),
    ("a rating text of 201 characters", review(rating={"text": "F" * 201}), "rating.text", "at most 200"),
    ("a value without its scale", review(rating={"text": "False", "value": 1}), "rating.value",
     "rating.value needs rating.best and rating.worst"),
    ("best without worst", review(rating={"text": "False", "best": 5}), "rating.worst", "come together"),
    ("worst without best", review(rating={"text": "False", "worst": 1}), "rating.best", "come together"),
    ("best equal to worst", review(rating={"text": "False", "best": 3, "worst": 3}), "rating.best", "must differ"),
    ("a value above best", review(rating={"text": "False", "value": 6, "best": 5, "worst": 1}), "rating.value",
     "rating.value 6 is outside the scale from worst 1 to best 5"),
    ("a value below worst", review(rating={"text": "False", "value": 0.5, "best": 5, "worst": 1}), "rating.value",
     "outside the scale"),
    ("a value that is text", review(rating={"text": "False", "value": "1", "best": 5, "worst": 1}), "rating.value",
     "rating.value must be a number"),
    ("a value that is a boolean", review(rating={"text": "False", "value": True, "best": 5, "worst": 1}),
     "rating.value", "rating.value must be a number"),
    ("an infinite best", review(rating={"text": "False", "best": float("inf"), "worst": 1}), "rating.best",
     "finite"),
    ("a huge worst", review(rating={"text": "False", "best": 1, "worst": 10**12}), "rating.worst", "must lie between"),
    ("no url", review(url=...), "url", "url is required"),
    ("a relative url", review(url="/checks/1"), "url", "absolute http or https URL"),
    ("an ftp url", review(url="ftp://checks.example/1"), "url", "absolute http or https URL"),
    ("a url without a host", review(url="https:///checks/1"), "url", "with a host"),
    ("a url with a space", review(url="https://checks.example/a b"), "url", "absolute http or https URL"),
    ("a url with a broken port", review(url="https://checks.example:port/1"), "url", "absolute http or https URL"),
    ("a url of 2049 characters", review(url="https://checks.example/" + "a" * 2026), "url", "at most 2048"),
    ("a reviewed_at that is no date", review(reviewed_at="yesterday"), "reviewed_at", "reviewed_at must be"),
    ("a reviewed_at that is no real day", review(reviewed_at="2015-02-30"), "reviewed_at", "not a real date"),
    ("a summary that is a number", review(summary=7), "summary", "summary must be a string"),
    ("a summary of 10001 characters", review(summary="s" * 10_001), "summary", "at most 10000"),
    ("an unknown field", review(verdict="False"), "verdict", "a review act does not take verdict"),
    ("a bad act_id", review(act_id="Not A Slug"), "act_id", "act_id must be a slug"),
]


@pytest.mark.parametrize(("fields", "field", "message"), [c[1:] for c in BAD_REVIEWS], ids=[c[0] for c in BAD_REVIEWS])
def test_each_bad_field_of_a_review_is_refused_naming_it(fields: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        RecordAct.build("review", CLAIM_KEY, fields)
    assert refused.value.field == field
    assert message in str(refused.value)


# The rules, on both backends.
@pytest.fixture
def story(ledger: Ledger) -> Ledger:
    ledger.register_claim(STATEMENT, key=CLAIM_KEY)
    ledger.assert_claim(CLAIM_KEY, **elton_asserts())
    ledger.deny_claim(CLAIM_KEY, **peskov_denies())
    return ledger


def record_review(ledger: Ledger, **fields: Any) -> Any:
    return ledger.execute_one(RecordAct.build("review", CLAIM_KEY, review(**fields)))


def test_a_review_is_recorded_as_one_reviewed_event_and_leaves_the_status_alone(story: Ledger) -> None:
    outcome = record_review(story, act_id="nv-1", rating={"text": "Unproven"})
    assert (outcome.version, outcome.created) == (4, True)
    (event,) = story.read_log(3, 10)
    assert event.type == "Reviewed"
    assert event.body()["data"]["rating"] == {"text": "Unproven"}
    view = story.get_claim(CLAIM_KEY).fold.view()
    assert view["status"] == "disputed"
    assert [r["act_id"] for r in view["reviews"]] == ["nv-1"]


def test_a_review_without_act_id_gets_one_and_the_same_review_again_records_nothing(story: Ledger) -> None:
    made = record_review(story)
    assert made.act_id.startswith("review-")
    again = record_review(story, act_id=made.act_id)
    assert (again.created, again.version) == (False, made.version)
    with pytest.raises(ActIdConflict):
        record_review(story, act_id=made.act_id, rating={"text": "True"})


def test_only_the_reviewer_may_retract_a_review_and_only_once(story: Ledger) -> None:
    record_review(story, act_id="nv-1")
    for party in (ELTON, PESKOV):
        with pytest.raises(NotRetractable, match="only its reviewer \\(northvale-fact-check\\) may"):
            story.retract_act(CLAIM_KEY, retracts="nv-1", party=party)
    story.retract_act(CLAIM_KEY, act_id="nv-withdrawn", retracts="nv-1", party=NORTHVALE)
    with pytest.raises(NotRetractable, match="already retracted"):
        story.retract_act(CLAIM_KEY, retracts="nv-1", party=NORTHVALE)
    with pytest.raises(NotRetractable, match="is a Retracted act"):
        story.retract_act(CLAIM_KEY, retracts="nv-withdrawn", party=NORTHVALE)
    assert story.get_claim(CLAIM_KEY).fold.view()["reviews"] == []


def test_a_reviewer_cannot_retract_a_stance_and_staff_void_a_review_once(story: Ledger) -> None:
    record_review(story, act_id="nv-1")
    with pytest.raises(NotRetractable):
        story.retract_act(CLAIM_KEY, retracts="elton-instagram", party=NORTHVALE)
    story.void_act(CLAIM_KEY, act_id="void-nv-1", voids="nv-1", reason="Recorded on the wrong claim.")
    with pytest.raises(NotVoidable, match="already voided"):
        story.void_act(CLAIM_KEY, voids="nv-1", reason="again")
    with pytest.raises(NotRetractable, match="was voided"):
        story.retract_act(CLAIM_KEY, retracts="nv-1", party=NORTHVALE)
    view = story.get_claim(CLAIM_KEY).fold.view()
    assert (view["reviews"], view["counts"]["voids"], view["status"]) == ([], 1, "disputed")
