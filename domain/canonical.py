"""The canonical event encoding: body, RFC 8785 (JCS) bytes and SHA-256 hash.

An event's body is
``{"claim_id", "version", "type", "recorded_at", "prev_hash", "data"}`` and its hash is
the lowercase hex SHA-256 of the JCS encoding of that body. ``prev_hash`` chains the
events of one claim; the first event's is 64 zeros.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import orjson
import rfc8785

GENESIS_HASH = "0" * 64

_SAFE_INT = 2**53 - 1  # JCS numbers are IEEE doubles


def canonical_bytes(value: Any) -> bytes:
    """The RFC 8785 (JCS) encoding of a JSON value.

    For plain values (see ``is_plain``) orjson's key-sorted output is JCS, byte for byte:
    it escapes exactly ``"``, ``\\`` and U+0000-U+001F, with the same short forms and
    lowercase ``\\u00xx``, writes every other character as UTF-8, and sorts keys by code
    point, which is UTF-16 order for keys below U+D800. It is much faster than the
    pure-Python ``rfc8785``, which encodes everything else (floats, big integers, other
    keys, lone surrogates) and raises its errors.
    """
    if is_plain(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # a lone surrogate or deep nesting: rfc8785 decides
            pass
    return rfc8785.dumps(value)


def canonical_json(value: Any) -> tuple[str, bool]:
    """``canonical_bytes(value)`` as text, and whether orjson wrote it from a plain value.

    When it did, parsing the text gives back a value equal to ``value``, of the same
    types (dicts, lists, strings, None, booleans, small integers): a caller holding
    ``value`` need not parse the text again.
    """
    if is_plain(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode(), True
        except orjson.JSONEncodeError:
            pass
    return rfc8785.dumps(value).decode(), False


def is_plain(value: Any) -> bool:
    """Whether orjson's key-sorted output for ``value`` is its JCS encoding.

    Plain: dicts with string keys below U+D800 (where code-point order is UTF-16
    order), lists, strings, None, booleans and integers JCS writes exactly (|n| < 2**53),
    all of exactly these types.
    """
    kind = type(value)
    if kind is dict:
        return _plain_dict(value)
    if kind is list:
        return _plain_items(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -_SAFE_INT <= value <= _SAFE_INT
    return False


def _plain_dict(value: dict[Any, Any]) -> bool:
    for key in value:
        if type(key) is not str or not (key.isascii() or max(key) < "\ud800"):
            return False
    return _plain_items(value.values())


def _plain_items(items: Iterable[Any]) -> bool:
    for item in items:
        kind = type(item)
        if kind is str or item is None:
            continue
        if kind is dict:
            if not _plain_dict(item):
                return False
        elif not is_plain(item):
            return False
    return True


def event_body(
    *,
    claim_id: str,
    version: int,
    type: str,
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


def body_text(
    *, claim_id: str, version: int, type: str, recorded_at: str, prev_hash: str, data_json: str
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
