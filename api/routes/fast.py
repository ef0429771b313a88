"""A fast lane for the hottest routes: the same answers without the framework's per-request work.

Most of the CPU a request costs is spent by FastAPI itself: routing (each router tried in
turn), a stack of middleware, and solving the route's dependencies and parameters, each
examined afresh on every request. An endpoint may carry a fast handler
(`@fast_path(handler)`) for its common, well-formed case. `FastLane`, the innermost of the
ledger's own middleware (after the request id, metrics and body checks, all in front of
FastAPI's stack: api/app.py `LedgerAPI`), sends a request for such a route straight to
that handler, which reads what it needs from the request and answers, or returns None,
and the app answers as it always did: every error, every rare header or parameter goes
through FastAPI. Errors a fast handler raises are answered
by the app's own exception handlers, and a fast handler shares its work with the
ordinary endpoint (`record_now`, `current_claim`), so the two cannot drift apart.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

FastHandler = Callable[[Request], Awaitable[Response | None]]
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

MAX_REF = 200  # as ClaimRef's max_length


def fast_path(handler: FastHandler) -> Callable[[Endpoint], Endpoint]:
    """Give an endpoint a fast handler (put this below the route decorator)."""

    def mark(endpoint: Endpoint) -> Endpoint:
        endpoint.fast_handler = handler  # type: ignore[attr-defined]
        return endpoint

    return mark


class FastLane:
    """ASGI middleware: requests for a route with a fast handler go to it first (see above).

    `routes` are the app's routes that may have one; their paths must not be shadowed by
    routes matched before them (true of the ledger's: no two routes share a path and method).
    """

    def __init__(self, app: ASGIApp, api: FastAPI, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.api = api
        self.lanes = [
            (route, route.path_regex, frozenset(route.methods or ()), route.endpoint.fast_handler)
            for route in routes
            if isinstance(route, APIRoute) and hasattr(route.endpoint, "fast_handler")
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        lane = self._lane(scope)
        if lane is None:
            await self.app(scope, receive, send)
            return
        route, path_params, handler = lane
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = path_params
        request = Request(scope, receive, send)
        try:
            response = await handler(request)
        except Exception as exc:
            answer = _exception_handler(self.api, exc)
            if answer is None:
                raise
            answered = answer(request, exc)
            response = await answered if inspect.isawaitable(answered) else answered
        if response is None:  # the ordinary way, with the body read so far given again
            await self.app(scope, _replay(request), send)
            return
        await response(scope, receive, send)

    def _lane(self, scope: Scope) -> tuple[APIRoute, dict[str, Any], FastHandler] | None:
        for route, regex, methods, handler in self.lanes:
            if scope["method"] in methods and (match := regex.match(scope["path"])):
                return route, match.groupdict(), handler
        return None


def _exception_handler(api: FastAPI, exc: Exception) -> Callable[[Request, Exception], Any] | None:
    """The app's handler for `exc`, found as Starlette finds it (by the exception's classes);
    None for a fault no rule describes, which goes on to be logged and answered as a 500."""
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        found = api.exception_handlers.get(cls)
        if found is not None:
            return found  # type: ignore[no-any-return]
    return None


def _replay(request: Request) -> Receive:
    body: bytes | None = getattr(request, "_body", None)
    if body is None:
        return request.receive
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await request.receive()

    return receive


def claim_ref(request: Request) -> str | None:
    """The `{id}` of the path when it is a valid ClaimRef, else None."""
    ref = request.path_params.get("id")
    return ref if isinstance(ref, str) and 1 <= len(ref) <= MAX_REF else None


async def json_body(request: Request, model: type[BaseModel]) -> BaseModel | None:
    """The body as `model`, as FastAPI would validate it (JSON parsed, then validated as
    Python data); None when it is not plainly valid: the ordinary handler explains why."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        return None
    try:
        # Whatever orjson parses, json.loads (FastAPI's parser) parses to the same value.
        data = orjson.loads(await request.body())
        return model.model_validate(data)
    except (orjson.JSONDecodeError, ValidationError):
        return None


def json_response(content: dict[str, Any], status_code: int) -> Response:
    """A small answer as FastAPI serialises a response model: compact JSON, fields in order."""
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")
