"""The PostgreSQL recorder that sends each write's transaction in one round trip."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from psycopg.pq import TransactionStatus

from domain import Ledger
from store.recorder import PipelinedRecorder
from store.settings import Database
from tests.conftest import POSTGRES_URL, drop_schema, new_database_url
from tests.story import CLAIM_KEY, STATEMENT, elton_asserts


@pytest.fixture
def pg_ledger(tmp_path: Path) -> Iterator[Ledger]:
    url = new_database_url("postgres", tmp_path)
    ledger = Ledger(Database.from_url(url))
    yield ledger
    ledger.close()
    drop_schema(url)


def stored(originator_id: uuid.UUID, version: int) -> StoredEvent:
    return StoredEvent(originator_id=originator_id, originator_version=version, topic="test:Event", state=b"{}")


def test_the_ledger_writes_through_the_pipelined_recorder(pg_ledger: Ledger) -> None:
    assert isinstance(pg_ledger.recorder, PipelinedRecorder)
    registered = pg_ledger.register_claim(STATEMENT, key=CLAIM_KEY)
    asserted = pg_ledger.assert_claim(CLAIM_KEY, **elton_asserts())
    assert (registered.position, asserted.position) == (1, 2)
    assert [n.id for n in pg_ledger.recorder.select_notifications(1, 10)] == [1, 2]


def test_a_write_that_loses_a_race_commits_nothing_and_leaves_its_connection_ready(
    pg_ledger: Ledger, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="psycopg")
    recorder = pg_ledger.recorder
    assert isinstance(recorder, PipelinedRecorder)
    first, second = uuid.uuid4(), uuid.uuid4()
    assert recorder.insert_events([stored(first, 1)]) == [1]
    # The second event of this batch is fine; the first takes a version already taken.
    with pytest.raises(IntegrityError):
        recorder.insert_events([stored(second, 1), stored(first, 1)])
    with recorder.datastore.get_connection() as conn:  # the pool's connection, rolled back
        assert conn.info.transaction_status == TransactionStatus.IDLE
    assert [r.getMessage() for r in caplog.records] == []  # not by the pool, which would say so
    assert [e.originator_version for e in recorder.select_events(second)] == []
    ids = recorder.insert_events([stored(second, 1), stored(first, 2)])
    assert ids is not None and len(ids) == 2 and ids[1] == ids[0] + 1
    assert [(n.originator_id, n.originator_version) for n in recorder.select_notifications(1, 10)] == [
        (first, 1), (second, 1), (first, 2)]


def test_each_write_notifies_the_projections_once_it_has_committed(pg_ledger: Ledger) -> None:
    recorder = pg_ledger.recorder
    assert isinstance(recorder, PipelinedRecorder)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as listener:
        listener.execute(f'LISTEN "{recorder.channel_name}"')
        recorder.insert_events([stored(uuid.uuid4(), 1), stored(uuid.uuid4(), 1)])
        received = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in received] == [recorder.channel_name]
