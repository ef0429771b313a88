"""What domain/library.py relies on in the `eventsourcing` library, checked against the
installed version: an upgrade that changes any of it fails here, saying what changed.

Each check compares the adapter's shortcut with what the library does through its public
API, on real SQLite files and PostgreSQL schemas.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import BaseAggregate
from eventsourcing.persistence import JSONTranscoder, Mapper, Recording
from eventsourcing.utils import get_topic
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import library
from domain.claim import EVENT_CLASSES, Claim
from domain.commands import RecordAct, RegisterClaim
from domain.ledger import Ledger
from domain.values import claim_id_for_key
from store.settings import Database
from tests.conftest import drop_schema, new_database_url
from tests.story import CLAIM_KEY, STATEMENT, elton_asserts, peskov_denies

WHEN = datetime(2015, 9, 14, 18, 0, 0, 123456, tzinfo=UTC)
FIELDS = {"data_json": '{"act_id":"a-1","note":"é \\u0001 \\"quoted\\""}', "prev_hash": "0" * 64, "hash": "f" * 64}


def parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


def library_made(event_class: type[Claim.Event], claim_id: UUID, version: int) -> Claim.Event:
    """The event as the library's public constructor makes it."""
    topic = {"originator_topic": get_topic(Claim)} if event_class is Claim.Registered else {}
    return event_class(originator_id=claim_id, originator_version=version, timestamp=WHEN, **topic, **FIELDS)


def hand_made(event_class: type[Claim.Event], claim_id: UUID, version: int) -> Claim.Event:
    topic = get_topic(Claim) if event_class is Claim.Registered else None
    return library.new_event(event_class, claim_id, version, WHEN, dict(FIELDS), originator_topic=topic)


def library_mapper() -> Mapper[UUID]:
    """The mapper an application makes, with the library's own transcodings."""
    return Application[UUID](env={"PERSISTENCE_MODULE": "eventsourcing.popo"}).mapper


def test_the_private_names_the_adapter_calls_exist_with_the_signatures_it_calls_them_with() -> None:
    expected: dict[str, tuple[Callable[..., Any], list[str]]] = {
        "BaseAggregate.__base_init__": (
            BaseAggregate.__base_init__, ["self", "originator_id", "originator_version", "timestamp"]),
        "Application._record": (Application._record, ["self", "processing_event"]),
        "Application._take_snapshots": (Application._take_snapshots, ["self", "processing_event"]),
        "Application._notify": (Application._notify, ["self", "recordings"]),
        "Application.notify": (Application.notify, ["self", "new_events"]),
    }
    for name, (function, names) in expected.items():
        assert parameters(function) == names, (
            f"the library's {name} now takes {parameters(function)}, not {names}: update domain/library.py"
        )
    processing_event: ProcessingEvent[UUID] = ProcessingEvent()
    assert (processing_event.events, processing_event.aggregates) == ([], {}), (
        "ProcessingEvent no longer starts with an empty `events` list and `aggregates` dict: "
        "library.save fills them itself"
    )
    transcoder = JSONTranscoder()
    assert isinstance(transcoder.types, dict) and isinstance(transcoder.names, dict), (
        "JSONTranscoder no longer keeps its transcodings in `types` and `names`: StateTranscoder.like copies them"
    )


def test_save_takes_the_steps_the_library_s_save_takes() -> None:
    steps = re.findall(r"(?:self|processing_event)\.(\w+)\(", inspect.getsource(Application.save))
    assert steps == ["collect_events", "_record", "_take_snapshots", "_notify", "notify"], (
        f"Application.save now takes the steps {steps}: library.save must take them too"
    )


@pytest.mark.parametrize("event_class", EVENT_CLASSES, ids=lambda cls: cls.__name__)
def test_a_hand_made_event_is_the_one_the_library_constructs(event_class: type[Claim.Event]) -> None:
    claim_id = uuid4()
    version = 1 if event_class is Claim.Registered else 7
    theirs, ours = library_made(event_class, claim_id, version), hand_made(event_class, claim_id, version)
    assert list(vars(ours).items()) == list(vars(theirs).items()), (
        f"{event_class.__name__}'s dataclass fields are now {list(vars(theirs))}: library.new_event lays out "
        f"{list(vars(ours))}"
    )
    assert ours == theirs and type(ours) is type(theirs)
    mapper = library_mapper()
    assert mapper.to_stored_event(ours) == mapper.to_stored_event(theirs)


def test_a_claim_registered_by_hand_is_the_aggregate_the_library_makes() -> None:
    claim_id = claim_id_for_key(CLAIM_KEY)
    ours = Claim.register(claim_id, statement=STATEMENT, key=CLAIM_KEY, language="en", subjects=[], recorded_at=WHEN)
    (event,) = ours.pending_events
    theirs = event.mutate(None)  # the created event's own way of making its aggregate
    assert theirs is not None
    ours_state = {k: v for k, v in vars(ours).items() if k not in ("fold", "_pending_events")}
    theirs_state = {k: v for k, v in vars(theirs).items() if k not in ("fold", "_pending_events")}
    assert ours_state == theirs_state, (
        f"the library's created event now makes an aggregate holding {theirs_state}: library.new_aggregate "
        f"makes {ours_state}"
    )
    assert ours.fold.view() == theirs.fold.view()
    assert theirs.pending_events == []


@pytest.fixture
def two_ledgers(backend: str, tmp_path: Path) -> Iterator[tuple[RecordingLedger, RecordingLedger]]:
    urls = [new_database_url(backend, tmp_path) for _ in range(2)]
    ledgers = [RecordingLedger({**Database.from_url(url).library_env(), "AGGREGATE_CACHE_MAXSIZE": "10"})
               for url in urls]
    try:
        yield ledgers[0], ledgers[1]
    finally:
        for ledger in ledgers:
            ledger.close()
        for url in urls:
            drop_schema(url)


class RecordingLedger(Ledger):
    """A Ledger that keeps what the library hands its after-save hooks."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env)
        self.notified: list[Any] = []

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        self.notified.append([(r.notification.id, r.domain_event) for r in recordings])

    def notify(self, new_events: list[Any]) -> None:
        self.notified.append(list(new_events))


def made_claims() -> list[Claim]:
    claims = []
    for i in range(3):
        claim = Claim.register(claim_id_for_key(f"claim-{i}"), statement=f"Proposition {i}", key=f"claim-{i}",
                               language="en", subjects=["A subject"], recorded_at=WHEN)
        claim.record_act("assert", {"act_id": f"a-{i}", **elton_asserts()}, WHEN)
        claims.append(claim)
    return claims


def test_claims_saved_through_the_adapter_are_stored_as_application_save_stores_them(
    two_ledgers: tuple[RecordingLedger, RecordingLedger],
) -> None:
    ours, theirs = two_ledgers
    our_recordings = library.save(ours, made_claims())
    their_recordings = theirs.save(*made_claims())
    assert [(r.notification.id, r.domain_event) for r in our_recordings] == [
        (r.notification.id, r.domain_event) for r in their_recordings]
    assert ours.notified == theirs.notified and len(ours.notified) == 2, (
        "Application.save now calls its after-save hooks otherwise: library.save must too"
    )
    stored = [ledger.recorder.select_notifications(1, 100) for ledger in (ours, theirs)]
    assert [(n.id, n.originator_version, n.topic, n.state) for n in stored[0]] == [
        (n.id, n.originator_version, n.topic, n.state) for n in stored[1]]


def test_the_fast_decoder_reads_the_layout_the_library_s_mapper_writes(ledger: Ledger) -> None:
    ledger.execute([
        RegisterClaim.build({"statement": STATEMENT, "key": CLAIM_KEY}),
        RecordAct.build("assert", CLAIM_KEY, elton_asserts()),
        RecordAct.build("deny", CLAIM_KEY, peskov_denies()),
    ])
    stored = ledger.recorder.select_events(claim_id_for_key(CLAIM_KEY))
    assert len(stored) == 3
    for row in stored:
        event = ledger.mapper.to_domain_event(row)
        fields, stamp = library.read_plain_state(row.state)
        assert stamp == event.timestamp.isoformat(), (
            f"the library's mapper stores a timestamp as {fields['timestamp']!r}: library.read_plain_state "
            "reads another layout"
        )
        assert {k: fields[k] for k in ("data_json", "prev_hash", "hash")} == {
            k: getattr(event, k) for k in ("data_json", "prev_hash", "hash")}
        logged = ledger.decode_stored(0, str(event.originator_id), event.originator_version, row.topic, row.state)
        assert (logged.recorded_at, logged.hash) == (event.recorded_at, event.hash)  # type: ignore[attr-defined]


def test_the_fast_decoder_refuses_a_timestamp_it_cannot_read() -> None:
    with pytest.raises(TypeError, match="datetime_iso"):
        library.read_plain_state(b'{"timestamp":{"_type_":"decimal_str","_data_":"1.5"}}')
    with pytest.raises(KeyError):
        library.read_plain_state(b'{"data_json":"{}"}')


texts = st.text(st.characters(codec="utf-8"), max_size=30)


@settings(max_examples=200, deadline=None)
@given(data_json=texts, prev_hash=texts, stamp=st.datetimes(timezones=st.just(UTC)))
def test_the_state_transcoder_writes_the_library_s_bytes(data_json: str, prev_hash: str, stamp: datetime) -> None:
    reference = library_mapper().transcoder
    assert isinstance(reference, JSONTranscoder)
    fast = library.StateTranscoder.like(reference)
    for state in (
        {"timestamp": stamp, "data_json": data_json, "prev_hash": prev_hash, "hash": "0" * 64},
        {"timestamp": stamp, "originator_topic": "domain.claim:Claim", "data_json": data_json},
        {"nested": {"timestamp": stamp}, "number": 1.5},  # not flat: the library's own encoder
    ):
        assert fast.encode(state) == reference.encode(state), (
            f"the library's JSONTranscoder now writes {reference.encode(state)!r}: StateTranscoder wrote "
            f"{fast.encode(state)!r}"
        )
