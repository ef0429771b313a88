"""The PostgreSQL recorder that sends each write's transaction in one round trip."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.pq import TransactionStatus

from domain import Ledger
from store.event_store import open_ledger
from store.recorder import PipelinedRecorder
from store.settings import Database
from tests.conftest import POSTGRES_URL, drop_schema, new_database_url
from tests.story import CLAIM_KEY, STATEMENT, elton_asserts


@pytest.fixture
def pg_ledger(tmp_path: Path) -> Iterator[Ledger]:
    url = new_database_url("postgres", tmp_path)
    ledger = open_ledger(Database.from_url(url))
    yield ledger
    ledger.close()
    drop_schema(url)


def stored(originator_id: uuid.UUID, version: int, state: bytes = b"{}") -> StoredEvent:
    return StoredEvent(originator_id=originator_id, originator_version=version, topic="test:Event", state=state)


def rows(recorder: PipelinedRecorder) -> list[tuple[int, uuid.UUID, int, str, bytes]]:
    return [(n.id, n.originator_id, n.originator_version, n.topic, n.state)
            for n in recorder.select_notifications(1, 100)]


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
    # (Writers to other schemas of the test database notify the same channel: the library
    # names it after the table alone.)
    assert received and {n.channel for n in received} == {recorder.channel_name}


def test_a_pipelined_write_stores_what_the_library_s_own_insert_stores(pg_ledger: Ledger) -> None:
    recorder = pg_ledger.recorder
    assert isinstance(recorder, PipelinedRecorder)
    first, second = uuid.uuid4(), uuid.uuid4()
    library_ids = PostgresApplicationRecorder.insert_events(recorder, [stored(first, 1, b'{"a":"\\u00e9"}'),
                                                                       stored(second, 1, b"\x00\xff")])
    our_ids = recorder.insert_events([stored(first, 2, b'{"a":"\\u00e9"}'), stored(second, 2, b"\x00\xff")])
    assert (library_ids, our_ids) == ([1, 2], [3, 4])
    library_rows, our_rows = rows(recorder)[:2], rows(recorder)[2:]
    assert [(o, t, s) for _, o, _, t, s in our_rows] == [(o, t, s) for _, o, _, t, s in library_rows]


def test_events_written_in_a_caller_s_transaction_are_stored_only_when_it_commits(pg_ledger: Ledger) -> None:
    """The fixture importer's path: the table locked from the first read, its events
    written in its own transaction with their positions, all or nothing."""
    recorder = pg_ledger.recorder
    assert isinstance(recorder, PipelinedRecorder)
    events = [stored(uuid.uuid4(), 1), stored(uuid.uuid4(), 1)]
    with pytest.raises(RuntimeError), recorder.datastore.get_connection() as conn, conn.transaction(), \
            conn.cursor() as cursor:
        recorder.lock_table(cursor)
        recorder.write_events(cursor, events)
        assert recorder.written_ids(cursor, events) == [1, 2]
        raise RuntimeError("the import failed on a later line")
    assert rows(recorder) == []
    with recorder.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as cursor:
        recorder.lock_table(cursor)
        locks = cursor.execute(
            "SELECT mode FROM pg_locks WHERE relation = %s::regclass AND pid = pg_backend_pid()",
            (f'"{recorder.datastore.schema}".{recorder.events_table_name}',),
        ).fetchall()
        assert "ExclusiveLock" in [row["mode"] for row in locks]
        recorder.write_events(cursor, events)
        positions = recorder.written_ids(cursor, events)
    assert [(p, o, v) for p, o, v, _, _ in rows(recorder)] == [
        (positions[0], events[0].originator_id, 1), (positions[1], events[1].originator_id, 1)]
