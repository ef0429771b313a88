"""`claims audit` takes a ledger with reviews, retracted and voided ones too: the fold the
auditor rebuilds with shows the reviews the server serves (`claims verify` on reviews:
tests/projections/test_reviews.py)."""

from __future__ import annotations

from pathlib import Path

from domain.commands import RecordAct
from fixtures.replay import FIXTURES_DIR, import_fixture
from store.event_store import open_ledger
from store.settings import Database
from tests.audit.test_audit import start_server
from tests.conftest import new_database_url

STORY = FIXTURES_DIR / "reviews" / "glenharrow-reservoir.jsonl"
RESERVOIR = "glenharrow-reservoir-below-20-percent"


def test_audit_holds_on_a_ledger_with_reviews_as_it_grows(tmp_path: Path) -> None:
    url = new_database_url("sqlite", tmp_path)
    ledger = open_ledger(Database.from_url(url))
    try:
        import_fixture(ledger, STORY)
    finally:
        ledger.close()
    served = start_server(url, tmp_path)
    kept = tmp_path / "checkpoint.json"
    try:
        first = served.audit(kept)
        assert first.ok, first.lines()
        assert (first.events, first.claims) == (14, 2)
        ledger = open_ledger(Database.from_url(url))
        try:  # the ledger goes on: Coastline Verify reviews the reservoir claim again
            ledger.execute_one(RecordAct.build("review", RESERVOIR, {
                "act_id": "coastline-second-look", "reviewer": {"id": "coastline-verify", "name": "Coastline Verify"},
                "rating": {"text": "False", "value": 0, "best": 10, "worst": 0},
                "url": "https://coastline-verify.example/checks/glenharrow-reservoir-2", "reviewed_at": "2023-09-01",
            }))
        finally:
            ledger.close()
        later = served.audit(kept)
        assert later.ok, later.lines()
        assert later.events == 15
        served_view = served.get(f"/v1/claims/{RESERVOIR}", token=None).json()
        assert [r["act_id"] for r in served_view["reviews"]] == ["coastline-second-look", "northvale-verdict"]
    finally:
        served.stop()
