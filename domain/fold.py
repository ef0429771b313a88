"""The one definition of how a claim's events fold into stances, a status and reviews.

Everything that shows a status — the aggregate's rule checks, the projections, time
travel, fixture checks and the auditor's local rebuild — folds event bodies through
:class:`ClaimFold`. The fold is lenient (it never raises on a broken rule: the
aggregate enforces rules before events exist) so it can replay any filtered slice of
a history.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from domain.values import instant_of

Json = dict[str, Any]


class ClaimStatus(StrEnum):
    UNATTESTED = "unattested"
    ASSERTED = "asserted"
    DENIED = "denied"
    DISPUTED = "disputed"
    RETRACTED = "retracted"


class Stance(StrEnum):
    ASSERTS = "asserts"
    DENIES = "denies"
    WITHDRAWN = "withdrawn"


STANCE_OF_TYPE = {"Asserted": Stance.ASSERTS, "Denied": Stance.DENIES}
REVIEW = "Reviewed"
# The acts with a time on the said axis, and the field that holds it: for a review, when the
# reviewer published it (reviewed_at), the said-time of a verdict.
SAID_FIELD = {"Asserted": "said_at", "Denied": "said_at", "Retracted": "said_at", REVIEW: "reviewed_at"}
COUNTED = {"Asserted": "assertions", "Denied": "denials", "Retracted": "retractions", "ActVoided": "voids"}
ACT_TYPES = frozenset({*COUNTED, REVIEW})
RATING_ORDER = ("text", "value", "best", "worst")


@dataclass(slots=True)
class ActState:
    """What the fold remembers of one act (assertion, denial, retraction, void or review).

    A review's party and holder are its reviewer, its said_at its reviewed_at, and
    `review` its entry in the claim's `reviews`."""

    act_id: str
    type: str
    version: int
    party: Json | None
    holder: Json | None
    said_at: str | None
    moment: str  # when it was said on the said axis (recorded_at where said_at is unknown)
    target: str | None = None
    retracted_by: str | None = None
    voided_by: str | None = None
    data: Json = field(default_factory=dict)
    review: Json | None = None

    @property
    def order(self) -> tuple[datetime, int]:
        """Its place among a holder's acts: said time, then version. Parsed only when a
        holder has several acts to choose from."""
        return instant_of(self.moment), self.version

    @property
    def is_stance(self) -> bool:
        return self.type in STANCE_OF_TYPE

    @property
    def is_review(self) -> bool:
        return self.type == REVIEW

    @property
    def standing(self) -> bool:
        return not self.retracted_by and not self.voided_by

    def copy(self) -> ActState:
        """A copy whose retraction/void marks can change; the event data is never mutated."""
        return ActState(
            self.act_id, self.type, self.version, self.party, self.holder, self.said_at, self.moment,
            self.target, self.retracted_by, self.voided_by, self.data, self.review,
        )


def said_instant(data: Json, recorded_at: str, field: str = "said_at") -> datetime:
    """When an act was said, on the said axis: recorded_at where its said time (`field`:
    said_at, a review's reviewed_at) is unknown."""
    said_at = data.get(field)
    return instant_of(said_at if said_at else recorded_at)


def review_entry(act_id: str, version: int, recorded_at: str, data: Json) -> Json:
    """A review as the claim's `reviews` list shows it (summary only when given), its
    rating's members in a fixed order (stored data has its keys sorted)."""
    rating = data.get("rating")
    rating = rating if isinstance(rating, dict) else {}
    entry: Json = {
        "act_id": act_id, "reviewer": data.get("reviewer"),
        "rating": {name: rating[name] for name in RATING_ORDER if name in rating},
        "url": data.get("url"), "reviewed_at": data.get("reviewed_at"),
    }
    if data.get("summary") is not None:
        entry["summary"] = data["summary"]
    entry["version"] = version
    entry["recorded_at"] = recorded_at
    return entry


class ClaimFold:
    """Folds one claim's event bodies, in version order, into its current view.

    Reviews are fact-checkers' verdicts, not stances: they never change the status. The
    claim's `reviews` hold each reviewer's latest standing review (neither retracted nor
    voided), by reviewed_at (recorded_at where unknown), then version."""

    # Each act's data is kept for the aggregate's idempotent-retry check; a read model
    # folding millions of acts has no use for it.
    keeps_data = True

    def __init__(self) -> None:
        self.claim_id: str | None = None
        self.key: str | None = None
        self.statement: str | None = None
        self.language = "en"
        self.subjects: list[str] = []
        self.registered_at: str | None = None
        self.updated_at: str | None = None
        self.version = 0
        self.last_hash: str | None = None
        self.acts: dict[str, ActState] = {}
        self.counts = {"assertions": 0, "denials": 0, "retractions": 0, "voids": 0}
        # Each holder's stance acts (voided ones too), and each holder's stance as last
        # worked out (None: no stance), dropped whenever an event changes one of its acts:
        # a claim's stances cost, per event, the holders that event touched, not all acts.
        self._holders: dict[str, dict[str, ActState]] = {}
        self._stance_of: dict[str, Json | None] = {}
        self._holder_order: list[str] | None = []
        # Each reviewer's reviews (retracted and voided ones too).
        self._reviewers: dict[str, dict[str, ActState]] = {}

    @property
    def registered(self) -> bool:
        return self.claim_id is not None

    def __deepcopy__(self, memo: dict[int, Any]) -> ClaimFold:
        # Claims are deep-copied out of the writer's cache for every command; copying
        # only what a later event can change keeps that cheap for long histories.
        clone = ClaimFold.__new__(ClaimFold)
        clone.__dict__.update(self.__dict__)
        clone.subjects = list(self.subjects)
        clone.counts = dict(self.counts)
        clone.acts = {act_id: act.copy() for act_id, act in self.acts.items()}
        clone._holders = {}
        clone._reviewers = {}
        for act in clone.acts.values():
            if act.is_stance and act.holder:
                clone._holders.setdefault(act.holder["id"], {})[act.act_id] = act
            elif act.is_review and act.holder:
                clone._reviewers.setdefault(act.holder["id"], {})[act.act_id] = act
        clone._stance_of = dict(self._stance_of)
        return clone

    def _touch(self, act: ActState | None) -> None:
        """Forget the stance of the holder of `act`, a stance act whose marks changed."""
        if act is not None and act.holder and act.is_stance:
            self._stance_of.pop(act.holder["id"], None)

    def apply(self, body: Json) -> None:
        kind = body["type"]
        data = body["data"]
        self.version = body["version"]
        self.updated_at = body["recorded_at"]
        self.last_hash = body.get("hash", self.last_hash)
        if kind == "ClaimRegistered":
            self.claim_id = body["claim_id"]
            self.key = data["key"]
            self.statement = data["statement"]
            self.language = data.get("language") or "en"
            self.subjects = list(data.get("subjects") or [])
            self.registered_at = body["recorded_at"]
            return
        if kind not in ACT_TYPES:
            return
        if kind in COUNTED:
            self.counts[COUNTED[kind]] += 1
        kept = data if self.keeps_data else {}
        act_id = data.get("act_id") or f"v{body['version']}"
        if kind == REVIEW:
            reviewer = data.get("reviewer")
            act = ActState(
                act_id, kind, body["version"], reviewer, reviewer, data.get("reviewed_at"),
                data.get("reviewed_at") or body["recorded_at"], data=kept,
                review=review_entry(act_id, body["version"], body["recorded_at"], data),
            )
        elif kind in STANCE_OF_TYPE:
            act = ActState(
                act_id, kind, body["version"], data.get("party"),
                data.get("on_behalf_of") or data.get("party"), data.get("said_at"),
                data.get("said_at") or body["recorded_at"], data=kept,
            )
        elif kind == "Retracted":
            act = ActState(
                act_id, kind, body["version"], data.get("party"), data.get("party"),
                data.get("said_at"), data.get("said_at") or body["recorded_at"],
                target=data.get("retracts"), data=kept,
            )
            target = self.acts.get(act.target or "")
            if target is not None and (target.is_stance or target.is_review) and target.standing:
                target.retracted_by = act_id
                self._touch(target)
        else:  # ActVoided
            act = ActState(
                act_id, kind, body["version"], None, None, None, body["recorded_at"],
                target=data.get("voids"), data=kept,
            )
            target = self.acts.get(act.target or "")
            if target is not None and not target.voided_by and target.type != "ActVoided":
                target.voided_by = act_id
                self._touch(target)
                # A voided retraction never happened: its act stands again.
                withdrawn = self.acts.get(target.target or "") if target.type == "Retracted" else None
                if withdrawn is not None and withdrawn.retracted_by == target.act_id:
                    withdrawn.retracted_by = None
                    self._touch(withdrawn)
        replaced = self.acts.get(act_id)
        if replaced is not None and replaced.is_stance and replaced.holder:  # a broken history only
            self._holders.get(replaced.holder["id"], {}).pop(act_id, None)
            self._touch(replaced)
        elif replaced is not None and replaced.is_review and replaced.holder:
            self._reviewers.get(replaced.holder["id"], {}).pop(act_id, None)
        self.acts[act_id] = act
        if act.is_review and act.holder:
            self._reviewers.setdefault(act.holder["id"], {})[act_id] = act
            return
        if act.is_stance and act.holder:
            holder_id = act.holder["id"]
            acts = self._holders.get(holder_id)
            if acts is None:
                acts = self._holders[holder_id] = {}
                self._holder_order = None
            acts[act_id] = act
            self._stance_of.pop(holder_id, None)

    def stances(self) -> list[Json]:
        """Each holder's stance, by holder id."""
        if self._holder_order is None:
            self._holder_order = sorted(self._holders)
        stances = []
        for holder_id in self._holder_order:
            try:
                stance = self._stance_of[holder_id]
            except KeyError:
                stance = self._stance_of[holder_id] = self._stance(self._holders[holder_id].values())
            if stance is not None:
                stances.append(stance)
        return stances

    def _stance(self, held: Iterable[ActState]) -> Json | None:
        """A holder's stance from its stance acts: its latest standing one, else its withdrawal
        of the last one; None when every one of them was voided."""
        acts = [a for a in held if not a.voided_by]
        if not acts:
            return None
        standing = [a for a in acts if not a.retracted_by]
        if standing:
            latest = standing[0] if len(standing) == 1 else max(standing, key=lambda a: a.order)
            return {
                "holder": latest.holder, "party": latest.party,
                "stance": str(STANCE_OF_TYPE[latest.type]),
                "act_id": latest.act_id, "said_at": latest.said_at,
            }
        last = acts[0] if len(acts) == 1 else max(acts, key=lambda a: a.order)
        retraction = self.acts[last.retracted_by or ""]
        return {
            "holder": last.holder, "party": retraction.party,
            "stance": str(Stance.WITHDRAWN),
            "act_id": retraction.act_id, "said_at": retraction.said_at,
        }

    @property
    def reviewed(self) -> bool:
        """Whether any review (standing or not) was folded in."""
        return bool(self._reviewers)

    def reviews(self) -> list[Json]:
        """Each reviewer's latest standing review, by reviewer id."""
        reviews = []
        for reviewer_id in sorted(self._reviewers):
            standing = [a for a in self._reviewers[reviewer_id].values() if a.standing]
            if standing:
                latest = standing[0] if len(standing) == 1 else max(standing, key=lambda a: a.order)
                assert latest.review is not None
                reviews.append(latest.review)
        return reviews

    def view(self) -> Json:
        """The claim's read shape (GET /v1/claims/{id})."""
        stances = self.stances()
        reviews = self.reviews()
        return {
            "id": self.claim_id, "key": self.key, "statement": self.statement,
            "language": self.language, "subjects": list(self.subjects),
            "status": str(status_of(stances)), "stances": stances, "reviews": reviews,
            "counts": {**self.counts, "reviews": len(reviews)}, "version": self.version,
            "registered_at": self.registered_at, "updated_at": self.updated_at,
        }


def status_of(stances: list[Json]) -> ClaimStatus:
    asserting = sum(1 for s in stances if s["stance"] == Stance.ASSERTS)
    denying = sum(1 for s in stances if s["stance"] == Stance.DENIES)
    if asserting and denying:
        return ClaimStatus.DISPUTED
    if asserting:
        return ClaimStatus.ASSERTED
    if denying:
        return ClaimStatus.DENIED
    if stances:  # every holder withdrawn
        return ClaimStatus.RETRACTED
    return ClaimStatus.UNATTESTED


def select_events(
    bodies: Iterable[Json],
    *,
    version: int | None = None,
    recorded_as_of: datetime | None = None,
    said_as_of: datetime | None = None,
) -> list[Json]:
    """The events a time-travel question sees.

    ``version`` and ``recorded_as_of`` cut the history as the ledger knew it;
    ``said_as_of`` keeps the acts said by then (voids always count: the party never
    said the voided act), reviews by when they were published (reviewed_at).
    """
    chosen = []
    for body in bodies:
        if version is not None and body["version"] > version:
            break
        if recorded_as_of is not None and instant_of(body["recorded_at"]) > recorded_as_of:
            continue
        said_later = (
            said_as_of is not None and body["type"] in SAID_FIELD
            and said_instant(body["data"], body["recorded_at"], SAID_FIELD[body["type"]]) > said_as_of
        )
        if not said_later:
            chosen.append(body)
    return chosen


def fold_claim(
    bodies: Iterable[Json],
    *,
    version: int | None = None,
    recorded_as_of: datetime | None = None,
    said_as_of: datetime | None = None,
) -> Json | None:
    """The claim's view after the chosen events; None when it was not registered yet."""
    fold = ClaimFold()
    for body in select_events(
        bodies, version=version, recorded_as_of=recorded_as_of, said_as_of=said_as_of
    ):
        fold.apply(body)
    return fold.view() if fold.registered else None
