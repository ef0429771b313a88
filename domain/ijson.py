"""I-JSON (RFC 7493): the one parser of every JSON document the ledger takes in.

An act is recorded exactly as every reader of the request sees it. Readers of JSON differ
on three things I-JSON forbids: a member name given twice in one object (most keep the
last, some the first, some refuse), strings holding lone surrogates (some refuse them, some
replace them, some keep them), and numbers an IEEE 754 double cannot hold (some round them,
some keep every digit). A proxy, a log or the sender's own audit trail could then read
another statement than the one the ledger proves, hash and all; RFC 8785, which the hashes
rest on, is defined over I-JSON. `loads` refuses all three, naming the member, and returns
what every I-JSON reader reads.

Every JSON input goes through `loads`: HTTP bodies (api/app.py `BodyGuard`, once per
request, before any route), list cursors, fixture lines (fixtures/replay.py), and the
auditor's reading of a server (audit/remote.py).

How it stays cheap on the write path, where a body has a handful of objects and usually
no number at all: orjson parses (and refuses malformed JSON, invalid UTF-8, lone
surrogates, NaN and numbers beyond a double's range), then three checks in C or on a few
values show that nothing else can be wrong:

- duplicates: each member of the text has one colon outside strings; orjson's compact
  output of the parsed value has one per member it kept, and inside strings the same
  colons as the text, unless the text wrote one as ``\\u003a``. So when the text has no
  ``\\u003`` and as many colons as that output, no member was dropped;
- integers: writing that output with ``OPT_STRICT_INTEGER`` fails on any integer beyond
  ±(2**53 - 1), the only ones whose digits a double may not hold;
- floats: a walk of the value finds none.

Only when a check does not hold (or orjson refused) does the exact pass run: the standard
library's parser, keeping every member of every object and every number's text, whose
first problem in document order is the one reported.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from domain.errors import (
    DuplicateMember,
    InexactNumber,
    InvalidInput,
    LoneSurrogate,
    MalformedJson,
    json_path,
)

# The largest integer a double holds together with every integer below it (RFC 7493 §2.2):
# the bound of every count, version and position the ledger reads or writes.
MAX_SAFE_INTEGER = 2**53 - 1
# Nesting deeper than this is refused: it is as deep as orjson writes a value back out, so
# the check that the fast path gets from writing the value holds for every document.
MAX_DEPTH = 254

RFC = "I-JSON (RFC 7493)"
INEXACT = (
    "{why}; " + RFC + " takes only numbers an IEEE 754 double holds exactly as written: send fewer digits, "
    "or the value as a string"
)
Loc = tuple[str | int, ...]


def loads(data: bytes | str) -> Any:
    """The value of an I-JSON document; InvalidJson (an InvalidInput) naming what to fix.

    Refused: malformed JSON or UTF-8, a member name twice in one object (DuplicateMember),
    a lone surrogate in a string or name (LoneSurrogate), a number a double does not hold
    exactly as written, NaN or Infinity (InexactNumber), nesting deeper than MAX_DEPTH.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        _exact_pass(raw)  # says what is wrong, and where, when it is an I-JSON rule
        raise MalformedJson(_malformed(e.msg, e.lineno, e.colno)) from None
    try:
        written = orjson.dumps(value, option=orjson.OPT_STRICT_INTEGER)
    except orjson.JSONEncodeError:  # an integer past ±(2**53 - 1), or deep nesting
        _exact_pass(raw)
        return value
    if written == raw:  # the text is orjson's own writing of the value: nothing can be wrong
        return value
    if raw.count(b":") != written.count(b":") or b"\\u003" in raw or _has_float(value):
        _exact_pass(raw)
    return value


def safe_integer(value: object, field: str, *, minimum: int = 0) -> int:
    """`value` as a count, version or position: an integer from `minimum` to MAX_SAFE_INTEGER."""
    if type(value) is not int or not minimum <= value <= MAX_SAFE_INTEGER:
        raise InvalidInput(
            f"{field} must be an integer from {minimum} to {MAX_SAFE_INTEGER} (2**53 - 1, the largest "
            f"integer every JSON reader holds exactly); got {value!r:.40}",
            field,
        )
    return value


def _has_float(value: Any) -> bool:
    """Whether a float is anywhere in `value` (parsed by orjson: dicts, lists, scalars)."""
    kind = type(value)
    if kind is dict:
        value = value.values()
    elif kind is not list:
        return kind is float
    for item in value:
        kind = type(item)
        if kind is str or item is None:
            continue
        if kind is dict or kind is list:
            if _has_float(item):
                return True
        elif kind is float:
            return True
    return False


# -- The exact pass -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Object:
    """An object as written: every member, in order, duplicates kept."""

    members: list[tuple[str, Any]]


@dataclass(frozen=True, slots=True)
class _Number:
    """A number a double does not hold as written (or NaN, Infinity): its text and why."""

    text: str
    why: str


def _exact_pass(raw: bytes) -> None:
    """Raise the first I-JSON problem of `raw` in document order; return when it has none."""
    try:
        text = raw.decode("utf-8", "surrogatepass")  # a surrogate's bytes become one to report
    except UnicodeDecodeError as e:
        raise MalformedJson(f"the JSON is not valid UTF-8 (byte {e.start}); send it as UTF-8") from None
    decoder = json.JSONDecoder(
        object_pairs_hook=_Object, parse_float=_number, parse_int=_number, parse_constant=_constant,
    )
    try:
        parsed = decoder.decode(text)
    except json.JSONDecodeError as e:
        raise MalformedJson(_malformed(e.msg, e.lineno, e.colno)) from None
    except RecursionError:
        raise MalformedJson(_too_deep()) from None
    _check(parsed, (), 0)


def _check(value: Any, loc: Loc, depth: int) -> None:
    if isinstance(value, _Object | list):
        if depth == MAX_DEPTH:
            raise MalformedJson(_too_deep())
        if isinstance(value, list):
            for index, item in enumerate(value):
                _check(item, (*loc, index), depth + 1)
            return
        seen: set[str] = set()
        for name, item in value.members:
            where = (*loc, name)
            if _has_surrogate(name):
                raise LoneSurrogate(
                    f"the member name {_at(where)} holds a lone surrogate; {RFC} forbids them: send the name "
                    "as UTF-8 text", where,
                )
            if name in seen:
                raise DuplicateMember(
                    f"member {_at(where)} appears twice; {RFC} forbids duplicate member names, as readers differ "
                    "on which one counts: send each member once", where,
                )
            seen.add(name)
            _check(item, where, depth + 1)
    elif isinstance(value, str):
        if _has_surrogate(value):
            raise LoneSurrogate(
                f"the string at {_at(loc)} holds a lone surrogate; {RFC} forbids them: send the text as UTF-8 "
                "(a character beyond U+FFFF may be escaped, as a pair: \\ud83d\\ude00)", loc,
            )
    elif isinstance(value, _Number):
        raise InexactNumber(f"the number at {_at(loc)} ({value.text:.40}) {value.why}", loc)


def _number(text: str) -> _Number | None:
    """Why a double does not hold a number token as written; None when it does."""
    if "." not in text and "e" not in text and "E" not in text:
        if len(text) < 16:  # within ±(10**15 - 1): every such integer is a double
            return None
        if len(text.lstrip("-")) > 309:  # 10**309 and beyond: past any double
            return _Number(text, INEXACT.format(why="is beyond the range of a double"))
    number = float(text)
    if math.isinf(number):
        return _Number(text, INEXACT.format(why="is beyond the range of a double"))
    exact = Decimal(text)
    # The text is the double's own value, or the shortest text that reads as it (what
    # RFC 8785 writes back): either way every reader reads, and writes, the same number.
    if exact == Decimal(number) or exact == Decimal(repr(number)):
        return None
    if number == 0:
        return _Number(text, INEXACT.format(why="is too small for a double, which reads it as 0"))
    return _Number(text, INEXACT.format(why="has more digits than a double holds"))


def _constant(text: str) -> _Number:
    return _Number(text, "is not JSON: send a number, or null")


def _has_surrogate(text: str) -> bool:
    # The parser joins escaped surrogate pairs: any surrogate left is a lone one.
    return not text.isascii() and any("\ud800" <= c <= "\udfff" for c in text)


def _at(loc: Loc) -> str:
    return json_path(loc) or "the top level"


def _malformed(message: str, line: int, column: int) -> str:
    place = f"column {column}" if line == 1 else f"line {line} column {column}"
    return f"malformed JSON: {message} at {place}; send one JSON value"


def _too_deep() -> str:
    return f"the JSON is nested more than {MAX_DEPTH} levels deep; send a flatter document"
