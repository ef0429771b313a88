"""A claim's history as every format reads it: its events (the history shape of
`GET /v1/claims/{id}/history`), folded once by the domain's one fold.

Each format takes a claim's history items and nothing else: the view (status, stances,
reviews) is the fold of those very events, so a format of a claim at a past moment is the
format of the history cut at that moment, and the two can never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from domain.fold import ActState, ClaimFold

Json = dict[str, Any]

# The members of a history item that are the event's envelope, not its data.
ENVELOPE = frozenset({"position", "version", "type", "recorded_at", "prev_hash", "hash", "claim_id"})


@dataclass(frozen=True)
class ClaimHistory:
    """One claim's history items, its view and each act's state (retracted or voided by whom)."""

    claim_id: str
    events: list[Json]
    view: Json
    acts: dict[str, ActState]

    @property
    def registration(self) -> Json:
        return self.events[0]

    def act_events(self) -> Iterable[Json]:
        return (event for event in self.events if event["type"] != "ClaimRegistered")


def body_of(claim_id: str, item: Json) -> Json:
    """The event body the fold takes, from a history item."""
    return {
        "claim_id": claim_id, "version": item["version"], "type": item["type"],
        "recorded_at": item["recorded_at"], "prev_hash": item.get("prev_hash"), "hash": item.get("hash"),
        "data": {name: value for name, value in item.items() if name not in ENVELOPE},
    }


def folded(claim_id: str, events: list[Json]) -> ClaimHistory:
    """The history with its fold; `events` start with the claim's registration."""
    if not events or events[0]["type"] != "ClaimRegistered":
        raise ValueError("a claim's history starts with its ClaimRegistered event")
    fold = ClaimFold()
    fold.keeps_data = False
    for item in events:
        fold.apply(body_of(claim_id, item))
    return ClaimHistory(claim_id, events, fold.view(), fold.acts)
