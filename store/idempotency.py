"""The `api_idempotency` table: per (scope, key), a reservation or the response kept.

A key is reserved before its write, atomically through the table's primary key: a
*pending* row (status 0) names, by its fingerprint, the request that holds it. The
first response to complete a row is the one kept. How a request uses the table, and
what it is answered, is the API's `Idempotency-Key` protocol (api/idempotency.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from store.db import ReadStore

TABLE = "api_idempotency"
DEFAULT_TTL_SECONDS = 24 * 3600
PURGE_EVERY_SECONDS = 600.0
PENDING = 0  # the status of a reserved key whose request has not finished

Json = dict[str, Any]


@dataclass(frozen=True)
class KeptResponse:
    status: int
    body: Json
    fingerprint: str

    @property
    def pending(self) -> bool:
        return self.status == PENDING


class IdempotencyStore:
    """The `api_idempotency` table in the ledger's database."""

    def __init__(self, store: ReadStore, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> None:
        self.store = store
        self.ttl_seconds = ttl_seconds
        self._last_purge = 0.0

    def ensure_table(self) -> None:
        with self.store.transaction() as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                " scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,"
                " status INTEGER NOT NULL, body TEXT NOT NULL, created INTEGER NOT NULL,"
                " PRIMARY KEY (scope, key))"
            )

    def lookup(self, scope: str, key: str) -> KeptResponse | None:
        """The row for this key: a kept response, or a reservation (`pending`)."""
        with self.store.reading() as cur:
            row = cur.execute(
                f"SELECT status, body, fingerprint FROM {TABLE} WHERE scope = ? AND key = ?", (scope, key)
            ).fetchone()
        if row is None:
            return None
        status = int(row[0])
        return KeptResponse(status, {} if status == PENDING else json.loads(row[1]), str(row[2]))

    def reserve(self, scope: str, key: str, request_fingerprint: str) -> bool:
        """Reserve the key for this request; False when it has a row already."""
        with self.store.transaction() as cur:
            cur.execute(
                f"INSERT INTO {TABLE} (scope, key, fingerprint, status, body, created)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, key) DO NOTHING",
                (scope, key, request_fingerprint, PENDING, "{}", int(time.time())),
            )
            return cur.rowcount == 1

    def release(self, scope: str, key: str, request_fingerprint: str) -> None:
        """Give back a reservation this request holds (its write was refused)."""
        with self.store.transaction() as cur:
            cur.execute(
                f"DELETE FROM {TABLE} WHERE scope = ? AND key = ? AND status = ? AND fingerprint = ?",
                (scope, key, PENDING, request_fingerprint),
            )

    def keep(self, scope: str, key: str, response: KeptResponse) -> KeptResponse:
        """Keep a response unless one is kept already; returns the one kept (first wins).

        The key's reservation for this request is completed; without one (it was given back
        by an identical request that was refused) the response is kept afresh.
        """
        body = json.dumps(response.body, separators=(",", ":"))
        with self.store.transaction() as cur:
            cur.execute(
                f"UPDATE {TABLE} SET status = ?, body = ?"
                " WHERE scope = ? AND key = ? AND status = ? AND fingerprint = ?",
                (response.status, body, scope, key, PENDING, response.fingerprint),
            )
            if cur.rowcount != 1:
                cur.execute(
                    f"INSERT INTO {TABLE} (scope, key, fingerprint, status, body, created)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, key) DO NOTHING",
                    (scope, key, response.fingerprint, response.status, body, int(time.time())),
                )
            kept = cur.rowcount == 1
        self._purge_now_and_then()
        if kept:
            return response
        found = self.lookup(scope, key)
        return found if found is not None and not found.pending and found.fingerprint == response.fingerprint \
            else response

    def purge(self) -> int:
        """Forget responses, and reservations, older than the time-to-live."""
        with self.store.transaction() as cur:
            cur.execute(f"DELETE FROM {TABLE} WHERE created < ?", (int(time.time()) - self.ttl_seconds,))
            return cur.rowcount

    def _purge_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._last_purge >= PURGE_EVERY_SECONDS:
            self._last_purge = now
            self.purge()
