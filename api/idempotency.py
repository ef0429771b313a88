"""`Idempotency-Key`: a retried write answers with the first response and writes nothing.

The first successful response is kept per (token, key) with a fingerprint of the request.
A crash between the ledger's commit and keeping the response is covered too: the act_id
of an act sent without one is derived from the key, so the retry is an idempotent act
retry in the domain. Only successes are kept: a refused request wrote nothing, so
answering a retry afresh is both safe and more useful.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from api.problems import Problem
from projections.db import ReadStore

TABLE = "api_idempotency"
KEY = re.compile(r"[\x21-\x7e]{1,255}")
DEFAULT_TTL_SECONDS = 24 * 3600
PURGE_EVERY_SECONDS = 600.0

Json = dict[str, Any]


@dataclass(frozen=True)
class KeptResponse:
    status: int
    body: Json
    fingerprint: str


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
        with self.store.reading() as cur:
            row = cur.execute(
                f"SELECT status, body, fingerprint FROM {TABLE} WHERE scope = ? AND key = ?", (scope, key)
            ).fetchone()
        return None if row is None else KeptResponse(int(row[0]), json.loads(row[1]), str(row[2]))

    def keep(self, scope: str, key: str, response: KeptResponse) -> KeptResponse:
        """Keep a response unless one is kept already; returns the one kept (first wins)."""
        with self.store.transaction() as cur:
            cur.execute(
                f"INSERT INTO {TABLE} (scope, key, fingerprint, status, body, created)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, key) DO NOTHING",
                (scope, key, response.fingerprint, response.status,
                 json.dumps(response.body, separators=(",", ":")), int(time.time())),
            )
        self._purge_now_and_then()
        kept = self.lookup(scope, key)
        return kept if kept is not None and kept.fingerprint == response.fingerprint else response

    def purge(self) -> int:
        """Forget responses older than the time-to-live."""
        with self.store.transaction() as cur:
            cur.execute(f"DELETE FROM {TABLE} WHERE created < ?", (int(time.time()) - self.ttl_seconds,))
            return cur.rowcount

    def _purge_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._last_purge >= PURGE_EVERY_SECONDS:
            self._last_purge = now
            self.purge()

    def run(
        self, scope: str, key: str, request_fingerprint: str, write: Callable[[], tuple[int, Json]]
    ) -> tuple[KeptResponse, bool]:
        """The kept response for this key (and True), or the response of `write` (and False)."""
        kept = self.lookup(scope, key)
        if kept is not None:
            if kept.fingerprint != request_fingerprint:
                raise Problem(
                    422, f"Idempotency-Key {key!r} was already used for a different request; "
                    "use a new key for a new request",
                    code="idempotency-key-reused", title="Idempotency-Key reused",
                )
            return kept, True
        status, body = write()
        response = KeptResponse(status, body, request_fingerprint)
        if 200 <= status < 300:
            response = self.keep(scope, key, response)
        return response, False
