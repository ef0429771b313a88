"""A server whose clock is behind the claim's newest event (its clock stepped back, or another
writer with a clock ahead recorded that event) stamps its writes no earlier than that event.

The event ahead is recorded by another writer on the same store with a fixed `recorded_at`
(tests/domain/test_clock.py has the rule at the Ledger); the API's group writer, which has
the claim in its cache, follows the log and stamps the next act over HTTP at that time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.commands import RecordAct
from domain.values import format_instant, instant_of
from store.event_store import open_ledger
from store.settings import Database
from tests.api import story
from tests.api.conftest import Api


def test_an_act_over_http_is_not_recorded_before_the_claims_previous_event_stamped_ahead_of_the_servers_clock(
    api: Api,
) -> None:
    api.seed()  # the server's writer has the claim cached, at version 3
    ahead = (datetime.now(UTC) + timedelta(hours=6)).replace(microsecond=654321)
    other = open_ledger(Database.from_url(api.url))
    try:
        other.execute_one(RecordAct.build("retract", story.KEY, {"retracts": "elton-instagram", "party": story.ELTON,
                                                                  "act_id": "r1"}, recorded_at=ahead))
    finally:
        other.close()

    voided = api.act("voids", {"voids": "r1", "reason": "Recorded in error"})
    assert voided["version"] == 5
    history = api.read(f"/v1/claims/{story.KEY}/history", voided["position"]).json()["events"]
    stamps = [e["recorded_at"] for e in history]
    assert stamps[3:] == [format_instant(ahead), format_instant(ahead)]
    assert [instant_of(s) for s in stamps] == sorted(instant_of(s) for s in stamps)
    claim = api.read(f"/v1/claims/{story.KEY}", voided["position"]).json()
    assert claim["updated_at"] == format_instant(ahead)
