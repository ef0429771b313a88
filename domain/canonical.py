"""The canonical event encoding: body, RFC 8785 (JCS) bytes and SHA-256 hash.

An event's body is
``{"claim_id", "version", "type", "recorded_at", "prev_hash", "data"}`` and its hash is
the lowercase hex SHA-256 of the JCS encoding of that body. ``prev_hash`` chains the
events of one claim; the first event's is 64 zeros.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

GENESIS_HASH = "0" * 64

EVENT_TYPES = ("ClaimRegistered", "Asserted", "Denied", "Retracted", "ActVoided")


def canonical_bytes(value: Any) -> bytes:
    return rfc8785.dumps(value)


def event_body(
    *,
    claim_id: str,
    version: int,
    type: str,  # noqa: A002 - the field is called "type" in the published encoding
    recorded_at: str,
    prev_hash: str,
    data: dict[str, Any],
) -> dict[str, Any]:
    return {
        "claim_id": claim_id,
        "version": version,
        "type": type,
        "recorded_at": recorded_at,
        "prev_hash": prev_hash,
        "data": data,
    }


def body_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes(body)).hexdigest()
