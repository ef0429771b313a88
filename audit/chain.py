"""The rules every claim's events obey, written once for every verifier of the log.

Fed each event of the log in log order, :class:`ChainCheck` reports each rule an event
breaks, naming its claim and version:

- ``event-hash``: the event's hash is the SHA-256 of its body's RFC 8785 (JCS) text;
- ``version``: a claim's versions run 1, 2, 3, ... in log order;
- ``chain``: an event's prev_hash is the hash of its claim's previous version, 64 zeros
  for version 1;
- ``type``: the type is one of the claim events; version 1 is ClaimRegistered, and no
  later version is;
- ``claim-id``: a claim's id is a UUID written lowercase with hyphens.

The caller recomputes each body's hash (``domain.canonical``) from what it holds: the
stored fields (`claims verify`) or the body the feed serves (`claims audit`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from domain.canonical import GENESIS_HASH
from domain.claim import EVENT_CLASSES, Claim

REGISTERED = Claim.Registered.TYPE
EVENT_TYPES = frozenset(cls.TYPE for cls in EVENT_CLASSES)
_LATER_TYPES = EVENT_TYPES - {REGISTERED}
_CLAIM_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Break(NamedTuple):
    """One rule an event breaks: which (see the module's list), where, and how."""

    rule: str
    claim_id: str
    version: int
    detail: str


_HOLDS: tuple[Break, ...] = ()


class ChainCheck:
    """Each claim's chain so far, checking every event handed to it against the rules."""

    def __init__(self) -> None:
        self._heads: dict[str, tuple[int, object]] = {}  # claim id -> (its last version, that event's hash)

    @classmethod
    def resume(cls, heads: Mapping[str, tuple[int, str]]) -> ChainCheck:
        """Go on from where an earlier check stopped: each claim's last version and its hash."""
        check = cls()
        check._heads.update(heads)
        return check

    @property
    def claims(self) -> int:
        """How many claims the events so far belong to."""
        return len(self._heads)

    def take(
        self, claim_id: str, version: int, kind: str, prev_hash: object, stated: object, digest: str,
    ) -> Sequence[Break]:
        """The rules the log's next event breaks (none: an empty sequence).

        `prev_hash` and `stated` (the hash the event carries) are as the event gives them,
        whatever their JSON type; `digest` is the hash its body recomputes to. A whole log
        runs through here, so an event that keeps every rule costs a lookup and a few
        comparisons.
        """
        head = self._heads.get(claim_id)
        if head is None:
            holds = version == 1 and digest == stated and prev_hash == GENESIS_HASH and kind == REGISTERED and (
                _CLAIM_ID.fullmatch(claim_id) is not None
            )
        else:
            holds = digest == stated and version == head[0] + 1 and prev_hash == head[1] and kind in _LATER_TYPES
        self._heads[claim_id] = (version, stated)
        return _HOLDS if holds else _breaks(head, claim_id, version, kind, prev_hash, stated, digest)


def _breaks(
    head: tuple[int, object] | None, claim_id: str, version: int, kind: str, prev_hash: object,
    stated: object, digest: str,
) -> list[Break]:
    found: list[Break] = []

    def broken(rule: str, detail: str) -> None:
        found.append(Break(rule, claim_id, version, detail))

    if digest != stated:
        broken("event-hash", f"the event was changed after it was recorded: its fields hash to {digest} "
                             f"but it carries the hash {stated!s:.80}")
    last_version, last_hash = head or (0, GENESIS_HASH)
    if version != last_version + 1:
        broken("version", f"the claim's first event in the log is version {version}, not 1" if head is None
               else f"version {version} follows version {last_version} in the log; a claim's versions run "
               "1, 2, 3, ...")
    elif prev_hash != last_hash:
        expected = ("64 zeros (it is the claim's first event)" if head is None
                    else f"{last_hash!s:.80}, the hash of version {last_version}")
        broken("chain", f"prev_hash is {prev_hash!s:.80} but must be {expected}")
    if kind not in EVENT_TYPES:
        broken("type", f"the type {kind!r:.80} is none of the claim events ({', '.join(sorted(EVENT_TYPES))})")
    elif (version == 1) != (kind == REGISTERED):
        broken("type", f"a claim's first event is {REGISTERED}, not {kind}" if version == 1
               else f"{REGISTERED} after the claim's first event: a claim is registered once")
    if head is None and not _CLAIM_ID.fullmatch(claim_id):
        broken("claim-id", f"the claim id {claim_id!r:.80} is not a UUID written lowercase with hyphens")
    return found
