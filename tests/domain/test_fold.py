"""The stance/status fold, case by case and by property (pure, no database)."""

from __future__ import annotations

from copy import deepcopy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.fold import ClaimFold, fold_claim
from domain.values import parse_as_of

CLAIM = "72c48e8a-f879-52ec-a580-e3a2e293ffdb"


class History:
    """Builds event bodies the way the aggregate does (versions, recorded times)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.add("ClaimRegistered", statement="Putin phoned Elton John", key="putin-phoned-elton-john",
                 language="en", subjects=[])

    def add(self, kind: str, recorded_at: str | None = None, **data: Any) -> History:
        version = len(self.bodies) + 1
        self.bodies.append({
            "claim_id": CLAIM, "version": version, "type": kind,
            "recorded_at": recorded_at or f"2026-01-01T00:00:{version:02d}Z", "prev_hash": "0" * 64,
            "hash": f"{version:064x}", "data": data,
        })
        return self

    def act(self, kind: str, act_id: str, holder: str, *, speaker: str | None = None,
            said_at: str | None = None, recorded_at: str | None = None) -> History:
        party = {"id": speaker or holder, "name": (speaker or holder).title()}
        behalf = {"id": holder, "name": holder.title()} if speaker else None
        return self.add({"assert": "Asserted", "deny": "Denied"}[kind], recorded_at, act_id=act_id,
                        party=party, on_behalf_of=behalf, said_at=said_at)

    def retract(self, act_id: str, retracts: str, party: str, said_at: str | None = None) -> History:
        return self.add("Retracted", act_id=act_id, retracts=retracts,
                        party={"id": party, "name": party.title()}, said_at=said_at)

    def void(self, act_id: str, voids: str) -> History:
        return self.add("ActVoided", act_id=act_id, voids=voids, reason="recording error")

    def view(self, **cut: Any) -> dict[str, Any]:
        view = fold_claim(self.bodies, **cut)
        assert view is not None
        return view

    def status(self, **cut: Any) -> str:
        return str(self.view(**cut)["status"])


def test_a_claim_with_no_acts_is_unattested() -> None:
    assert History().status() == "unattested"


def test_assertions_alone_make_it_asserted() -> None:
    assert History().act("assert", "a1", "elton").act("assert", "a2", "bernie").status() == "asserted"


def test_denials_alone_make_it_denied() -> None:
    assert History().act("deny", "d1", "putin", speaker="peskov").status() == "denied"


def test_assertions_and_denials_make_it_disputed() -> None:
    h = History().act("assert", "a1", "elton").act("deny", "d1", "putin", speaker="peskov")
    assert h.status() == "disputed"


def test_every_act_retracted_makes_it_retracted() -> None:
    h = History().act("assert", "a1", "elton").retract("r1", "a1", "elton")
    assert h.status() == "retracted"
    assert h.view()["stances"][0]["stance"] == "withdrawn"


def test_voided_acts_count_for_nothing() -> None:
    h = History().act("assert", "a1", "elton").void("v1", "a1")
    assert h.status() == "unattested"
    assert h.view()["stances"] == []
    assert h.view()["counts"] == {"assertions": 1, "denials": 0, "retractions": 0, "voids": 1, "reviews": 0}


def test_a_retracted_then_voided_act_leaves_nothing_retracted() -> None:
    h = History().act("assert", "a1", "elton").retract("r1", "a1", "elton").void("v1", "a1")
    assert h.status() == "unattested"


def test_the_stance_is_the_latest_act_by_said_at_not_by_recording_order() -> None:
    h = (History().act("deny", "d1", "elton", said_at="2015-09-20")
         .act("assert", "a1", "elton", said_at="2015-09-14"))
    assert h.view()["stances"][0]["stance"] == "denies"


def test_without_said_at_recorded_at_orders_the_acts() -> None:
    h = (History().act("assert", "a1", "elton", recorded_at="2026-01-01T00:00:10Z")
         .act("deny", "d1", "elton", recorded_at="2026-01-01T00:00:20Z"))
    assert h.view()["stances"][0]["act_id"] == "d1"


def test_equal_said_at_falls_back_to_version() -> None:
    h = (History().act("assert", "a1", "elton", said_at="2015-09-14")
         .act("deny", "d1", "elton", said_at="2015-09-14"))
    assert h.view()["stances"][0]["act_id"] == "d1"


def test_retracting_the_latest_act_falls_back_to_the_holders_earlier_act() -> None:
    h = (History().act("assert", "a1", "elton", said_at="2015-09-14")
         .act("deny", "d1", "elton", said_at="2015-09-16").retract("r1", "d1", "elton"))
    assert h.view()["stances"][0]["act_id"] == "a1"
    assert h.status() == "asserted"


def test_one_holder_withdrawn_and_one_asserting_is_asserted() -> None:
    h = (History().act("assert", "a1", "elton").act("deny", "d1", "putin")
         .retract("r1", "d1", "putin"))
    assert h.status() == "asserted"


def test_version_cut_shows_the_claim_as_it_was() -> None:
    h = History().act("assert", "a1", "elton").act("deny", "d1", "putin")
    assert h.status(version=2) == "asserted"
    assert h.view(version=2)["version"] == 2


def test_recorded_as_of_shows_what_the_ledger_knew() -> None:
    h = (History().act("assert", "a1", "elton", recorded_at="2026-01-01T00:00:10Z")
         .act("deny", "d1", "putin", recorded_at="2026-02-01T00:00:00Z"))
    assert h.status(recorded_as_of=parse_as_of("2026-01-15", "t")) == "asserted"
    assert fold_claim(h.bodies, recorded_as_of=datetime(2025, 1, 1, tzinfo=UTC)) is None


def test_said_as_of_shows_the_world_then_as_known_now() -> None:
    h = (History().act("assert", "a1", "elton", said_at="2015-09-14")
         .act("deny", "d1", "putin", said_at="2015-09-15T09:00:00Z"))
    assert h.status(said_as_of=parse_as_of("2015-09-14", "t")) == "asserted"
    assert h.status(said_as_of=parse_as_of("2015-09-15T08:59:59Z", "t")) == "asserted"
    assert h.status(said_as_of=parse_as_of("2015-09-15T09:00:00Z", "t")) == "disputed"


def test_a_date_only_said_at_counts_as_said_on_that_day() -> None:
    h = History().act("assert", "a1", "elton", said_at="2015-09-14")
    assert h.status(said_as_of=parse_as_of("2015-09-14T00:00:00Z", "t")) == "asserted"
    assert h.status(said_as_of=parse_as_of("2015-09-13", "t")) == "unattested"


def test_voids_count_on_the_said_axis_whenever_they_were_recorded() -> None:
    h = History().act("assert", "a1", "elton", said_at="2015-09-14").void("v1", "a1")
    assert h.status(said_as_of=parse_as_of("2015-09-30", "t")) == "unattested"


def test_time_axes_combine() -> None:
    h = (History().act("assert", "a1", "elton", said_at="2015-09-14", recorded_at="2026-01-01T00:00:10Z")
         .act("deny", "d1", "putin", said_at="2015-09-10", recorded_at="2026-03-01T00:00:00Z"))
    known_in_jan = parse_as_of("2026-01-31", "t")
    assert h.status(recorded_as_of=known_in_jan, said_as_of=parse_as_of("2015-09-12", "t")) == "unattested"
    assert h.status(said_as_of=parse_as_of("2015-09-12", "t")) == "denied"


# Property tests: any act sequence folds deterministically and incrementally.
HOLDERS = ["elton", "putin", "bernie"]


@st.composite
def histories(draw: st.DrawFn) -> History:
    h = History()
    acts: list[tuple[str, str]] = []  # (act_id, holder)
    voidable: list[str] = []  # stance acts and retractions
    for i in range(draw(st.integers(0, 25))):
        choice = draw(st.sampled_from(["assert", "deny", "retract", "void"]))
        said = draw(st.one_of(st.none(), st.sampled_from(["2015-09-14", "2015-09-15", "2015-09-15T10:00:00Z"])))
        if choice in ("assert", "deny") or not acts:
            holder = draw(st.sampled_from(HOLDERS))
            h.act(choice if choice in ("assert", "deny") else "assert", f"a{i}", holder, said_at=said)
            acts.append((f"a{i}", holder))
            voidable.append(f"a{i}")
        elif choice == "retract":
            act_id, holder = draw(st.sampled_from(acts))
            h.retract(f"r{i}", act_id, holder, said_at=said)
            voidable.append(f"r{i}")
        else:
            h.void(f"v{i}", draw(st.sampled_from(voidable)))
    return h


# (kind, holder, speaker or None, said_at): each said at a different minute, so that "the
# latest by said_at" has one answer whatever the recording order.
StanceAct = tuple[str, str, str | None, str]
RETRACTED_AT = "2015-09-20"  # every retraction here is said after every act it retracts


@st.composite
def stance_acts(draw: st.DrawFn) -> list[StanceAct]:
    minutes = draw(st.lists(st.integers(0, 24 * 60 - 1), max_size=12, unique=True))
    return [
        (draw(st.sampled_from(["assert", "deny"])), draw(st.sampled_from(HOLDERS)),
         draw(st.sampled_from([None, "peskov"])), f"2015-09-14T{m // 60:02d}:{m % 60:02d}:00Z")
        for m in minutes
    ]


def expected_view(acts: list[StanceAct], retracted: set[int]) -> tuple[list[dict[str, Any]], str, dict[str, int]]:
    """Stances, status and counts worked out from the rules directly, not by a fold: each
    holder (on whose behalf an act is said) stands by its latest standing act by said_at;
    with every act retracted, by the retraction of its latest act."""
    def named(who: str) -> dict[str, str]:
        return {"id": who, "name": who.title()}

    stances = []
    for holder in sorted({holder for _, holder, _, _ in acts}):
        mine = [i for i, (_, h, _, _) in enumerate(acts) if h == holder]
        standing = [i for i in mine if i not in retracted]
        latest = max(standing or mine, key=lambda i: acts[i][3])  # one format: text order is time order
        kind, _, speaker, said_at = acts[latest]
        if standing:
            stances.append({"holder": named(holder), "party": named(speaker or holder),
                            "stance": {"assert": "asserts", "deny": "denies"}[kind],
                            "act_id": f"a{latest}", "said_at": said_at})
        else:
            stances.append({"holder": named(holder), "party": named(speaker or holder),
                            "stance": "withdrawn", "act_id": f"r{latest}", "said_at": RETRACTED_AT})
    kinds = {s["stance"] for s in stances}
    status = ("disputed" if {"asserts", "denies"} <= kinds else "asserted" if "asserts" in kinds
              else "denied" if "denies" in kinds else "retracted" if kinds else "unattested")
    counts = {"assertions": sum(a[0] == "assert" for a in acts), "denials": sum(a[0] == "deny" for a in acts),
              "retractions": len(retracted), "voids": 0, "reviews": 0}
    return stances, status, counts


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_each_holders_stance_is_its_latest_act_by_said_at_in_any_recording_order(data: st.DataObject) -> None:
    # The acts are recorded in a drawn permutation (retractions after them, also permuted):
    # the recording order must not change any stance, only said_at decides.
    acts = data.draw(stance_acts(), label="acts")
    retracted = data.draw(st.sets(st.sampled_from(range(len(acts)))), label="retracted") if acts else set()
    h = History()
    for i in data.draw(st.permutations(range(len(acts))), label="recording order"):
        kind, holder, speaker, said_at = acts[i]
        h.act(kind, f"a{i}", holder, speaker=speaker, said_at=said_at)
    for i in data.draw(st.permutations(sorted(retracted)), label="retraction order"):
        h.retract(f"r{i}", f"a{i}", acts[i][2] or acts[i][1], said_at=RETRACTED_AT)
    stances, status, counts = expected_view(acts, retracted)
    view = h.view()
    assert view["stances"] == stances
    assert view["status"] == status
    assert view["counts"] == counts


@settings(max_examples=200, deadline=None)
@given(histories())
def test_folding_incrementally_equals_folding_from_scratch(h: History) -> None:
    fold = ClaimFold()
    for i, body in enumerate(h.bodies, start=1):
        fold.apply(body)
        assert fold.view() == fold_claim(h.bodies, version=i)


@settings(max_examples=200, deadline=None)
@given(histories(), st.integers(1, 26))
def test_a_copied_fold_goes_on_alone(h: History, cut: int) -> None:
    """The writer's copies of a fold (deepcopy) share nothing that a later event changes."""
    fold = ClaimFold()
    for body in h.bodies[:cut]:
        fold.apply(body)
    fold.view()  # work out (and remember) the stances so far
    copy = deepcopy(fold)
    for body in h.bodies[cut:]:
        copy.apply(body)
    assert copy.view() == fold_claim(h.bodies)
    assert fold.view() == fold_claim(h.bodies, version=min(cut, len(h.bodies)))


@settings(max_examples=200, deadline=None)
@given(histories())
def test_status_agrees_with_the_stances(h: History) -> None:
    view = h.view()
    stances = {s["stance"] for s in view["stances"]}
    expected = {
        (True, True): "disputed", (True, False): "asserted", (False, True): "denied",
    }.get(("asserts" in stances, "denies" in stances))
    if expected is None:
        expected = "retracted" if stances else "unattested"
    assert view["status"] == expected
    assert len({s["holder"]["id"] for s in view["stances"]}) == len(view["stances"])


@pytest.mark.parametrize("bad", ["yesterday", "2015-13-01", "2015-09-14T25:00:00Z"])
def test_time_travel_bounds_must_be_dates_or_date_times(bad: str) -> None:
    from domain.errors import InvalidInput

    with pytest.raises(InvalidInput):
        parse_as_of(bad, "said_as_of")
