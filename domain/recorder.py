"""The library's PostgreSQL recorder, with each write's transaction sent in one round trip.

`PostgresApplicationRecorder.insert_events` wraps its statements in psycopg's transaction
block inside a pipeline, which syncs the pipeline on the way in and twice on the way out,
on top of the sync it asks for itself: four round trips to the server for one write (a
batch of them, under group commit). Here BEGIN, the library's own statements (its lock
timeout, table lock, NOTIFY and INSERT) and COMMIT go in one pipeline and one sync, and
the notification ids come back with it. Nothing else changes: the same statements, the same
errors (an IntegrityError when another writer took a version first), the same retries.

A write is acknowledged only once the server has answered the COMMIT: an error anywhere
before it aborts the whole pipeline, the transaction is rolled back and the error raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry


class PipelinedRecorder(PostgresApplicationRecorder):
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        if self.datastore.enable_db_functions or not stored_events:
            return super().insert_events(stored_events, **kwargs)
        return self._insert_pipelined(stored_events, **kwargs)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)  # as the library's insert_events
    def _insert_pipelined(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        failure: Exception | None = None
        notification_ids: Sequence[int] | None = None
        # The library's connection turns psycopg's errors into its own; the pool's rolls back
        # the failed transaction as the error leaves it.
        with self.datastore.get_connection() as conn:
            with conn.pipeline() as pipeline:
                try:
                    conn.execute("BEGIN")
                    with conn.cursor() as curs:
                        self._insert_events(curs, stored_events, **kwargs)
                        self._insert_stored_events(curs, stored_events, **kwargs)
                        conn.execute("COMMIT")
                        pipeline.sync()
                        notification_ids = self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
                except Exception as e:  # raised once the pipeline is closed, as the library does
                    failure = e
            if failure is not None:
                raise failure
        return notification_ids
