"""The library's recorders, with what the ledger asks of them beyond the library's interface.

On both databases: `position_of`, where one event of a claim is in the log (a retried write
answers with the position its first attempt was recorded at, projected yet or not).

On PostgreSQL, each write's transaction is also sent in one round trip.

`PostgresApplicationRecorder.insert_events` wraps its statements in psycopg's transaction
block inside a pipeline, which syncs the pipeline on the way in and twice on the way out,
on top of the sync it asks for itself: four round trips to the server for one write (a
batch of them, under group commit). Here BEGIN, the library's own statements (its lock
timeout, table lock, NOTIFY and INSERT) and COMMIT go in one pipeline and one sync, and
the notification ids come back with it. The events go as binary arrays, one per column.
Nothing else changes: the same statements, the same errors (an IntegrityError when another
writer took a version first), the same retries.

A write is acknowledged only once the server has answered the COMMIT: an error anywhere
before it aborts the whole pipeline, the transaction is rolled back and the error raised
(`one_round_trip`, which the projection engine's batches use too).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError, ProgrammingError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import retry
from psycopg import Connection, Cursor
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier


@contextmanager
def one_round_trip(conn: Connection[Any]) -> Iterator[None]:
    """A transaction whose statements, BEGIN to COMMIT, go in one pipeline: one round trip
    unless a statement's rows are read inside. (psycopg's own transaction block syncs the
    pipeline on the way in and twice on the way out.) The block's cursors hold their results
    once it ends; COMMIT goes on a cursor of its own. On any error, in the block or reported
    at the sync, the transaction is rolled back: nothing of it stays."""
    try:
        # A server error that arrives before the block ends (its results are read as they
        # come) is the one raised: the pipeline's exit then meets the statements it aborted,
        # and would log that second error as a warning.
        failed: psycopg.Error | None = None
        try:
            with conn.pipeline():
                try:
                    if conn.autocommit:  # else psycopg begins before the first statement
                        conn.execute("BEGIN")
                    yield
                    conn.execute("COMMIT")
                except psycopg.Error as e:
                    failed = e
        except psycopg.Error:
            if failed is None:
                raise
        if failed is not None:
            raise failed
    except BaseException:
        if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
            conn.rollback()
        raise


def _as_bytes(query: Any, conn: Connection[Any]) -> bytes:
    if isinstance(query, bytes):
        return query
    if isinstance(query, str):
        return query.encode()
    return bytes(query.as_bytes(conn))


class PipelinedRecorder(PostgresApplicationRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The events as one binary array per column: psycopg writes each as it is held in
        # memory, where the library's array of composite values is escaped into text,
        # value by value, in Python (a large share of the writer's time) and parsed back by the
        # server. The same rows, in the same order (RETURNING follows it, as the library's).
        self._insert_arrays_statement = SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state)"
            " SELECT * FROM unnest(%b::{id_type}[], %b::bigint[], %b::text[], %b::bytea[])"
            " RETURNING notification_id"
        ).format(
            schema=Identifier(self.datastore.schema),
            table=Identifier(self.events_table_name),
            id_type=SQL(self.datastore.originator_id_type),
        )

        self._statements: tuple[list[bytes], bytes, bytes] | None = None  # made on first use

        # Several claims' events in one query (the writer's cold claims, an import's claims).
        self.select_originators_statement = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {schema}.{table}"
            " WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))
        self.select_position_statement = SQL(
            "SELECT notification_id FROM {schema}.{table} WHERE originator_id = %s AND originator_version = %s"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)  # as the library's select_events
    def position_of(self, originator_id: UUID, originator_version: int) -> int | None:
        """The notification id of the originator's event at that version (its primary key
        finds it); None when there is none."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_position_statement, (originator_id, originator_version), prepare=True)
            row = curs.fetchone()
            return None if row is None else int(row["notification_id"])

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)  # as the library's select_events
    def select_originators(self, originator_ids: Sequence[UUID]) -> list[DictRow]:
        """Every event of these originators, by originator, then version."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_originators_statement, (list(originator_ids),), prepare=True)
            return curs.fetchall()

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        if self.datastore.enable_db_functions or not stored_events:
            return super().insert_events(stored_events, **kwargs)
        return self._insert_pipelined(stored_events)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)  # as the library's insert_events
    def _insert_pipelined(self, stored_events: Sequence[StoredEvent]) -> list[int]:
        # The library's connection turns psycopg's errors into its own.
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            with one_round_trip(conn):
                self.write_events(curs, stored_events)
            return self.written_ids(curs, stored_events)

    def lock_table(self, curs: Cursor[DictRow]) -> None:
        """Take the events table's write lock in `curs`'s transaction, as every save does
        (the library's statements: its lock timeout, then EXCLUSIVE mode). Writers take turns,
        so the log's order is the commit order; readers are not blocked."""
        lock, _, _ = self._composed(curs)
        for statement in lock:
            curs.execute(statement, prepare=True)

    def write_events(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent]) -> None:
        """What a save sends inside its transaction, on `curs`: the table lock, NOTIFY for the
        projections (delivered at COMMIT) and the INSERT of the events. Their notification ids
        are then `curs`'s rows: `written_ids`, once the statements have been answered."""
        lock, notify, insert = self._composed(curs)
        for statement in lock:
            curs.execute(statement, prepare=True)
        curs.execute(notify)
        curs.execute(insert, [
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
        ], prepare=True)

    @staticmethod
    def written_ids(curs: Cursor[DictRow], stored_events: Sequence[StoredEvent]) -> list[int]:
        """The notification ids `write_events` gave `stored_events`, in their order."""
        ids = [row["notification_id"] for row in curs.fetchall()]
        if len(ids) != len(stored_events):
            raise ProgrammingError(f"the insert gave {len(ids)} notification ids to {len(stored_events)} events")
        return ids

    def _composed(self, curs: Cursor[DictRow]) -> tuple[list[bytes], bytes, bytes]:
        """The library's lock and NOTIFY statements, and the insert, composed into bytes once:
        psycopg composes an SQL object again on every execute."""
        if self._statements is None:
            conn = curs.connection
            self._statements = (
                [_as_bytes(s, conn) for s in self.lock_table_statements],
                SQL("NOTIFY {0}").format(Identifier(self.channel_name)).as_bytes(conn),
                self._insert_arrays_statement.as_bytes(conn),
            )
        return self._statements


class SQLiteRecorder(SQLiteApplicationRecorder):
    """The library's SQLite recorder, with `position_of` (the notification id is the rowid)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.select_position_statement = (
            f"SELECT rowid FROM {self.events_table_name} WHERE originator_id = ? AND originator_version = ?"
        )

    def position_of(self, originator_id: UUID, originator_version: int) -> int | None:
        """The notification id of the originator's event at that version (its primary key
        finds it); None when there is none."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(self.select_position_statement, (originator_id.hex, originator_version))
            row = c.fetchone()
            return None if row is None else int(row[0])
