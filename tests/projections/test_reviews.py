"""Reviews in the read models, on both backends: the reviews table follows reviews, their
retraction and voiding and the claim's status; tables made before reviews gain them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from audit.verify import verify_store
from domain.commands import RecordAct
from service.runtime import Runtime
from tests.projections.test_projections import seed_story, snapshot
from tests.story import CLAIM_KEY, ELTON

NORTHVALE = {"id": "northvale-fact-check", "name": "Northvale Fact Check"}
COASTLINE = {"id": "coastline-verify", "name": "Coastline Verify"}


@pytest.fixture
def runtime(database_url: str) -> Iterator[Runtime]:
    rt = Runtime.open(database_url)
    yield rt
    rt.close()


def review(rt: Runtime, act_id: str, reviewer: dict[str, str], text: str, **fields: Any) -> None:
    rt.ledger.execute_one(RecordAct.build("review", CLAIM_KEY, {
        "act_id": act_id, "reviewer": reviewer, "rating": {"text": text},
        "url": f"https://checks.example/{act_id}", **fields,
    }))


def review_rows(rt: Runtime) -> list[tuple[str, str, str]]:
    with rt.store.reading() as cur:
        rows = cur.execute("SELECT reviewer_id, act_id, item FROM rm_reviews ORDER BY reviewer_id").fetchall()
    return [(r, a, json.loads(item)["status"]) for r, a, item in rows]


def test_review_rows_follow_reviews_retractions_voids_and_the_claims_status(runtime: Runtime) -> None:
    seed_story(runtime)
    review(runtime, "nv-1", NORTHVALE, "False", reviewed_at="2015-09-16")
    review(runtime, "cv-1", COASTLINE, "Unproven")
    runtime.engine.catch_up()
    assert review_rows(runtime) == [("coastline-verify", "cv-1", "disputed"), ("northvale-fact-check", "nv-1", "disputed")]
    review(runtime, "nv-2", NORTHVALE, "Misleading", reviewed_at="2015-09-18")
    runtime.ledger.retract_act(CLAIM_KEY, act_id="cv-withdrawn", retracts="cv-1", party=COASTLINE)
    runtime.ledger.retract_act(CLAIM_KEY, retracts="elton-instagram", party=ELTON)  # the status changes
    runtime.engine.catch_up()
    assert review_rows(runtime) == [("northvale-fact-check", "nv-2", "denied")]
    runtime.ledger.void_act(CLAIM_KEY, voids="cv-withdrawn", reason="Filed under the wrong claim")
    runtime.ledger.void_act(CLAIM_KEY, voids="nv-2", reason="Recorded twice")
    runtime.engine.catch_up()
    assert review_rows(runtime) == [("coastline-verify", "cv-1", "denied"), ("northvale-fact-check", "nv-1", "denied")]
    page = runtime.read.party(NORTHVALE["id"])
    assert page is not None
    assert (page["name"], page["stances"], [r["act_id"] for r in page["reviews"]]) == (NORTHVALE["name"], [], ["nv-1"])
    incremental = snapshot(runtime)
    runtime.engine.rebuild()
    assert snapshot(runtime) == incremental


def test_read_models_made_before_reviews_gain_the_table_and_the_view_fields_on_opening(database_url: str) -> None:
    rt = Runtime.open(database_url)
    try:
        seed_story(rt)
        rt.ledger.register_claim("Elton John met Vladimir Putin in Moscow", key="elton-met-putin")
        rt.engine.catch_up()
        expected = snapshot(rt)
        with rt.store.transaction() as cur:  # the read models as the version before reviews left them
            cur.execute("DROP TABLE rm_reviews")
            for claim_id, text in cur.execute("SELECT claim_id, view FROM rm_claims").fetchall():
                view = json.loads(text)
                del view["reviews"], view["counts"]["reviews"]
                cur.execute("UPDATE rm_claims SET view = ? WHERE claim_id = ?", (json.dumps(view), claim_id))
    finally:
        rt.close()
    rt = Runtime.open(database_url)
    try:
        assert snapshot(rt) == expected  # the very text a fold writes, and an empty reviews table
        review(rt, "nv-1", NORTHVALE, "False")
        rt.engine.catch_up()
        assert review_rows(rt) == [("northvale-fact-check", "nv-1", "disputed")]
        assert verify_store(rt).ok
    finally:
        rt.close()
