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


def body_text(
    *, claim_id: str, version: int, type: str, recorded_at: str, prev_hash: str, data_json: str  # noqa: A002
) -> str:
    """The JCS text of an event body, assembled from its already-canonical data.

    Equal to ``canonical_bytes(event_body(...)).decode()``: JCS orders the body's keys
    as written here, and the other values are plain ASCII with nothing to escape. It
    spares re-canonicalising data that was canonicalised when the event was made.
    """
    return (
        f'{{"claim_id":"{claim_id}","data":{data_json},"prev_hash":"{prev_hash}",'
        f'"recorded_at":"{recorded_at}","type":"{type}","version":{version}}}'
    )


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
