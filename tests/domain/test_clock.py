"""A clock that steps back: a claim's events are recorded in time order all the same.

An event is stamped with the writer's clock, which can be behind the claim's previous
event: the clock stepped back (NTP), or another writer whose clock runs ahead recorded it.
The previous event is given a time ahead of this machine's clock through the public way
a writer fixes an event's time (a command's `recorded_at`, what an import does); the next
write stamped by the clock must then not fall before it. A `recorded_at` asked for
explicitly before the previous event is refused instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from domain import Ledger
from domain.commands import RecordAct, RegisterClaim
from domain.errors import InvalidInput
from domain.values import format_instant, instant_of
from store.event_store import open_ledger
from store.settings import Database
from tests.api import story
from tests.conftest import drop_schema, new_database_url

AHEAD = timedelta(hours=6)  # how far the clock that stamped the previous event ran ahead


def ahead_of_now() -> datetime:
    return (datetime.now(UTC) + AHEAD).replace(microsecond=123456)


def act(op: str, fields: dict[str, object], recorded_at: datetime | None = None) -> RecordAct:
    return RecordAct.build(op, story.KEY, fields, recorded_at=recorded_at)


def times(ledger: Ledger) -> list[tuple[int, str]]:
    """(version, recorded_at) of the claim's events, as stored."""
    claim_id = str(ledger.resolve(story.KEY))
    return [(e.version, e.recorded_at) for e in ledger.read_log(0, 100) if e.claim_id == claim_id]


def assert_in_time_order(recorded: list[tuple[int, str]]) -> None:
    instants = [instant_of(t) for _, t in recorded]
    assert instants == sorted(instants), recorded


@pytest.fixture
def second_writer(database_url: str) -> Iterator[Ledger]:
    """Another process's writer on the same store."""
    other = open_ledger(Database.from_url(database_url))
    yield other
    other.close()


def test_a_write_stamped_by_a_clock_behind_the_previous_event_is_recorded_at_its_time_not_before(
    ledger: Ledger,
) -> None:
    ledger.execute_one(RegisterClaim.build(story.registration()))
    ahead = ahead_of_now()
    ledger.execute_one(act("assert", story.elton_asserts(), recorded_at=ahead))
    ledger.deny_claim(story.KEY, **story.peskov_denies())  # stamped by the clock, now 6 hours behind
    ledger.retract_act(story.KEY, retracts="elton-instagram", party=story.ELTON, act_id="elton-retracts")

    recorded = times(ledger)
    assert [v for v, _ in recorded] == [1, 2, 3, 4]
    assert [t for _, t in recorded[1:]] == [format_instant(ahead)] * 3
    assert_in_time_order(recorded)
    assert ledger.get_claim(story.KEY).fold.updated_at == format_instant(ahead)


def test_in_one_batch_a_later_command_is_not_stamped_before_an_earlier_ones_time(ledger: Ledger) -> None:
    ledger.execute_one(RegisterClaim.build(story.registration()))
    ahead = ahead_of_now()
    outcomes = ledger.execute([
        act("assert", story.elton_asserts(), recorded_at=ahead),
        act("deny", story.peskov_denies()),
    ])
    assert [o.error for o in outcomes] == [None, None]
    assert times(ledger)[1:] == [(2, format_instant(ahead)), (3, format_instant(ahead))]


def test_a_writer_whose_clock_is_behind_another_writers_never_stamps_before_that_writers_event(
    ledger: Ledger, second_writer: Ledger,
) -> None:
    """The first writer has the claim in its cache; the second records an event stamped
    ahead of the first's clock; the first, following the log, stamps its next write no earlier."""
    ledger.execute_one(RegisterClaim.build(story.registration()))
    ledger.assert_claim(story.KEY, **story.elton_asserts())  # the claim is in the first writer's cache
    ahead = ahead_of_now()
    second_writer.execute_one(act("deny", story.peskov_denies(), recorded_at=ahead))

    outcome = ledger.retract_act(story.KEY, retracts="elton-instagram", party=story.ELTON, act_id="elton-retracts")
    assert outcome.version == 4
    assert times(ledger)[2:] == [(3, format_instant(ahead)), (4, format_instant(ahead))]


def test_a_writer_that_loads_the_claim_from_the_store_never_stamps_before_its_newest_event(database_url: str) -> None:
    """A process started after the event (nothing cached) reads the previous event's time from the store."""
    ahead = ahead_of_now()
    first = open_ledger(Database.from_url(database_url))
    try:
        first.execute_one(RegisterClaim.build(story.registration()))
        first.execute_one(act("assert", story.elton_asserts(), recorded_at=ahead))
    finally:
        first.close()
    restarted = open_ledger(Database.from_url(database_url))
    try:
        restarted.deny_claim(story.KEY, **story.peskov_denies())
        assert times(restarted)[1:] == [(2, format_instant(ahead)), (3, format_instant(ahead))]
    finally:
        restarted.close()


def test_a_recorded_at_asked_for_before_the_previous_event_is_refused_and_nothing_is_stored(ledger: Ledger) -> None:
    ledger.execute_one(RegisterClaim.build(story.registration()))
    ahead = ahead_of_now()
    ledger.execute_one(act("assert", story.elton_asserts(), recorded_at=ahead))
    head = ledger.max_position()

    [refused] = ledger.execute([act("deny", story.peskov_denies(), recorded_at=ahead - timedelta(microseconds=1))])
    assert isinstance(refused.error, InvalidInput)
    assert "is before the claim's previous event" in str(refused.error)
    assert ledger.max_position() == head
    # The same time as the previous event's is in order.
    [same] = ledger.execute([act("deny", story.peskov_denies(), recorded_at=ahead)])
    assert same.error is None and same.version == 3


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_writers_with_clocks_apart_keep_every_claim_in_time_order(backend: str, tmp_path: Path) -> None:
    """Writers take turns on one claim, one clock six hours ahead of the other: every event is
    stamped at or after the one before it, whichever writer recorded either."""
    url = new_database_url(backend, tmp_path)
    slow, fast = open_ledger(Database.from_url(url)), open_ledger(Database.from_url(url))
    try:
        slow.execute_one(RegisterClaim.build(story.registration()))
        for i in range(6):
            party = {"id": f"party-{i}", "name": f"Party {i}"}
            if i % 2:
                slow.assert_claim(story.KEY, party=party, act_id=f"act-{i}")
            else:
                fast.execute_one(act("deny", {"party": party, "act_id": f"act-{i}"}, recorded_at=ahead_of_now()))
        recorded = times(slow)
        assert [v for v, _ in recorded] == list(range(1, 8))
        assert_in_time_order(recorded)
    finally:
        slow.close()
        fast.close()
        drop_schema(url)
