"""Every request-and-answer endpoint of the HTTP API, written once for both clients.

`Endpoints[R]` builds each call (client/core.py) and hands it to `_call`, whose result type
`R` is the answer itself in `LedgerClient` and an awaitable of it in `AsyncLedgerClient`:
`client.get_claim("putin-phoned-elton-john")` or `await aclient.get_claim(...)`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

from client import core
from client.core import (
    AsOf,
    Call,
    Json,
    PartyLike,
    RatingLike,
    SourceLike,
    Status,
    present,
    segment,
    time_travel,
)

R = TypeVar("R")


class Endpoints(ABC, Generic[R]):
    """The API's endpoints; a subclass sends the calls."""

    @abstractmethod
    def _call(self, call: Call, idempotency_key: str | None = None, write: bool = False) -> R:
        """Send `call` (retrying as core.retryable says; a write with one Idempotency-Key for
        all its tries) and return its decoded answer."""

    # -- Any GET ----------------------------------------------------------------------------------

    def get(self, path: str, params: dict[str, str | int] | None = None) -> R:
        """Any GET of the API (`path` from the root, e.g. "/v1/audit/checkpoint"), its answer
        decoded as I-JSON: for a route this client has no method for."""
        return self._call(core.get(path, params))

    # -- Writes -----------------------------------------------------------------------------------

    def register(
        self, statement: str, *, key: str | None = None, language: str | None = None,
        subjects: Sequence[str] | None = None, idempotency_key: str | None = None,
    ) -> R:
        """Register a claim (role recorder): `{id, key, version, position}`. Registering the
        statement a key already holds changes nothing and answers the same; another statement
        under that key raises `Conflict`."""
        body = present(statement=statement, key=key, language=language,
                       subjects=None if subjects is None else list(subjects))
        return self._call(core.register(body), idempotency_key, write=True)

    def record_act(
        self, kind: str, claim: str, body: Json, *, if_match: int | None = None, idempotency_key: str | None = None,
    ) -> R:
        """Record an act given as its JSON body: `kind` is assert, deny, retract, void or
        review (the methods below build the body from arguments). Answers
        `{act_id, version, position}`. `if_match`: refused (`PreconditionFailed`) when the
        claim has moved past that version."""
        return self._call(core.act(kind, claim, body, if_match), idempotency_key, write=True)

    def assert_claim(
        self, claim: str, party: PartyLike, *, on_behalf_of: PartyLike | None = None, said_at: str | None = None,
        source: SourceLike | None = None, reported_via: Sequence[SourceLike] | None = None, quote: str | None = None,
        note: str | None = None, act_id: str | None = None, if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Record that `party` asserts the claim (for `on_behalf_of`, when it speaks for someone)."""
        body = stance(party, on_behalf_of, said_at, source, reported_via, quote, note, act_id)
        return self.record_act("assert", claim, body, if_match=if_match, idempotency_key=idempotency_key)

    def deny_claim(
        self, claim: str, party: PartyLike, *, on_behalf_of: PartyLike | None = None, said_at: str | None = None,
        source: SourceLike | None = None, reported_via: Sequence[SourceLike] | None = None, quote: str | None = None,
        note: str | None = None, act_id: str | None = None, if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Record that `party` denies the claim (for `on_behalf_of`, when it speaks for someone)."""
        body = stance(party, on_behalf_of, said_at, source, reported_via, quote, note, act_id)
        return self.record_act("deny", claim, body, if_match=if_match, idempotency_key=idempotency_key)

    def retract(
        self, claim: str, retracts: str, party: PartyLike, *, said_at: str | None = None, source: SourceLike | None = None,
        reason: str | None = None, act_id: str | None = None, if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Record that `party` withdraws its assertion or denial `retracts` (an act_id)."""
        body = present(retracts=retracts, party=member(party), said_at=said_at, source=member(source), reason=reason,
                       act_id=act_id)
        return self.record_act("retract", claim, body, if_match=if_match, idempotency_key=idempotency_key)

    def void(
        self, claim: str, voids: str, reason: str, *, act_id: str | None = None, if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Void the act `voids`, recorded in error (role editor)."""
        body = present(voids=voids, reason=reason, act_id=act_id)
        return self.record_act("void", claim, body, if_match=if_match, idempotency_key=idempotency_key)

    def review(
        self, claim: str, reviewer: PartyLike, rating: RatingLike, url: str, *, reviewed_at: str | None = None,
        summary: str | None = None, act_id: str | None = None, if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Record a fact-checker's published review of the claim: who reviewed it, its rating
        (`text`, and `value` between `worst` and `best` when it is on a scale), the review's
        http(s) `url` and when it was published. A review never changes the claim's status."""
        body = present(reviewer=member(reviewer), rating=member(rating), url=url, reviewed_at=reviewed_at,
                       summary=summary, act_id=act_id)
        return self.record_act("review", claim, body, if_match=if_match, idempotency_key=idempotency_key)

    # -- Reads ------------------------------------------------------------------------------------

    def get_claim(
        self, claim: str, *, version: int | None = None, recorded_as_of: AsOf | None = None,
        said_as_of: AsOf | None = None, min_position: int | None = None,
    ) -> R:
        """A claim's view (status, stances, counts, version), now or at a past moment:
        `version` (after its N-th event), `recorded_as_of` (what the ledger knew at T),
        `said_as_of` (the world at T as known now); T a date (its end, UTC) or a date-time.
        `min_position`: wait (up to 2 s) until the server's reads include that position."""
        params = time_travel(version, recorded_as_of, said_as_of, min_position)
        return self._call(core.get(f"/v1/claims/{segment(claim)}", params))

    def history(
        self, claim: str, *, version: int | None = None, recorded_as_of: AsOf | None = None,
        said_as_of: AsOf | None = None, min_position: int | None = None,
    ) -> R:
        """Every event of a claim `{claim_id, events}`, with the same time travel as `get_claim`."""
        params = time_travel(version, recorded_as_of, said_as_of, min_position)
        return self._call(core.get(f"/v1/claims/{segment(claim)}/history", params))

    def list_claims(
        self, *, status: Status | None = None, party: str | None = None, subject: str | None = None,
        q: str | None = None, limit: int | None = None, cursor: str | None = None, min_position: int | None = None,
    ) -> R:
        """One page of claims in registration order, `{items, next_cursor}`, filtered by
        status, party, subject and full-text `q`; pass `next_cursor` as `cursor` for the next."""
        params = present(status=status, party=party, subject=subject, q=q, limit=limit, cursor=cursor,
                         min_position=min_position)
        return self._call(core.get("/v1/claims", params))

    def party(self, party_id: str, *, min_position: int | None = None) -> R:
        """A party's stances across claims, `{party_id, name, stances, spoken_for_others}`."""
        return self._call(core.get(f"/v1/parties/{segment(party_id)}", present(min_position=min_position)))

    def events(self, after: int = 0, limit: int | None = None) -> R:
        """One page of the event feed (role auditor), `{items: [{position, hash, body}], next_after}`."""
        return self._call(core.get("/v1/events", present(after=after, limit=limit)))

    # -- Audit and operations ---------------------------------------------------------------------

    def checkpoint(self) -> R:
        """A signed checkpoint of the Merkle log `{tree_size, root_hash, timestamp, signature}` (role auditor)."""
        return self._call(core.get("/v1/audit/checkpoint"))

    def inclusion_proof(self, position: int, tree_size: int | None = None) -> R:
        """The RFC 9162 proof that the event at `position` is in the tree of `tree_size` events (role auditor)."""
        return self._call(core.get("/v1/audit/proofs/inclusion", present(position=position, tree_size=tree_size)))

    def consistency_proof(self, from_size: int, to_size: int | None = None) -> R:
        """The RFC 9162 proof that the tree of `from_size` events is a prefix of that of `to_size` (role auditor)."""
        return self._call(core.get("/v1/audit/proofs/consistency", present(from_size=from_size, to_size=to_size)))

    def public_key(self) -> R:
        """The ledger's Ed25519 public key `{algorithm, public_key}`, open to all: pin it."""
        return self._call(core.get("/v1/audit/public-key"))

    def health(self) -> R:
        """`/healthz`: `{status, database, backend, projections}`; `status` is "unavailable"
        (and the answer a 503, returned all the same) when the ledger cannot be used."""
        return self._call(core.health())


def stance(
    party: PartyLike, on_behalf_of: PartyLike | None, said_at: str | None, source: SourceLike | None,
    reported_via: Sequence[SourceLike] | None, quote: str | None, note: str | None, act_id: str | None,
) -> dict[str, Any]:
    return present(party=member(party), on_behalf_of=member(on_behalf_of), said_at=said_at, source=member(source),
                   reported_via=None if reported_via is None else [dict(s) for s in reported_via], quote=quote,
                   note=note, act_id=act_id)


def member(value: Mapping[str, Any] | None) -> Json | None:
    """An object member of a body, as a plain dict (JSON takes no other mapping)."""
    return None if value is None else dict(value)
