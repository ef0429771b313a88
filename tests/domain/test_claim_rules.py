"""The claim's rules, told through the seed story, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from domain import Ledger
from domain.commands import RecordAct
from domain.errors import (
    ActIdConflict,
    InvalidInput,
    KeyConflict,
    NotRetractable,
    NotVoidable,
    UnknownAct,
    UnknownClaim,
    VersionMismatch,
)
from domain.values import claim_id_for_key
from tests.story import CLAIM_KEY, ELTON, PESKOV, PUTIN, STATEMENT, elton_asserts, peskov_denies


@pytest.fixture
def story(ledger: Ledger) -> Ledger:
    ledger.register_claim(STATEMENT, key=CLAIM_KEY, subjects=["Vladimir Putin", "Elton John"])
    ledger.assert_claim(CLAIM_KEY, **elton_asserts())
    ledger.deny_claim(CLAIM_KEY, **peskov_denies())
    return ledger


def test_claim_id_is_uuid5_of_the_key_so_the_same_key_names_the_same_claim(ledger: Ledger) -> None:
    outcome = ledger.register_claim(STATEMENT, key=CLAIM_KEY)
    assert outcome.claim_id == claim_id_for_key(CLAIM_KEY)
    assert outcome.claim_id is not None and outcome.claim_id.version == 5


def test_registering_the_same_key_and_statement_again_is_idempotent(ledger: Ledger) -> None:
    first = ledger.register_claim(STATEMENT, key=CLAIM_KEY)
    again = ledger.register_claim(STATEMENT, key=CLAIM_KEY)
    assert (first.created, again.created) == (True, False)
    assert again.version == 1
    assert ledger.max_position() == 1


def test_registering_a_key_with_another_statement_is_a_conflict(ledger: Ledger) -> None:
    ledger.register_claim(STATEMENT, key=CLAIM_KEY)
    with pytest.raises(KeyConflict, match="already names"):
        ledger.register_claim("Elton John telephoned Vladimir Putin", key=CLAIM_KEY)
    assert ledger.max_position() == 1


def test_a_claim_registered_without_key_gets_a_stable_key_from_its_statement(ledger: Ledger) -> None:
    first = ledger.register_claim(STATEMENT)
    assert first.key is not None and first.key.startswith("vladimir-putin-telephoned-elton-john")
    assert ledger.register_claim(STATEMENT).claim_id == first.claim_id


def test_the_claim_is_found_by_uuid_and_by_key(story: Ledger) -> None:
    by_key = story.get_claim(CLAIM_KEY)
    assert story.get_claim(str(by_key.id)).id == by_key.id


def test_a_uuid_shaped_key_is_found_as_a_key(ledger: Ledger) -> None:
    key = "0b9e3f6a-7f2d-4c1e-9a55-3f8e2d1c0b7a"
    ledger.register_claim("A claim imported from a system that used UUIDs as keys", key=key)
    assert ledger.get_claim(key).key == key


def test_each_op_names_one_event_and_each_event_type_one_op() -> None:
    from domain.claim import ACT_EVENT_OF_OP, EVENT_CLASSES, EVENT_OF_OP, OP_OF_TYPE, Claim

    assert {op: cls.TYPE for op, cls in EVENT_OF_OP.items()} == {
        "register": "ClaimRegistered", "assert": "Asserted", "deny": "Denied", "retract": "Retracted",
        "void": "ActVoided", "review": "Reviewed",
    }
    assert {OP_OF_TYPE[cls.TYPE] for cls in EVENT_CLASSES} == set(EVENT_OF_OP)
    assert set(ACT_EVENT_OF_OP) == set(EVENT_OF_OP) - {Claim.Registered.OP}
    with pytest.raises(InvalidInput, match="use one of assert, deny, retract, void, review"):
        RecordAct.build("register", CLAIM_KEY, {})


def test_acts_on_an_unknown_claim_fail(ledger: Ledger) -> None:
    with pytest.raises(UnknownClaim, match="register it first"):
        ledger.assert_claim("no-such-claim", party=ELTON)


def test_the_stance_belongs_to_the_holder_on_whose_behalf_a_spokesman_spoke(story: Ledger) -> None:
    stances = story.get_claim(CLAIM_KEY).fold.stances()
    assert [(s["holder"]["id"], s["party"]["id"], s["stance"]) for s in stances] == [
        ("elton-john", "elton-john", "asserts"),
        ("vladimir-putin", "dmitry-peskov", "denies"),
    ]


def test_an_act_id_already_held_is_a_conflict(story: Ledger) -> None:
    with pytest.raises(ActIdConflict, match="already used"):
        story.assert_claim(CLAIM_KEY, **elton_asserts(quote="something else"))


def test_resending_the_same_act_is_an_idempotent_retry(story: Ledger) -> None:
    again = story.assert_claim(CLAIM_KEY, **elton_asserts())
    assert (again.created, again.version, again.act_id) == (False, 2, "elton-instagram")
    assert story.max_position() == 3


def test_the_holder_may_retract_their_act(story: Ledger) -> None:
    story.retract_act(CLAIM_KEY, retracts="peskov-tass", party=PUTIN, reason="changed mind")
    assert story.get_claim(CLAIM_KEY).fold.view()["status"] == "asserted"


def test_the_speaking_party_may_retract_what_they_said_for_the_holder(story: Ledger) -> None:
    story.retract_act(CLAIM_KEY, retracts="peskov-tass", party=PESKOV)
    assert story.get_claim(CLAIM_KEY).act("peskov-tass").retracted_by  # type: ignore[union-attr]


def test_nobody_else_may_retract_an_act(story: Ledger) -> None:
    with pytest.raises(NotRetractable, match="only its holder or the party who said it"):
        story.retract_act(CLAIM_KEY, retracts="peskov-tass", party=ELTON)


def test_an_act_can_be_retracted_only_once(story: Ledger) -> None:
    story.retract_act(CLAIM_KEY, retracts="elton-instagram", party=ELTON)
    with pytest.raises(NotRetractable, match="already retracted"):
        story.retract_act(CLAIM_KEY, retracts="elton-instagram", party=ELTON)


def test_a_retraction_cannot_itself_be_retracted(story: Ledger) -> None:
    story.retract_act(CLAIM_KEY, act_id="elton-takes-back", retracts="elton-instagram", party=ELTON)
    with pytest.raises(NotRetractable, match="only assertions, denials and reviews"):
        story.retract_act(CLAIM_KEY, retracts="elton-takes-back", party=ELTON)


def test_a_void_cannot_be_retracted_or_voided(story: Ledger) -> None:
    story.void_act(CLAIM_KEY, act_id="staff-fix", voids="peskov-tass", reason="misattributed")
    with pytest.raises(NotRetractable):
        story.retract_act(CLAIM_KEY, retracts="staff-fix", party=PESKOV)
    with pytest.raises(NotVoidable, match="voids cannot be voided"):
        story.void_act(CLAIM_KEY, voids="staff-fix", reason="oops")


def test_an_act_can_be_voided_once(story: Ledger) -> None:
    story.void_act(CLAIM_KEY, voids="peskov-tass", reason="misattributed")
    with pytest.raises(NotVoidable, match="already voided"):
        story.void_act(CLAIM_KEY, voids="peskov-tass", reason="again")


def test_a_voided_act_cannot_be_retracted(story: Ledger) -> None:
    story.void_act(CLAIM_KEY, voids="peskov-tass", reason="misattributed")
    with pytest.raises(NotRetractable, match="voided"):
        story.retract_act(CLAIM_KEY, retracts="peskov-tass", party=PUTIN)


def test_acts_on_an_unknown_act_id_fail(story: Ledger) -> None:
    with pytest.raises(UnknownAct):
        story.retract_act(CLAIM_KEY, retracts="never-said", party=ELTON)
    with pytest.raises(UnknownAct):
        story.void_act(CLAIM_KEY, voids="never-said", reason="x")


def test_voiding_a_retraction_makes_the_retracted_act_stand_again(story: Ledger) -> None:
    story.retract_act(CLAIM_KEY, act_id="elton-takes-back", retracts="elton-instagram", party=ELTON)
    assert story.get_claim(CLAIM_KEY).fold.view()["status"] == "denied"
    story.void_act(CLAIM_KEY, voids="elton-takes-back", reason="never said")
    assert story.get_claim(CLAIM_KEY).fold.view()["status"] == "disputed"


def test_a_failed_command_changes_nothing(story: Ledger) -> None:
    before = story.max_position()
    with pytest.raises(NotRetractable):
        story.retract_act(CLAIM_KEY, retracts="peskov-tass", party=ELTON)
    assert story.max_position() == before
    assert story.get_claim(CLAIM_KEY).version == 3


def test_if_match_refuses_a_claim_that_moved_on(story: Ledger) -> None:
    command = RecordAct.build("assert", CLAIM_KEY, {"party": PUTIN}, expected_version=2)
    with pytest.raises(VersionMismatch, match="version 3"):
        story.execute_one(command)


def test_an_if_match_act_sent_again_after_it_was_recorded_is_an_idempotent_retry(story: Ledger) -> None:
    """A client whose answer was lost sends the same If-Match act again: it was recorded."""
    command = RecordAct.build("assert", CLAIM_KEY, {"act_id": "putin-calls", "party": PUTIN}, expected_version=3)
    first = story.execute_one(command)
    assert (first.created, first.version) == (True, 4)
    again = story.execute_one(command)
    assert (again.created, again.version, again.act_id) == (False, 4, "putin-calls")
    assert story.get_claim(CLAIM_KEY).version == 4
    different = RecordAct.build(
        "assert", CLAIM_KEY, {"act_id": "putin-calls", "party": PUTIN, "note": "another act"}, expected_version=3
    )
    unnamed = RecordAct.build("assert", CLAIM_KEY, {"party": PUTIN}, expected_version=3)
    denial = RecordAct.build("deny", CLAIM_KEY, {"act_id": "putin-calls", "party": PUTIN}, expected_version=3)
    for refused in (different, unnamed, denial):
        with pytest.raises(VersionMismatch, match="version 4"):
            story.execute_one(refused)
    assert story.get_claim(CLAIM_KEY).version == 4


def test_one_batch_applies_commands_in_order_and_fails_only_the_bad_one(ledger: Ledger) -> None:
    from domain.commands import RegisterClaim

    outcomes = ledger.execute([
        RegisterClaim.build({"statement": STATEMENT, "key": CLAIM_KEY}),
        RecordAct.build("assert", CLAIM_KEY, elton_asserts()),
        RecordAct.build("retract", CLAIM_KEY, {"retracts": "elton-instagram", "party": PUTIN}),
        RecordAct.build("deny", CLAIM_KEY, peskov_denies()),
    ])
    assert [o.error is None for o in outcomes] == [True, True, False, True]
    assert isinstance(outcomes[2].error, NotRetractable)
    assert [o.version for o in outcomes if o.error is None] == [1, 2, 3]
    positions = [o.position for o in outcomes if o.error is None]
    assert positions == sorted(positions) and len(set(positions)) == 3


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"party": {"id": "Elton John", "name": "Elton"}}, "party.id must be a slug"),
        ({"party": ELTON, "said_at": "14 Sep 2015"}, "said_at must be"),
        ({"party": ELTON, "said_at": "2015-09-14T10:00:00"}, "with an offset"),
        ({"party": ELTON, "said_at": "2015-02-30"}, "not a real date"),
        ({"party": ELTON, "mood": "happy"}, "does not take mood"),
        ({}, "party is required"),
        ({"party": ELTON, "source": {"url": "not a url"}}, "absolute URL"),
        ({"party": ELTON, "quote": "x" * 10_001}, "at most 10000"),
    ],
)
def test_bad_input_is_refused_with_what_to_fix(story: Ledger, fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        story.assert_claim(CLAIM_KEY, **fields)
    assert story.max_position() == 3


@pytest.mark.parametrize(
    ("statement", "key", "message"),
    [
        ("", "k", "at least 1"),
        ("x" * 2001, "k", "at most 2000"),
        ("ok", "Bad Key", "key must be a slug"),
        ("ok", "-leading-dash", "key must be a slug"),
        ("ok", "a" * 121, "key must be a slug"),
    ],
)
def test_bad_registrations_are_refused(ledger: Ledger, statement: str, key: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        ledger.register_claim(statement, key=key)
    assert ledger.max_position() == 0
