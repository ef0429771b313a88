"""Errors as RFC 9457 problem details (`application/problem+json`), one place for all of them.

Domain errors keep their own vocabulary (`type` = ``urn:claims-ledger:problem:<code>``);
plain HTTP errors (unknown route, wrong method) use ``about:blank`` with the status phrase
as title, as RFC 9457 §4.2.1 asks.
"""

from __future__ import annotations

import http
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from audit.rollback import RolledBack
from domain.errors import (
    InvalidInput,
    LedgerError,
    NotFound,
    RuleViolation,
    StoreUnavailable,
    VersionMismatch,
)
from store.tokens import InvalidToken, MissingToken, RoleTooLow

log = logging.getLogger("claims.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:claims-ledger:problem:"
RETRY_AFTER_SECONDS = 2
BEARER_CHALLENGE = 'Bearer realm="claims-ledger"'

Json = dict[str, Any]

STATUS_OF: list[tuple[type[LedgerError], int]] = [
    (InvalidInput, 422),
    (NotFound, 404),
    (RuleViolation, 409),
    (VersionMismatch, 412),
    (StoreUnavailable, 503),
    (RolledBack, 503),
    (MissingToken, 401),
    (InvalidToken, 401),
    (RoleTooLow, 403),
]


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


class Problem(Exception):
    """An HTTP error raised by the API itself (preconditions, Idempotency-Key, body checks)."""

    def __init__(
        self, status: int, detail: str, *, code: str | None = None, title: str | None = None,
        headers: Mapping[str, str] | None = None, extra: Json | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code
        self.title = title or http.HTTPStatus(status).phrase
        self.headers = dict(headers or {})
        self.extra = extra or {}


def problem_body(
    status: int, title: str, detail: str, *, code: str | None, instance: str, request_id: str | None,
    extra: Json | None = None,
) -> Json:
    body: Json = {
        "type": f"{TYPE_PREFIX}{code}" if code else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if request_id:
        body["request_id"] = request_id
    body.update(extra or {})
    return body


def problem_response(
    status: int, detail: str, *, code: str | None = None, title: str | None = None, instance: str = "",
    request_id: str | None = None, headers: Mapping[str, str] | None = None, extra: Json | None = None,
) -> ProblemResponse:
    body = problem_body(
        status, title or http.HTTPStatus(status).phrase, detail, code=code, instance=instance,
        request_id=request_id, extra=extra,
    )
    return ProblemResponse(body, status_code=status, headers=dict(headers or {}))


def status_of(error: LedgerError) -> int:
    for cls, status in STATUS_OF:
        if isinstance(error, cls):
            return status
    return 500


def _request_id(request: Request) -> str | None:
    value = getattr(request.state, "request_id", None)
    return value if isinstance(value, str) else None


def _respond(request: Request, status: int, detail: str, **kwargs: Any) -> ProblemResponse:
    return problem_response(
        status, detail, instance=request.url.path, request_id=_request_id(request), **kwargs
    )


def internal_error(instance: str, request_id: str | None) -> ProblemResponse:
    """The answer to a fault no rule describes: a 500 problem that names the request id the
    fault is logged under (api/app.py RequestContext logs it), never the fault itself."""
    return problem_response(
        500, f"the server failed on this request; it is logged under request id {request_id}",
        code="internal-error", instance=instance, request_id=request_id,
    )


async def on_unexpected(request: Request, exc: Exception) -> ProblemResponse:
    """FastAPI's error middleware answers with this, then raises the fault on to be logged."""
    return internal_error(request.url.path, _request_id(request))


async def on_problem(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, Problem)
    return _respond(request, exc.status, exc.detail, code=exc.code, title=exc.title,
                    headers=exc.headers, extra=exc.extra)


async def on_ledger_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, LedgerError)
    status = status_of(exc)
    headers: dict[str, str] = {}
    extra: Json = {}
    if isinstance(exc, StoreUnavailable):
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if isinstance(exc, MissingToken):
        headers["WWW-Authenticate"] = BEARER_CHALLENGE
    if isinstance(exc, InvalidToken):
        headers["WWW-Authenticate"] = f'{BEARER_CHALLENGE}, error="invalid_token"'
    if isinstance(exc, VersionMismatch):
        extra = {"expected_version": exc.expected, "current_version": exc.actual}
        headers["ETag"] = f'"{exc.actual}"'
    if isinstance(exc, InvalidInput) and exc.field:
        extra = {"errors": [{"loc": [exc.field], "msg": str(exc), "type": exc.code}]}
    if status == 500:
        log.error("unmapped ledger error on %s %s: %r", request.method, request.url.path, exc)
    return _respond(request, status, str(exc), code=exc.code, title=exc.title, headers=headers, extra=extra)


async def on_validation_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": [str(part) for part in error.get("loc", ())], "msg": str(error.get("msg", "")),
         "type": str(error.get("type", ""))}
        for error in exc.errors()
    ]
    where = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:10])
    return _respond(
        request, 422, f"the request does not have the expected shape — {where}",
        code="invalid-request", title="Invalid request", extra={"errors": errors},
    )


async def on_http_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404:
        detail = f"there is no resource at {request.url.path}; see /docs for the API"
    elif status == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
        allowed = (exc.headers or {}).get("Allow")
        if allowed:
            detail += f"; use {allowed}"
    elif status == 400:
        detail = "the request body could not be parsed; send one JSON object, UTF-8 encoded"
    else:
        detail = str(exc.detail)
    return _respond(request, status, detail, headers=exc.headers)


def install(app: FastAPI) -> None:
    """Answer every error the app can raise as a problem document."""
    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(LedgerError, on_ledger_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


PROBLEM_DESCRIPTIONS = {
    400: "The request could not be parsed.",
    401: "No valid bearer token.",
    403: "The token's role is too low for this operation.",
    404: "The claim, party or resource does not exist.",
    409: "The command breaks one of the claim's rules.",
    412: "If-Match named a version the claim has moved past.",
    413: "The request body is larger than 64 KiB.",
    415: "The request body is not JSON.",
    422: "The request is malformed: the detail and `errors` say what to fix.",
    503: "The database is unreachable or projections have not reached `min_position`; retry later.",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problems an operation can answer with."""
    return {
        status: {
            "description": PROBLEM_DESCRIPTIONS[status],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
