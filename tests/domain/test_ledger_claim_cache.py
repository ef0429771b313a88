"""The Ledger's claim cache: it follows the log, so a batch needs no query per claim, and it is never wrong.

Each `Ledger` here stands for one API process's group-commit writer; two of them on one
store are two `claims serve --workers` processes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from eventsourcing.persistence import PersistenceError

from domain import Ledger
from domain import ledger as ledger_module
from domain.claim import Claim
from domain.commands import RecordAct, RegisterClaim
from domain.errors import StoreUnavailable, UnknownAct
from store.event_store import open_ledger
from store.settings import Database
from tests.api import story
from tests.conftest import drop_schema, new_database_url


@pytest.fixture(params=["sqlite", "postgres"])
def two_writers(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[tuple[Ledger, Ledger]]:
    url = new_database_url(request.param, tmp_path)  # type: ignore[arg-type]
    first, second = open_ledger(Database.from_url(url)), open_ledger(Database.from_url(url))
    try:
        yield first, second
    finally:
        first.close()
        second.close()
        drop_schema(url)


def act(op: str, fields: dict[str, object]) -> RecordAct:
    return RecordAct.build(op, story.KEY, fields)


def register(ledger: Ledger) -> None:
    ledger.execute_one(RegisterClaim.build(story.registration()))


def test_a_batch_sees_every_event_another_writer_stored_before_it(two_writers: tuple[Ledger, Ledger]) -> None:
    a, b = two_writers
    register(a)
    a.execute_one(act("assert", story.elton_asserts()))  # the claim is now in a's cache
    b.execute_one(act("deny", story.peskov_denies()))
    outcome = a.execute_one(act("retract", {"retracts": "peskov-tass", "party": story.PESKOV, "act_id": "r1"}))
    assert outcome.version == 4
    claim = a.get_claim(story.KEY)
    assert [claim.act(i) is not None for i in ("elton-instagram", "peskov-tass", "r1")] == [True, True, True]


def test_a_refused_command_leaves_the_cached_claim_as_stored(two_writers: tuple[Ledger, Ledger]) -> None:
    a, _ = two_writers
    register(a)
    outcomes = a.execute([
        act("assert", story.elton_asserts()),
        act("retract", {"retracts": "no-such-act", "party": story.ELTON, "act_id": "r1"}),
    ])
    assert isinstance(outcomes[1].error, UnknownAct)
    a.execute([act("assert", story.elton_asserts(act_id="second")),
               act("retract", {"retracts": "no-such-act", "party": story.ELTON, "act_id": "r2"})])
    third = a.execute_one(act("deny", story.peskov_denies()))
    assert third.version == 4  # registered, two assertions, this denial: nothing of the refused ones


def test_a_stale_cached_claim_costs_a_retry_and_loses_no_command(
    two_writers: tuple[Ledger, Ledger], monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = two_writers
    register(a)
    a.execute_one(act("assert", story.elton_asserts()))
    b.execute_one(act("deny", story.peskov_denies()))
    followed = a._followed
    monkeypatch.setattr(a, "_follow_log", lambda cache: None)  # a misses b's denial: its copy is stale
    outcome = a.execute_one(act("assert", story.elton_asserts(act_id="again")))
    assert outcome.version == 4  # the save conflicted, the claim was read afresh, the command applied
    assert a._followed == followed
    monkeypatch.undo()
    assert a.execute_one(act("assert", story.elton_asserts(act_id="third"))).version == 5


def test_a_cache_far_behind_the_log_starts_afresh(
    two_writers: tuple[Ledger, Ledger], monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = two_writers
    monkeypatch.setattr(ledger_module, "FOLLOW_PAGE", 2)
    monkeypatch.setattr(ledger_module, "FOLLOW_MAX", 4)
    register(a)
    a.execute_one(act("assert", story.elton_asserts()))
    b.execute([act("assert", story.elton_asserts(act_id=f"b-{i}")) for i in range(9)])
    assert a.execute_one(act("deny", story.peskov_denies())).version == 12
    assert b.execute_one(act("assert", story.elton_asserts(act_id="last"))).version == 13


def test_a_batch_that_fails_midway_leaves_nothing_of_itself_in_the_cached_claims(
    two_writers: tuple[Ledger, Ledger], monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, _ = two_writers
    register(a)
    a.execute_one(act("assert", story.elton_asserts()))

    def broken(*args: object) -> None:
        raise RuntimeError("a fault no rule describes")

    monkeypatch.setattr(Claim, "check_retractable", broken)
    with pytest.raises(RuntimeError):  # the assertion is applied in memory, then the retraction fails
        a.execute([act("assert", story.elton_asserts(act_id="unsaved")),
                   act("retract", {"retracts": "elton-instagram", "party": story.ELTON, "act_id": "r1"})])
    monkeypatch.undo()
    assert a.execute_one(act("deny", story.peskov_denies())).version == 3
    monkeypatch.setattr(a, "_save_claims", lambda claims: (_ for _ in ()).throw(PersistenceError("the store went away")))
    with pytest.raises(StoreUnavailable):
        a.execute_one(act("assert", story.elton_asserts(act_id="also-unsaved")))
    monkeypatch.undo()
    assert a.execute_one(act("assert", story.elton_asserts(act_id="saved"))).version == 4
    claim = a.get_claim(story.KEY)
    assert claim.act("unsaved") is None and claim.act("also-unsaved") is None


def test_each_writer_follows_the_other_whatever_the_interleaving(two_writers: tuple[Ledger, Ledger]) -> None:
    """A writer skips reading back its own batch only when nothing else was written before
    it: whichever writer wrote last, the other's cached claim is the stored one."""
    a, b = two_writers
    register(a)
    claim_id = a.resolve(story.KEY)
    rng = random.Random(5)
    for i in range(40):
        writer = rng.choice((a, b))
        count = rng.choice((1, 1, 3))
        writer.execute([act("assert", story.elton_asserts(act_id=f"a{i}-{j}")) for j in range(count)])
        # The library's own reconstruction from the stored events, no cache involved.
        stored = ledger_module._project(None, a.events.get(claim_id))
        for ledger in (a, b):
            cached = ledger.load_claims([claim_id])[claim_id]
            assert cached is not None
            assert (cached.version, cached.modified_on, cached.fold.last_hash, cached.fold.view()) == (
                stored.version, stored.modified_on, stored.fold.last_hash, stored.fold.view())
