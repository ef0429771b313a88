"""Group commit from the event loop (`GroupWriter.execute_async`): the same rules as from a thread."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from domain import Ledger, Outcome
from domain.commands import RecordAct, RegisterClaim
from domain.errors import ActIdConflict, StoreUnavailable
from service.writer import GroupWriter
from tests.api import story


@pytest.fixture
def writer(ledger: Ledger) -> Iterator[GroupWriter]:
    w = GroupWriter(ledger)
    yield w
    w.stop()


def register(key: str = story.KEY) -> RegisterClaim:
    return RegisterClaim.build(story.registration(key=key))


def test_requests_waiting_on_the_loop_share_batches_and_each_gets_its_own_outcome(
    writer: GroupWriter, ledger: Ledger,
) -> None:
    writer.start()
    writer.execute(register(), timeout=10)

    async def record_all() -> list[Outcome | BaseException]:
        acts = [RecordAct.build("assert", story.KEY, story.elton_asserts(act_id=f"act-{i}")) for i in range(30)]
        acts.append(RecordAct.build("deny", story.KEY, story.elton_asserts(act_id="act-0")))  # act_id taken
        return await asyncio.gather(*(writer.execute_async(a, timeout=30) for a in acts), return_exceptions=True)

    results = asyncio.run(record_all())
    assert isinstance(results[-1], ActIdConflict)
    assert sorted(r.version or 0 for r in results[:-1] if isinstance(r, Outcome)) == list(range(2, 32))
    assert writer.batches < 31  # they were committed together, not one by one
    assert ledger.max_position() == 31


def test_a_write_from_the_loop_not_taken_in_time_is_refused_and_never_made(
    writer: GroupWriter, ledger: Ledger,
) -> None:
    with pytest.raises(StoreUnavailable, match="nothing was written"):
        asyncio.run(writer.execute_async(register(), timeout=0.05))
    writer.start()
    writer.execute(register("another"), timeout=10)
    assert ledger.max_position() == 1


def test_a_request_that_goes_away_does_not_take_its_write_with_it(writer: GroupWriter, ledger: Ledger) -> None:
    async def give_up() -> None:
        task = asyncio.create_task(writer.execute_async(register(), timeout=30))
        await asyncio.sleep(0.05)
        task.cancel()  # the client disconnected: the write it asked for is still made
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(give_up())
    writer.start()
    writer.execute(register("another"), timeout=10)
    assert ledger.max_position() == 2
