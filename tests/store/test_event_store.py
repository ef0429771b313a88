"""Events through the real stores: every field round-trips, hashes chain, races are retried,
and the claims the writer reads and caches are the ones the library rebuilds."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import LRUCache
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain import Ledger
from domain import ledger as ledger_module
from domain.canonical import GENESIS_HASH, canonical_bytes
from domain.claim import Claim
from domain.commands import RecordAct, RegisterClaim
from domain.errors import InvalidInput
from domain.fold import fold_claim
from domain.values import claim_id_for_key
from store.event_store import open_ledger
from store.recorder import PipelinedRecorder
from store.settings import Database
from tests.story import (
    CLAIM_KEY,
    ELTON,
    INSTAGRAM,
    PESKOV,
    PUTIN,
    STATEMENT,
    TASS,
    elton_asserts,
    peskov_denies,
)


@pytest.fixture
def database(database_url: str) -> Database:
    """The database of the `ledger` fixture, to open more ledgers on."""
    return Database.from_url(database_url)


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Database:
    """The database of the `sqlite_ledger` fixture."""
    return Database.from_url(f"sqlite:///{tmp_path / 'ledger.db'}")


def claim_events(ledger: Ledger, claim_id: UUID) -> list[Claim.Event]:
    """The claim's events as the library reads them back."""
    return list(ledger.events.get(claim_id))  # type: ignore[arg-type]


def test_every_event_field_round_trips_through_the_store(ledger: Ledger, database: Database) -> None:
    ledger.register_claim(STATEMENT, key=CLAIM_KEY, language="en-GB", subjects=["Vladimir Putin", "Elton John"])
    ledger.assert_claim(CLAIM_KEY, **elton_asserts(note="posted with a photo", reported_via=[TASS]))
    ledger.deny_claim(CLAIM_KEY, **peskov_denies(source=INSTAGRAM))
    ledger.retract_act(CLAIM_KEY, act_id="elton-retracts", retracts="elton-instagram", party=ELTON,
                       said_at="2015-09-16T08:30:00+03:00", source=INSTAGRAM, reason="it was a prank call")
    ledger.void_act(CLAIM_KEY, act_id="staff-void", voids="peskov-tass", reason="misattributed quote")
    fresh = open_ledger(database)
    events = claim_events(fresh, fresh.resolve(CLAIM_KEY))
    assert [e.body()["type"] for e in events] == ["ClaimRegistered", "Asserted", "Denied", "Retracted", "ActVoided"]
    assert events[0].data == {"statement": STATEMENT, "key": CLAIM_KEY, "language": "en-GB",
                              "subjects": ["Vladimir Putin", "Elton John"]}
    assert events[1].data == {
        "act_id": "elton-instagram", "party": ELTON, "on_behalf_of": None, "said_at": "2015-09-14",
        "source": INSTAGRAM, "reported_via": [TASS], "quote": elton_asserts()["quote"], "note": "posted with a photo",
    }
    assert events[2].data["on_behalf_of"] == PUTIN and events[2].data["party"] == PESKOV
    assert events[3].data == {
        "act_id": "elton-retracts", "retracts": "elton-instagram", "party": ELTON,
        "said_at": "2015-09-16T05:30:00Z", "source": INSTAGRAM, "reason": "it was a prank call",
    }
    assert events[4].data == {"act_id": "staff-void", "voids": "peskov-tass", "reason": "misattributed quote"}
    originals = claim_events(ledger, ledger.resolve(CLAIM_KEY))
    assert [e.body() for e in events] == [e.body() for e in originals]
    assert [e.timestamp for e in events] == [e.timestamp for e in originals]
    fresh.close()


def test_hashes_chain_each_event_to_the_previous_one(ledger: Ledger, database: Database) -> None:
    ledger.register_claim(STATEMENT, key=CLAIM_KEY)
    ledger.assert_claim(CLAIM_KEY, **elton_asserts())
    ledger.deny_claim(CLAIM_KEY, **peskov_denies())
    fresh = open_ledger(database)
    events = claim_events(fresh, ledger.resolve(CLAIM_KEY))
    fresh.close()
    previous = GENESIS_HASH
    for event in events:
        body = event.body()
        assert body["prev_hash"] == previous
        assert hashlib.sha256(canonical_bytes(body)).hexdigest() == event.hash
        assert canonical_bytes(body).decode() == event.body_text()
        previous = event.hash


def test_events_cannot_be_changed_after_they_exist(ledger: Ledger) -> None:
    ledger.register_claim(STATEMENT, key=CLAIM_KEY)
    event = claim_events(ledger, ledger.resolve(CLAIM_KEY))[0]
    with pytest.raises(AttributeError):
        event.data_json = "{}"  # type: ignore[misc]
    event.data["statement"] = "edited"
    assert event.data["statement"] == STATEMENT


def test_recorded_at_is_the_server_clock_in_utc_unless_a_fixture_gives_it(ledger: Ledger) -> None:
    before = datetime.now(UTC)
    ledger.register_claim(STATEMENT, key=CLAIM_KEY)
    fixed = datetime(2015, 9, 15, 12, 0, tzinfo=UTC)
    ledger.execute_one(RegisterClaim.build({"statement": "Putin called", "key": "putin-called"}, recorded_at=fixed))
    events = claim_events(ledger, ledger.resolve(CLAIM_KEY))
    assert events[0].timestamp >= before and events[0].recorded_at.endswith("Z")
    fixture_event = claim_events(ledger, ledger.resolve("putin-called"))[0]
    assert fixture_event.recorded_at == "2015-09-15T12:00:00Z"


def test_a_fixture_time_before_the_previous_event_is_refused(ledger: Ledger) -> None:
    ledger.execute_one(RegisterClaim.build({"statement": STATEMENT, "key": CLAIM_KEY},
                                           recorded_at=datetime(2020, 1, 1, tzinfo=UTC)))
    with pytest.raises(InvalidInput, match="recorded in time order"):
        ledger.execute_one(RecordAct.build("assert", CLAIM_KEY, elton_asserts(),
                                           recorded_at=datetime(2019, 1, 1, tzinfo=UTC)))


def test_two_writers_on_one_claim_are_retried_and_nothing_is_lost(ledger: Ledger, database: Database) -> None:
    ledger.register_claim(STATEMENT, key=CLAIM_KEY)
    writers = [open_ledger(database) for _ in range(4)]
    errors: list[BaseException] = []

    def write(app: Ledger, n: int) -> None:
        try:
            for i in range(15):
                app.assert_claim(CLAIM_KEY, act_id=f"w{n}-{i}", party={"id": f"fan-{n}", "name": "A fan"})
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(app, n)) for n, app in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for app in writers:
        app.close()
    assert errors == []
    fresh = open_ledger(database)
    claim = fresh.get_claim(CLAIM_KEY)
    fresh.close()
    assert claim.version == 1 + 4 * 15
    assert len(claim.fold.acts) == 60


@st.composite
def act_commands(draw: st.DrawFn) -> list[RecordAct]:
    commands: list[RecordAct] = []
    held: list[tuple[str, dict[str, str]]] = []
    parties = [ELTON, PUTIN, PESKOV]
    for i in range(draw(st.integers(1, 12))):
        op = draw(st.sampled_from(["assert", "deny", "retract", "void"]))
        if op in ("assert", "deny") or not held:
            party = draw(st.sampled_from(parties))
            said = draw(st.one_of(st.none(), st.just("2015-09-14"), st.just("2015-09-15T10:00:00+02:00")))
            commands.append(RecordAct.build("deny" if op == "deny" else "assert", CLAIM_KEY,
                                            {"act_id": f"act-{i}", "party": party, "said_at": said}))
            held.append((f"act-{i}", party))
        elif op == "retract":
            act_id, party = draw(st.sampled_from(held))
            commands.append(RecordAct.build("retract", CLAIM_KEY, {"act_id": f"r-{i}", "retracts": act_id,
                                                                   "party": party}))
        else:
            act_id, _ = draw(st.sampled_from(held))
            commands.append(RecordAct.build("void", CLAIM_KEY, {"act_id": f"v-{i}", "voids": act_id,
                                                                "reason": "recording error"}))
    return commands


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(commands=act_commands())
def test_a_stored_and_reloaded_claim_folds_to_the_same_view(
    sqlite_ledger: Ledger, sqlite_database: Database, commands: list[RecordAct],
) -> None:
    key = f"claim-{abs(hash(tuple(map(repr, commands)))) % 10**12}"
    sqlite_ledger.register_claim(STATEMENT, key=key)
    commands = [RecordAct.build(c.op, key, c.data) for c in commands]
    sqlite_ledger.execute(commands)
    claim: Claim = sqlite_ledger.get_claim(key)
    fresh = open_ledger(sqlite_database)
    stored = claim_events(fresh, claim.id)
    fresh.close()
    assert fold_claim([e.body() for e in stored]) == claim.fold.view()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(commands=act_commands())
def test_a_claim_read_for_a_write_is_the_one_the_library_rebuilds(
    sqlite_ledger: Ledger, sqlite_database: Database, commands: list[RecordAct],
) -> None:
    """The writer reads a claim it does not hold by folding its stored JSON; the result is
    the library's own reconstruction, down to the times the next event is checked against."""
    key = f"claim-{abs(hash(tuple(map(repr, commands)))) % 10**12}"
    sqlite_ledger.register_claim(STATEMENT, key=key)
    sqlite_ledger.execute([RecordAct.build(c.op, key, c.data) for c in commands])
    claim_id = sqlite_ledger.resolve(key)
    fresh = open_ledger(sqlite_database)
    try:
        ours = fresh.load_claims([claim_id])[claim_id]
        theirs: Claim = fresh.repository.get(claim_id)
        assert ours is not None
        assert (ours.id, ours.version, ours.created_on, ours.modified_on) == (
            theirs.id, theirs.version, theirs.created_on, theirs.modified_on)
        assert ours.modified_on.tzinfo is UTC
        assert ours.fold.view() == theirs.fold.view()
        assert ours.fold.last_hash == theirs.fold.last_hash
        assert ours.pending_events == []
        missing = claim_id_for_key("no-such-claim-" + key)
        assert fresh.load_claims([missing]) == {missing: None}
    finally:
        fresh.close()


def test_a_batch_naming_claims_the_writer_does_not_hold_reads_them_together(ledger: Ledger, database: Database) -> None:
    """A fresh writer (or one whose cache let the claims go) reads every claim a batch names
    before applying it: on PostgreSQL all of them in one query. Each is the claim the
    library rebuilds, a claim that does not exist is None, and the batch applies as usual."""
    keys = [f"cold-{i}" for i in range(6)]
    ledger.execute([RegisterClaim.build({"statement": f"Proposition {i}", "key": k}) for i, k in enumerate(keys)])
    ledger.execute([RecordAct.build("assert", k, {"party": ELTON, "act_id": f"a-{j}"})
                    for j in range(3) for k in keys[: 2 + j]])
    ledger.deny_claim(keys[0], **peskov_denies())
    fresh = open_ledger(database)
    try:
        ids = [claim_id_for_key(k) for k in keys] + [claim_id_for_key("no-such-claim")]
        queries = 0
        if database.backend == "postgres":
            recorder = fresh.recorder
            assert isinstance(recorder, PipelinedRecorder)
            select_originators = recorder.select_originators

            def counted(claim_ids: Any) -> Any:
                nonlocal queries
                queries += 1
                return select_originators(claim_ids)

            recorder.select_originators = counted  # type: ignore[method-assign]
        loaded = fresh.load_claims(ids)
        assert queries == (1 if database.backend == "postgres" else 0)
        assert loaded[ids[-1]] is None
        for claim_id in ids[:-1]:
            ours, theirs = loaded[claim_id], fresh.repository.get(claim_id)
            assert ours is not None
            assert (ours.version, ours.created_on, ours.modified_on) == (
                theirs.version, theirs.created_on, theirs.modified_on)
            assert ours.fold.view() == theirs.fold.view()
            assert ours.fold.last_hash == theirs.fold.last_hash
        outcomes = fresh.execute([RecordAct.build("deny", k, {"party": PESKOV, "act_id": "late"}) for k in keys])
        assert [o.version for o in outcomes] == [6, 5, 4, 3, 2, 2]
    finally:
        fresh.close()


def test_a_writer_far_behind_the_log_forgets_every_claim_it_held(
    ledger: Ledger, database: Database, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rather than follow a long stretch of the log (a bulk import, say), the claim cache
    starts afresh: nothing it held before may be served again without being read."""
    monkeypatch.setattr(ledger_module, "FOLLOW_PAGE", 2)
    monkeypatch.setattr(ledger_module, "FOLLOW_MAX", 4)
    ledger.register_claim(STATEMENT, key=CLAIM_KEY)
    claim_id = ledger.resolve(CLAIM_KEY)
    cache = ledger.repository.cache
    assert cache is not None and cache.get(claim_id).version == 1
    other = open_ledger(database)
    try:
        other.assert_claim(CLAIM_KEY, **elton_asserts())
        other.execute([RegisterClaim.build({"statement": f"Proposition {i}", "key": f"other-{i}"}) for i in range(9)])
    finally:
        other.close()
    ledger.load_claims([claim_id_for_key("other-0")])
    cache = ledger.repository.cache
    assert cache is not None
    with pytest.raises(KeyError):
        cache.get(claim_id)
    assert ledger.deny_claim(CLAIM_KEY, **peskov_denies()).version == 3


def test_the_claim_cache_holds_as_many_claims_as_the_settings_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEDGER_CLAIM_CACHE_SIZE", "7")
    database = Database.from_url(f"sqlite:///{tmp_path / 'ledger.db'}")
    for ledger, size in ((open_ledger(database), 7), (open_ledger(database, claim_cache_size=3), 3)):
        try:
            cache = ledger.repository.cache
            assert isinstance(cache, LRUCache) and cache.maxsize == size
        finally:
            ledger.close()
    with pytest.raises(InvalidInput, match="at least 1"):
        open_ledger(database, claim_cache_size=0)


def test_the_store_says_where_each_event_of_a_claim_is_in_the_log(ledger: Ledger) -> None:
    """`position_of` reads the position from the event store itself (a retried write answers
    with it before the projections have caught up), on both databases."""
    first = ledger.register_claim(STATEMENT, key=CLAIM_KEY)
    other = ledger.register_claim("Another statement", key="another")
    act = ledger.assert_claim(CLAIM_KEY, **elton_asserts())
    assert first.claim_id is not None and other.claim_id is not None and act.claim_id == first.claim_id
    assert ledger.position_of(first.claim_id, 1) == first.position == 1
    assert ledger.position_of(other.claim_id, 1) == other.position == 2
    assert ledger.position_of(first.claim_id, 2) == act.position == 3
    logged = {(UUID(e.claim_id), e.version): e.position for e in ledger.read_log(0, 10)}
    assert logged == {(first.claim_id, 1): 1, (other.claim_id, 1): 2, (first.claim_id, 2): 3}
    assert ledger.position_of(first.claim_id, 3) is None
    assert ledger.position_of(claim_id_for_key("no such claim"), 1) is None
