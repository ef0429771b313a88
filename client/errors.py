"""What the client raises: a server's problem document (RFC 9457) as a typed exception, or
why no usable answer came.

Every exception is a `LedgerError`. One raised for an answer carries the answer's `status`
and its whole problem `document`, with `type`, `title` and `detail` at hand; one raised
because no answer came (`Unreachable`) or the answer could not be read (`InvalidResponse`)
says so in `detail`.
"""

from __future__ import annotations

import http
from collections.abc import Mapping
from typing import Any

Json = dict[str, Any]

ABOUT_BLANK = "about:blank"


class LedgerError(Exception):
    """Base of every error the client raises.

    `status` is the HTTP status (None when no answer came), `type`, `title` and `detail` are
    the problem document's members, `document` the whole document (with `instance`,
    `request_id`, `errors` and whatever else the server sent) and `retry_after` the seconds
    the server asked to wait (its `Retry-After`), if any.
    """

    def __init__(
        self, detail: str, *, status: int | None = None, title: str | None = None, type: str = ABOUT_BLANK,
        document: Mapping[str, Any] | None = None, retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.detail = detail
        if title is None:
            title = http.HTTPStatus(status).phrase if status in _PHRASES else self.__class__.__name__
        self.title = title
        self.type = type
        self.document: Json = dict(document) if document is not None else {
            "type": type, "title": self.title, "status": status, "detail": detail,
        }
        self.retry_after = retry_after
        super().__init__(f"{status} {self.title}: {detail}" if status is not None else detail)

    @property
    def code(self) -> str | None:
        """The ledger's problem code (`unknown-claim`, `not-retractable`, …): the end of its
        `urn:claims-ledger:problem:` type; None for `about:blank` and foreign types."""
        prefix = "urn:claims-ledger:problem:"
        return self.type.removeprefix(prefix) if self.type.startswith(prefix) else None

    @property
    def request_id(self) -> str | None:
        """The request id the server logged the request under, to quote to its operators."""
        value = self.document.get("request_id")
        return value if isinstance(value, str) else None


_PHRASES = {status.value for status in http.HTTPStatus}


class InvalidRequest(LedgerError):
    """400, 413, 415 or 422: the request is malformed; `detail` (and `document["errors"]`)
    say what to fix. Nothing was recorded."""


class Unauthorized(LedgerError):
    """401: no token, or one the ledger does not know (or has revoked)."""


class Forbidden(LedgerError):
    """403: the token's role is too low for this operation."""


class NotFound(LedgerError):
    """404: no such claim, act, party, position or route."""


class Conflict(LedgerError):
    """409: the act breaks one of the claim's rules (not retractable, act_id or key taken, …)."""


class PreconditionFailed(Conflict):
    """412: `If-Match` named a version the claim has moved past; `document` holds
    `expected_version` and `current_version`."""


class Unavailable(LedgerError):
    """503: the database is unreachable, a write was not taken in time, or projections have
    not reached `min_position`. Retried by the client; raised when the retries run out."""


class ServerError(LedgerError):
    """A 5xx other than 503: a fault on the server, logged under `request_id`."""


class Unreachable(LedgerError):
    """No answer: the connection failed, was cut or timed out (after the client's retries)."""


class InvalidResponse(LedgerError):
    """An answer the client cannot take: not I-JSON (RFC 7493), or not the shape asked for.
    `detail` says what was wrong with it."""


ERROR_OF_STATUS: dict[int, type[LedgerError]] = {
    400: InvalidRequest, 413: InvalidRequest, 415: InvalidRequest, 422: InvalidRequest,
    401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 412: PreconditionFailed,
    503: Unavailable,
}


def error_for(status: int) -> type[LedgerError]:
    """The exception class for an answer's status."""
    found = ERROR_OF_STATUS.get(status)
    if found is not None:
        return found
    if status >= 500:
        return ServerError
    if 400 <= status < 500:
        return InvalidRequest
    return InvalidResponse
