"""`Idempotency-Key`: a retried write answers with the first response and writes nothing.

The first successful response is kept per (token, key) with a fingerprint of the request.
A key is reserved before the write, atomically through the table's primary key: a
*pending* row (status 0) names the request that holds it. So two different requests
with one key, arriving at the same instant on two API processes, cannot both be
written: the one that did not reserve the key is answered 422 and writes nothing.

A request identical to the holder's (same fingerprint) goes ahead and writes: that write
is an idempotent retry in the domain (the act_id of an act sent without one is derived
from the key; a registration names its claim by its key). This also covers a crash
between the ledger's commit and keeping the response: the pending row stays, and the
client's retry completes it. The first to complete the row is the response kept.

Only successes are kept: a request the ledger refused wrote nothing, so it gives its key
back and a retry is answered afresh. A write that failed otherwise (503: the database went
away, the write timed out) may have been recorded, so its key stays reserved for a retry
of the same request; pending rows age out with the time-to-live like the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from api.problems import Problem, status_of
from domain.errors import LedgerError, StoreUnavailable
from store.db import ReadStore

TABLE = "api_idempotency"
KEY = re.compile(r"[\x21-\x7e]{1,255}")
DEFAULT_TTL_SECONDS = 24 * 3600
PURGE_EVERY_SECONDS = 600.0
PENDING = 0  # the status of a reserved key whose request has not finished
RESERVE_ATTEMPTS = 5

Json = dict[str, Any]


@dataclass(frozen=True)
class KeptResponse:
    status: int
    body: Json
    fingerprint: str

    @property
    def pending(self) -> bool:
        return self.status == PENDING


def check_key(value: str) -> str:
    if not KEY.fullmatch(value):
        raise Problem(
            422, "Idempotency-Key must be 1-255 visible ASCII characters, e.g. a UUID",
            code="invalid-idempotency-key", title="Invalid Idempotency-Key",
        )
    return value


def fingerprint(method: str, path: str, body: Json, if_match: str | None) -> str:
    """The identity of a request, insensitive to JSON spacing and key order."""
    text = json.dumps(
        {"method": method, "path": path, "if_match": if_match, "body": body},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def derived_act_id(scope: str, key: str) -> str:
    """The act_id of an act sent with an Idempotency-Key and without an act_id."""
    return "idem-" + hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()[:20]


def key_reused(key: str, held: KeptResponse) -> Problem:
    if held.pending:
        detail = (f"Idempotency-Key {key!r} is in use by a different request that has not finished; "
                  "use a new key for a new request")
    else:
        detail = f"Idempotency-Key {key!r} was already used for a different request; use a new key for a new request"
    return Problem(422, detail, code="idempotency-key-reused", title="Idempotency-Key reused")


def refused(error: Exception) -> bool:
    """Whether a write failed because it was refused (4xx), so that it surely wrote nothing.

    A 5xx (the database went away, the write timed out in the writer, a bug) leaves the
    outcome unknown: the write may be recorded.
    """
    if isinstance(error, Problem):
        return 400 <= error.status < 500
    return isinstance(error, LedgerError) and 400 <= status_of(error) < 500


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

    def _claim(self, scope: str, key: str, request_fingerprint: str) -> tuple[KeptResponse | None, bool]:
        """(the kept response to replay, None) or (None, whether this request reserved the key).

        Raises 422 when the key is kept or reserved for a different request.
        """
        for _ in range(RESERVE_ATTEMPTS):
            if self.reserve(scope, key, request_fingerprint):
                return None, True
            held = self.lookup(scope, key)
            if held is None:  # given back between the two statements: try again
                continue
            if held.fingerprint != request_fingerprint:
                raise key_reused(key, held)
            if held.pending:  # an identical request holds it (in flight, or it crashed)
                return None, False
            return held, False
        raise Problem(
            409, f"Idempotency-Key {key!r} is being reserved and given back by other requests; retry",
            code="idempotency-key-busy", title="Idempotency-Key busy",
        )

    def run(
        self, scope: str, key: str, request_fingerprint: str, write: Callable[[], tuple[int, Json]]
    ) -> tuple[KeptResponse, bool]:
        """The kept response for this key (and True), or the response of `write` (and False)."""
        kept, owner = self._claim(scope, key, request_fingerprint)
        if kept is not None:
            return kept, True
        try:
            status, body = write()
        except Exception as e:
            if not refused(e):
                raise  # it may be recorded: the key stays reserved for a retry of this request
            replay = self._after_refusal(scope, key, request_fingerprint, owner)
            if replay is None:
                raise
            return replay, True
        response = KeptResponse(status, body, request_fingerprint)
        if not 200 <= status < 300:
            replay = self._after_refusal(scope, key, request_fingerprint, owner)
            return (response, False) if replay is None else (replay, True)
        kept = self.keep(scope, key, response)
        return kept, kept is not response

    def _after_refusal(self, scope: str, key: str, request_fingerprint: str, owner: bool) -> KeptResponse | None:
        """Give the key back if this request reserved it; the response an identical request
        had kept meanwhile (answered instead of the refusal), else None."""
        with contextlib.suppress(StoreUnavailable):  # the refusal is the answer; the row ages out
            held = self.lookup(scope, key)
            if held is not None and not held.pending and held.fingerprint == request_fingerprint:
                return held
            if owner:
                self.release(scope, key, request_fingerprint)
        return None
