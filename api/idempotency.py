"""`Idempotency-Key`: a retried write answers with the first response and writes nothing.

The first successful response is kept per (token, key) with a fingerprint of the request,
in the `api_idempotency` table (store/idempotency.py). A key is reserved before the write,
atomically through the table's primary key: a *pending* row names the request that holds
it. So two different requests with one key, arriving at the same instant on two API
processes, cannot both be written: the one that did not reserve the key is answered 422
and writes nothing.

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
from collections.abc import Callable

from api.problems import Problem, status_of
from domain.errors import LedgerError, StoreUnavailable
from store.idempotency import IdempotencyStore, Json, KeptResponse

KEY = re.compile(r"[\x21-\x7e]{1,255}")
RESERVE_ATTEMPTS = 5


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


def run_once(
    table: IdempotencyStore, scope: str, key: str, request_fingerprint: str,
    write: Callable[[], tuple[int, Json]],
) -> tuple[KeptResponse, bool]:
    """The kept response for this key (and True), or the response of `write` (and False)."""
    kept, owner = _claim(table, scope, key, request_fingerprint)
    if kept is not None:
        return kept, True
    try:
        status, body = write()
    except Exception as e:
        if not refused(e):
            raise  # it may be recorded: the key stays reserved for a retry of this request
        replay = _after_refusal(table, scope, key, request_fingerprint, owner)
        if replay is None:
            raise
        return replay, True
    response = KeptResponse(status, body, request_fingerprint)
    if not 200 <= status < 300:
        replay = _after_refusal(table, scope, key, request_fingerprint, owner)
        return (response, False) if replay is None else (replay, True)
    kept = table.keep(scope, key, response)
    return kept, kept is not response


def _claim(
    table: IdempotencyStore, scope: str, key: str, request_fingerprint: str,
) -> tuple[KeptResponse | None, bool]:
    """(the kept response to replay, None) or (None, whether this request reserved the key).

    Raises 422 when the key is kept or reserved for a different request.
    """
    for _ in range(RESERVE_ATTEMPTS):
        if table.reserve(scope, key, request_fingerprint):
            return None, True
        held = table.lookup(scope, key)
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


def _after_refusal(
    table: IdempotencyStore, scope: str, key: str, request_fingerprint: str, owner: bool,
) -> KeptResponse | None:
    """Give the key back if this request reserved it; the response an identical request
    had kept meanwhile (answered instead of the refusal), else None."""
    with contextlib.suppress(StoreUnavailable):  # the refusal is the answer; the row ages out
        held = table.lookup(scope, key)
        if held is not None and not held.pending and held.fingerprint == request_fingerprint:
            return held
        if owner:
            table.release(scope, key, request_fingerprint)
    return None
