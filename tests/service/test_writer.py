"""Group commit: many requests, one transaction, each answered with its own outcome."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future

import pytest

from domain import Ledger, Outcome
from domain.commands import Command, RecordAct, RegisterClaim
from domain.errors import NotRetractable, StoreUnavailable
from service.writer import GroupWriter
from store.db import ReadStore
from store.event_store import open_ledger
from store.settings import Database
from store.tokens import Credential, InvalidToken, Role, RoleTooLow, TokenStore, token_hash
from tests.api import story


@pytest.fixture
def writer(ledger: Ledger) -> Iterator[GroupWriter]:
    w = GroupWriter(ledger)
    yield w
    w.stop()


def register() -> RegisterClaim:
    return RegisterClaim.build(story.registration())


def act(op: str, body: dict[str, object]) -> RecordAct:
    return RecordAct.build(op, story.KEY, body)


def submit_then_start(writer: GroupWriter, commands: list[Command]) -> list[Future[Outcome]]:
    futures = [writer.submit(c) for c in commands]
    writer.start()
    for f in futures:
        f.result(10)
    return futures


def test_commands_in_one_batch_commit_together_and_see_each_other(writer: GroupWriter, ledger: Ledger) -> None:
    futures = submit_then_start(writer, [
        register(), act("assert", story.elton_asserts()), act("deny", story.peskov_denies()),
    ])
    outcomes = [f.result() for f in futures]
    assert [o.version for o in outcomes] == [1, 2, 3]
    assert [o.position for o in outcomes] == [1, 2, 3]
    assert writer.batches == 1
    assert writer.largest_batch == 3
    assert ledger.max_position() == 3


def test_a_broken_rule_fails_only_its_own_command(writer: GroupWriter, ledger: Ledger) -> None:
    futures = submit_then_start(writer, [
        register(), act("assert", story.elton_asserts()),
        act("retract", {"retracts": "elton-instagram", "party": story.PESKOV}),
        act("deny", story.peskov_denies()),
    ])
    outcomes = [f.result() for f in futures]
    assert isinstance(outcomes[2].error, NotRetractable)
    assert [o.version for o in outcomes if o.error is None] == [1, 2, 3]
    assert writer.batches == 1


def test_an_outcome_is_handed_back_only_after_commit(writer: GroupWriter, database_url: str) -> None:
    observer = open_ledger(Database.from_url(database_url))
    seen: list[int] = []
    both_seen = threading.Event()

    def look(_: Future[Outcome]) -> None:  # runs in the writer thread as the outcome is handed back
        seen.append(observer.max_position())
        if len(seen) == 2:
            both_seen.set()

    try:
        futures = [writer.submit(register()), writer.submit(act("assert", story.elton_asserts()))]
        for f in futures:
            f.add_done_callback(look)
        writer.start()
        assert both_seen.wait(10)
    finally:
        observer.close()
    assert seen == [2, 2]


def test_concurrent_requests_queued_behind_a_batch_are_all_written_once_in_one_batch(ledger: Ledger) -> None:
    # The writer's first batch is held open (its on_commit hook runs in the writer thread)
    # while 40 threads submit at once: they all queue behind it, so when it is released the
    # writer must take them as one batch — two batches for 41 commands, not one per command.
    held, release = threading.Event(), threading.Event()

    def hold_the_first_batch(_: object) -> None:
        if not held.is_set():
            held.set()
            release.wait(30)

    writer = GroupWriter(ledger, on_commit=hold_the_first_batch)
    writer.start()
    try:
        registered = writer.submit(register())
        assert held.wait(10), "the first batch was never committed"
        barrier = threading.Barrier(40)
        futures: list[Future[Outcome]] = []

        def record(i: int) -> None:
            barrier.wait()
            futures.append(writer.submit(act("assert", story.elton_asserts(act_id=f"act-{i}"))))

        threads = [threading.Thread(target=record, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(futures) == 40 and not any(f.done() for f in futures), "written while the writer was held"
        release.set()
        results = [f.result(30).unwrap() for f in futures]
    finally:
        release.set()
        writer.stop()
    assert registered.result().version == 1
    assert sorted(o.version or 0 for o in results) == list(range(2, 42))
    assert sorted(o.position for o in results) == list(range(2, 42))
    assert ledger.max_position() == 41
    assert (writer.batches, writer.largest_batch) == (2, 40)


def test_a_write_not_taken_in_time_is_refused_and_never_made(writer: GroupWriter, ledger: Ledger) -> None:
    with pytest.raises(StoreUnavailable, match="nothing was written"):
        writer.execute(register(), timeout=0.05)
    writer.start()
    writer.execute(RegisterClaim.build({"statement": "Another claim", "key": "another"}), timeout=10)
    assert ledger.max_position() == 1
    assert ledger.resolve("another")


def test_stopping_commits_what_is_queued_and_refuses_new_writes(writer: GroupWriter, ledger: Ledger) -> None:
    queued = writer.submit(register())
    writer.start()
    writer.stop()
    assert queued.result(1).version == 1
    with pytest.raises(StoreUnavailable, match="shutting down"):
        writer.submit(register())


@pytest.fixture
def tokens(database_url: str) -> Iterator[TokenStore]:
    store = ReadStore(Database.from_url(database_url))
    found = TokenStore(store)
    found.ensure_table()
    yield found
    store.close()


def credential(token: str, needed: Role = Role.RECORDER) -> Credential:
    return Credential(token_hash(token), needed)


def test_a_refused_credential_fails_only_its_own_command_which_is_never_applied(
    ledger: Ledger, tokens: TokenStore,
) -> None:
    _, recorder = tokens.create(Role.RECORDER)
    revoked_record, revoked = tokens.create(Role.ADMIN)
    tokens.revoke(revoked_record.token_id)
    writer = GroupWriter(ledger, gate=tokens.check)
    try:
        futures = [
            writer.submit(register(), credential(recorder)),
            writer.submit(act("assert", story.elton_asserts()), credential(revoked)),
            writer.submit(act("assert", story.elton_asserts(act_id="unknown")), credential("clm_" + "x" * 43)),
            writer.submit(act("void", {"voids": "elton-instagram", "reason": "typo"}), credential(recorder, Role.EDITOR)),
            # The same act_id as the refused assertion: it never happened, so this one is new.
            writer.submit(act("assert", story.elton_asserts()), credential(recorder)),
        ]
        writer.start()
        for f in futures:
            f.exception(10)
    finally:
        writer.stop()
    registered, revoked_error, unknown_error, too_low, asserted = (f.exception() or f.result() for f in futures)
    assert isinstance(registered, Outcome) and registered.version == 1
    assert isinstance(revoked_error, InvalidToken) and isinstance(unknown_error, InvalidToken)
    assert isinstance(too_low, RoleTooLow) and "needs role editor" in str(too_low)
    assert isinstance(asserted, Outcome) and asserted.created and asserted.version == 2
    assert writer.batches == 1
    assert ledger.max_position() == 2


def test_when_tokens_cannot_be_checked_only_the_writes_that_carry_one_fail(ledger: Ledger) -> None:
    def unreachable(_: object) -> list[None]:
        raise StoreUnavailable("the read-model database is unreachable: test")

    writer = GroupWriter(ledger, gate=unreachable)
    try:
        checked = writer.submit(register(), credential("clm_token"))
        unchecked = writer.submit(RegisterClaim.build({"statement": "Another claim", "key": "another"}))
        writer.start()
        with pytest.raises(StoreUnavailable, match="unreachable"):
            checked.result(10)
        assert unchecked.result(10).version == 1
    finally:
        writer.stop()
    assert ledger.max_position() == 1
    assert ledger.resolve("another")


def test_a_writer_without_a_gate_refuses_a_credential_it_cannot_check(writer: GroupWriter) -> None:
    with pytest.raises(RuntimeError, match="no gate"):
        writer.submit(register(), credential("clm_token"))

