"""Read queries over the projections: each answers from one indexed lookup.

Time travel replays one claim's history rows through the domain fold; parsed histories
are cached (history is append-only), so a long claim answers in milliseconds.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any

from domain import ijson
from domain.errors import InvalidInput
from domain.fold import ClaimStatus, fold_claim, select_events
from domain.ijson import safe_integer
from domain.values import MAX_NAME, check_text, claim_ids_for_ref
from projections.tables import LIVE, Tables
from store.db import ReadStore
from store.replicas import ReadRouter

Json = dict[str, Any]
MAX_LIMIT = 500
HISTORY_FIELDS = (
    "act_id", "party", "on_behalf_of", "said_at", "source", "reported_via", "quote", "note",
    "retracts", "voids", "reason",
)
REVIEW_FIELDS = ("reviewer", "rating", "url", "reviewed_at", "summary")
WORD = re.compile(r"\w+", re.UNICODE)


def history_item(position: int, body: Json) -> Json:
    """One event in the shape `GET /v1/claims/{id}/history` serves."""
    data = body["data"]
    item: Json = {
        "position": position, "version": body["version"], "type": body["type"],
        "recorded_at": body["recorded_at"],
    }
    for name in HISTORY_FIELDS:
        item[name] = data.get(name, [] if name == "reported_via" else None)
    if body["type"] == "ClaimRegistered":
        item.update(statement=data["statement"], key=data["key"], language=data.get("language"),
                    subjects=data.get("subjects", []))
    elif body["type"] == "Reviewed":
        item.update((name, data.get(name)) for name in REVIEW_FIELDS)
    item["prev_hash"] = body["prev_hash"]
    item["hash"] = body["hash"]
    return item


def encode_cursor(after: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        # Any JSON a client sends goes through the one I-JSON parser, a forged cursor too.
        return safe_integer(ijson.loads(base64.urlsafe_b64decode(padded.encode()))["after"], "after")
    except (ValueError, KeyError, TypeError, binascii.Error):  # InvalidInput is a ValueError
        raise InvalidInput(
            "cursor is not one this server gave out; pass next_cursor from the previous page unchanged",
            "cursor",
        ) from None


class ReadModels:
    """Answers the API's read questions from the live read-model tables."""

    def __init__(self, store: ReadStore | ReadRouter, *, cache_claims: int = 2_000) -> None:
        """On `store`: the ledger's read store, or the router to its hot standbys (store/replicas.py)."""
        self.store = store
        self.tables = Tables(LIVE)
        self._histories: OrderedDict[str, list[tuple[int, Json]]] = OrderedDict()
        self._cache_claims = cache_claims
        self._lock = threading.Lock()

    # Claims.
    def resolve(self, ref: str) -> str | None:
        """The id of the claim a UUID or a key names (see `claim_ids_for_ref`)."""
        candidates = claim_ids_for_ref(ref)
        if not candidates:
            return None
        with self.store.reading() as cur:
            for claim_id in candidates:
                row = cur.execute(f"SELECT claim_id FROM {self.tables.claims} WHERE claim_id = ?",
                                  (str(claim_id),)).fetchone()
                if row:
                    return str(row[0])
        return None

    def claim(self, ref: str) -> Json | None:
        claim_id = self.resolve(ref)
        if claim_id is None:
            return None
        with self.store.reading() as cur:
            row = cur.execute(f"SELECT view FROM {self.tables.claims} WHERE claim_id = ?", (claim_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def claim_at(
        self, ref: str, version: int | None = None, recorded_as_of: datetime | None = None,
        said_as_of: datetime | None = None,
    ) -> Json | None:
        """The claim as of a version and/or a moment on either time axis."""
        if version is None and recorded_as_of is None and said_as_of is None:
            return self.claim(ref)
        _check_version(version)
        claim_id = self.resolve(ref)
        if claim_id is None:
            return None
        bodies = [body for _, body in self._history_rows(claim_id)]
        if version is not None and version > len(bodies):
            return None
        return fold_claim(bodies, version=version, recorded_as_of=recorded_as_of, said_as_of=said_as_of)

    def history(self, ref: str) -> Json | None:
        return self.history_at(ref)

    def history_at(
        self, ref: str, version: int | None = None, recorded_as_of: datetime | None = None,
        said_as_of: datetime | None = None,
    ) -> Json | None:
        _check_version(version)
        claim_id = self.resolve(ref)
        if claim_id is None:
            return None
        rows = self._history_rows(claim_id)
        if version is not None and version > len(rows):
            return None
        position_of = {id(body): position for position, body in rows}
        chosen = select_events(
            (body for _, body in rows), version=version, recorded_as_of=recorded_as_of, said_as_of=said_as_of
        )
        if not chosen or chosen[0]["type"] != "ClaimRegistered":
            return None
        return {"claim_id": claim_id, "events": [history_item(position_of[id(b)], b) for b in chosen]}

    def _history_rows(self, claim_id: str) -> list[tuple[int, Json]]:
        with self._lock:
            cached = list(self._histories.get(claim_id, []))
        with self.store.reading() as cur:
            new = cur.execute(
                f"SELECT position, body, hash FROM {self.tables.history}"
                " WHERE claim_id = ? AND version > ? ORDER BY version",
                (claim_id, len(cached)),
            ).fetchall()
        for position, text, digest in new:
            body = json.loads(text)
            body["hash"] = digest
            cached.append((int(position), body))
        with self._lock:
            self._histories[claim_id] = cached
            self._histories.move_to_end(claim_id)
            while len(self._histories) > self._cache_claims:
                self._histories.popitem(last=False)
        return cached

    def list_claims(
        self, status: str | None = None, party: str | None = None, subject: str | None = None,
        q: str | None = None, limit: int = 50, cursor: str | None = None,
    ) -> tuple[list[Json], str | None]:
        texts, next_cursor = self.list_claims_json(status, party, subject, q, limit, cursor)
        return [json.loads(text) for text in texts], next_cursor

    def list_claims_json(
        self, status: str | None = None, party: str | None = None, subject: str | None = None,
        q: str | None = None, limit: int = 50, cursor: str | None = None,
    ) -> tuple[list[str], str | None]:
        """A page of claim views as the JSON texts stored (an API can send them as they are)."""
        t = self.tables
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}", "limit")
        after = decode_cursor(cursor) if cursor else 0
        where = ["c.reg_position > ?"]
        params: list[Any] = [after]
        if status is not None:
            if status not in {s.value for s in ClaimStatus}:
                raise InvalidInput(
                    f"status must be one of {', '.join(s.value for s in ClaimStatus)} (got {status!r:.40})",
                    "status",
                )
            where.append("c.status = ?")
            params.append(status)
        if subject is not None:
            check_text(subject, "subject", max_len=MAX_NAME)  # subjects are text without NUL
            where.append(f"c.claim_id IN (SELECT claim_id FROM {t.subjects} WHERE subject = ?)")
            params.append(subject)
        if party is not None:
            where.append(
                f"c.claim_id IN (SELECT claim_id FROM {t.stances} WHERE holder_id = ? OR party_id = ?)"
            )
            params += [party, party]
        if q is not None:
            words = WORD.findall(q)
            if not words:
                raise InvalidInput("q must contain at least one word to search for", "q")
            if self.store.backend == "postgres":
                where.append(f"c.claim_id IN (SELECT claim_id FROM {t.search} WHERE tsv @@ plainto_tsquery('simple', ?))")
                params.append(" ".join(words))
            else:
                # Each word quoted: FTS5 query syntax in user input is searched as text.
                where.append(f"c.claim_id IN (SELECT claim_id FROM {t.search} WHERE {t.search} MATCH ?)")
                params.append(" ".join('"' + w.replace('"', "") + '"' for w in words))
        sql = (
            f"SELECT c.view, c.reg_position FROM {t.claims} c WHERE {' AND '.join(where)}"
            " ORDER BY c.reg_position LIMIT ?"
        )
        with self.store.reading() as cur:
            rows = cur.execute(sql, [*params, limit + 1]).fetchall()
        next_cursor = encode_cursor(int(rows[limit - 1][1])) if len(rows) > limit else None
        return [str(view) for view, _ in rows[:limit]], next_cursor

    # Parties.
    def party(self, party_id: str) -> Json | None:
        t = self.tables
        with self.store.reading() as cur:
            held = cur.execute(
                f"SELECT item FROM {t.stances} WHERE holder_id = ? ORDER BY reg_position", (party_id,)
            ).fetchall()
            spoken = cur.execute(
                f"SELECT item FROM {t.stances} WHERE party_id = ? AND holder_id <> ? ORDER BY reg_position",
                (party_id, party_id),
            ).fetchall()
            reviewed = cur.execute(
                f"SELECT item FROM {t.reviews} WHERE reviewer_id = ? ORDER BY reg_position", (party_id,)
            ).fetchall()
        if not held and not spoken and not reviewed:
            return None
        stances = [json.loads(i) for (i,) in held]
        spoken_for = [json.loads(i) for (i,) in spoken]
        reviews = [json.loads(i) for (i,) in reviewed]
        if stances:
            name = stances[0]["holder"]["name"]
        elif spoken_for:
            name = spoken_for[0]["party"]["name"]
        else:
            name = reviews[0]["reviewer"]["name"]
        return {
            "party_id": party_id, "name": name, "stances": stances, "spoken_for_others": spoken_for,
            "reviews": reviews,
        }

    # The event feed and positions.
    def feed(self, after: int = 0, limit: int = 100) -> list[Json]:
        return [{"position": p, "hash": h, "body": json.loads(b)} for p, h, b, _, _ in self.feed_rows(after, limit)]

    def feed_rows(self, after: int = 0, limit: int = 100) -> list[tuple[int, str, str, str, str]]:
        """The feed's items as stored: (position, hash, the body's JSON text, claim id, event
        type); `feed` decodes the bodies, the event stream sends them as they are."""
        if after < 0:
            raise InvalidInput("after must be 0 or a position from a previous page", "after")
        if not 1 <= limit <= 10_000:
            raise InvalidInput("limit must be between 1 and 10000", "limit")
        with self.store.reading() as cur:
            rows = cur.execute(
                f"SELECT position, hash, body, claim_id, type FROM {self.tables.history} WHERE position > ?"
                " ORDER BY position LIMIT ?", (after, limit),
            ).fetchall()
        return [(int(p), str(h), str(b), str(c), str(t)) for p, h, b, c, t in rows]

    def position(self) -> int:
        with self.store.reading() as cur:
            row = cur.execute(f"SELECT position FROM {self.tables.tracking} WHERE name = 'ledger'").fetchone()
        return int(row[0]) if row else 0

    def wait_for(self, position: int, timeout: float) -> bool:
        """True once the projections have applied `position` (bounded wait)."""
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            if self.position() >= position:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def _check_version(version: int | None) -> None:
    if version is not None and version < 1:
        raise InvalidInput("version must be 1 or more", "version")
