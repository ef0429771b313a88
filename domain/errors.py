"""The ledger's domain errors: each says what was wrong and what to fix."""

from __future__ import annotations


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
