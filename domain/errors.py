"""The ledger's domain errors: each says what was wrong and what to fix."""

from __future__ import annotations

import json


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose."""

    code = "ledger-error"
    title = "Ledger error"


class InvalidInput(LedgerError, ValueError):
    """A value does not have the shape the ledger accepts (HTTP 422)."""

    code = "invalid-input"
    title = "Invalid input"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self) -> tuple[type, tuple[str, str | None]]:  # pickled whole (see service/forward.py)
        return type(self), (str(self), self.field)


class NotFound(LedgerError, LookupError):
    """Something named by the caller does not exist (HTTP 404)."""

    code = "not-found"
    title = "Not found"


class UnknownClaim(NotFound):
    code = "unknown-claim"
    title = "Unknown claim"


class UnknownAct(NotFound):
    code = "unknown-act"
    title = "Unknown act"


class RuleViolation(LedgerError):
    """A command breaks one of the claim's invariants (HTTP 409)."""

    code = "rule-violation"
    title = "Rule violation"


class KeyConflict(RuleViolation):
    code = "key-conflict"
    title = "Key holds another statement"


class ActIdConflict(RuleViolation):
    code = "act-id-conflict"
    title = "Act id already used"


class NotRetractable(RuleViolation):
    code = "not-retractable"
    title = "Act cannot be retracted"


class NotVoidable(RuleViolation):
    code = "not-voidable"
    title = "Act cannot be voided"


class VersionMismatch(LedgerError):
    """The claim moved past the version the caller expected (HTTP 412)."""

    code = "version-mismatch"
    title = "Claim has moved on"

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(
            f"expected the claim at version {expected} but it is at version {actual}; "
            "read it again and retry with the current version"
        )
        self.expected = expected
        self.actual = actual

    def __reduce__(self) -> tuple[type, tuple[int, int]]:  # pickled whole (see service/forward.py)
        return type(self), (self.expected, self.actual)


class StoreUnavailable(LedgerError):
    """The database could not be reached or kept timing out (HTTP 503)."""

    code = "store-unavailable"
    title = "Store unavailable"


class InvalidJson(InvalidInput):
    """A JSON input that is not I-JSON (RFC 7493), or not JSON at all (HTTP 422).

    `loc` is the offending member's place: names and array indexes from the top, e.g.
    ``("reported_via", 1, "url")``, rendered as `field` (``reported_via[1].url``).
    """

    code = "invalid-json"
    title = "Not I-JSON"

    def __init__(self, message: str, loc: tuple[str | int, ...] = ()) -> None:
        super().__init__(message, json_path(loc) or None)
        self.loc = loc

    def __reduce__(self) -> tuple[type, tuple[str, tuple[str | int, ...]]]:  # type: ignore[override]  # its own arguments
        return type(self), (str(self), self.loc)


class MalformedJson(InvalidJson):
    code = "malformed-json"
    title = "Malformed JSON"


class DuplicateMember(InvalidJson):
    code = "duplicate-member"
    title = "Duplicate member name"


class LoneSurrogate(InvalidJson):
    code = "lone-surrogate"
    title = "Lone surrogate in a string"


class InexactNumber(InvalidJson):
    code = "inexact-number"
    title = "Number beyond double precision"


def json_path(loc: tuple[str | int, ...]) -> str:
    """A member's place as text: ``party.id``, ``reported_via[1].url``, ``["odd name"]``."""
    parts: list[str] = []
    for step in loc:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif step.isidentifier() and step.isascii():
            parts.append(f".{step}" if parts else step)
        else:
            parts.append("[" + _quoted(step) + "]")
    return "".join(parts)


def _quoted(name: str) -> str:
    # ASCII with escapes: a name may hold a lone surrogate, which no answer or log can carry.
    return json.dumps(name)
