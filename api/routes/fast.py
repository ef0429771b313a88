"""A fast lane for the hottest routes: the same answers without the framework's per-request work.

Most of the CPU a request costs is spent by FastAPI itself: routing (each router tried in
turn), a stack of middleware, and solving the route's dependencies and parameters, each
examined afresh on every request. An endpoint may carry a fast handler
(`@fast_path(handler, ...)`) for its common, well-formed case. `FastLane`, the innermost of
the ledger's own middleware (after the request id, metrics and body checks, all in front
of FastAPI's stack: api/app.py `LedgerAPI`), sends a request for such a route straight to
that handler, which reads what it needs from the request and answers, or returns None,
and the app answers as it always did: every error, every rare header or parameter goes
through FastAPI. Errors a fast handler raises are answered by the app's own exception
handlers, and a fast handler shares its work with the ordinary endpoint (`record_now`,
`current_claim`), so the two cannot drift apart.

A fast handler declares every input of its route; the app does not start when one is
missing (`lanes_of`), so a parameter, header or dependency added to a route later cannot
be skipped by its fast handler unnoticed. The check runs once, at start-up; per request the
lane only looks for what the handler leaves to FastAPI.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, ValidationError
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.body import PARSED_BODY

FastHandler = Callable[[Request], Awaitable[Response | None]]
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

MAX_REF = 200  # as ClaimRef's max_length


@dataclass(frozen=True)
class FastPath:
    """A fast handler and what it declares of its route's inputs (see `fast_path`)."""

    handler: FastHandler
    path: tuple[str, ...] = ()
    query: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()
    body: tuple[str, ...] = ()
    dependencies: tuple[Callable[..., Any], ...] = ()
    passes_query: tuple[str, ...] = ()
    passes_headers: tuple[str, ...] = ()


def fast_path(
    handler: FastHandler, *, path: Sequence[str] = (), query: Sequence[str] = (), headers: Sequence[str] = (),
    body: Sequence[str] = (), dependencies: Sequence[Callable[..., Any]] = (),
    passes_query: Sequence[str] = (), passes_headers: Sequence[str] = (),
) -> Callable[[Endpoint], Endpoint]:
    """Give an endpoint a fast handler (put this below the route decorator).

    The handler declares every input of its route, dependencies' inputs included: those it
    handles (`path`, `query`, `headers`, `body` by parameter name; `dependencies` whose
    work it does), and the query parameters and headers it leaves to FastAPI
    (`passes_query`, `passes_headers`): a request that carries one of those, or any query
    parameter not in `query`, goes to FastAPI. The app refuses to start when a route has
    an input its fast handler does not declare (`lanes_of`).
    """
    declared = FastPath(
        handler, path=tuple(path), query=tuple(query), headers=tuple(h.lower() for h in headers), body=tuple(body),
        dependencies=tuple(dependencies), passes_query=tuple(passes_query),
        passes_headers=tuple(h.lower() for h in passes_headers),
    )

    def mark(endpoint: Endpoint) -> Endpoint:
        endpoint.fast_path = declared  # type: ignore[attr-defined]
        return endpoint

    return mark


class UndeclaredInput(RuntimeError):
    """A route has an input its fast handler does not declare: the app does not start."""


@dataclass(frozen=True, slots=True)
class Lane:
    """A route's fast handler, with what sends a request past it, worked out at start-up."""

    route: APIRoute
    path_regex: re.Pattern[str]
    methods: frozenset[str]
    handler: FastHandler
    query: frozenset[str]
    passes_headers: frozenset[bytes]
    # Paths its pattern matches that a route matched before it answers (`/v1/claims/stream`
    # before `/v1/claims/{id}`): those go to FastAPI, as the lane is off for them.
    shadowed: frozenset[str] = frozenset()

    def takes(self, scope: Scope) -> bool:
        """Whether the request carries nothing the handler leaves to FastAPI."""
        query_string: bytes = scope["query_string"]
        if query_string and not (self.query and self._handles_query(query_string)):
            return False
        if self.passes_headers:
            for name, _ in scope["headers"]:  # ASGI servers give header names in lower case
                if name in self.passes_headers:
                    return False
        return True

    def _handles_query(self, query_string: bytes) -> bool:
        names = {name for name, _ in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)}
        return names <= self.query


def lanes_of(routes: Sequence[BaseRoute]) -> list[Lane]:
    """The lanes of an app's `routes` that have a fast handler, each checked against its
    route's inputs as FastAPI solves them (the dependencies of the routers it is included
    through too); UndeclaredInput names what a fast handler misses."""
    lanes = []
    earlier: list[tuple[str, frozenset[str]]] = []  # (path, methods) of the static routes before
    for context in iter_route_contexts(routes):
        route = context.original_route
        declared = getattr(context.endpoint, "fast_path", None)
        methods = frozenset(context.methods or ())
        before = list(earlier)
        if context.path is not None and "{" not in context.path:
            earlier.append((context.path, methods))
        if not isinstance(route, APIRoute) or not isinstance(declared, FastPath):
            continue
        missing = list(dict.fromkeys(_undeclared(context.dependant, declared)))
        if missing:
            raise UndeclaredInput(
                f"the fast handler of {' '.join(sorted(methods))} {context.path} does not declare its "
                f"{', '.join(missing)}; declare each in the route's @fast_path, as handled (path=, query=, "
                "headers=, body=, dependencies=) or left to FastAPI (passes_query=, passes_headers=)"
            )
        lanes.append(Lane(
            route, context.path_regex, methods, declared.handler, frozenset(declared.query),
            frozenset(name.encode("latin-1") for name in declared.passes_headers),
            frozenset(path for path, its in before if its & methods and context.path_regex.match(path)),
        ))
    return lanes


def _undeclared(dependant: Dependant, declared: FastPath) -> Iterator[str]:
    for field in dependant.path_params:
        if field.alias not in declared.path:
            yield f"path parameter {field.alias!r}"
    for field in dependant.query_params:
        if field.alias not in declared.query + declared.passes_query:
            yield f"query parameter {field.alias!r}"
    for field in dependant.header_params:
        if field.alias.lower() not in declared.headers + declared.passes_headers:
            yield f"header {field.alias.lower()!r}"
    for field in dependant.cookie_params:
        yield f"cookie {field.alias!r} (a fast handler cannot take a route that reads cookies)"
    for field in dependant.body_params:
        if field.alias not in declared.body:
            yield f"body parameter {field.alias!r}"
    for sub in dependant.dependencies:
        if sub.call not in declared.dependencies:
            yield f"dependency {getattr(sub.call, '__name__', type(sub.call).__name__)}"
        yield from _undeclared(sub, declared)


class FastLane:
    """ASGI middleware: requests for a route with a fast handler go to it first (see above).

    A path that a route matched before a lane's answers (`Lane.shadowed`) goes to FastAPI.
    """

    def __init__(self, app: ASGIApp, api: FastAPI, lanes: Sequence[Lane]) -> None:
        self.app = app
        self.api = api
        self.lanes = list(lanes)
        # How many requests this lane answered itself (not passed on to FastAPI): one integer
        # increment per answer, so that tests can tell the lane is in use.
        self.answered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        found = self._lane(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        lane, path_params = found
        scope["route"] = lane.route
        scope["endpoint"] = lane.route.endpoint
        scope["path_params"] = path_params
        request = Request(scope, receive, send)
        try:
            response = await lane.handler(request)
        except Exception as exc:
            answer = _exception_handler(self.api, exc)
            if answer is None:
                raise
            answered = answer(request, exc)
            response = await answered if inspect.isawaitable(answered) else answered
        if response is None:  # the ordinary way, with the body read so far given again
            await self.app(scope, _replay(request), send)
            return
        self.answered += 1
        await response(scope, receive, send)

    def _lane(self, scope: Scope) -> tuple[Lane, dict[str, Any]] | None:
        for lane in self.lanes:
            if scope["method"] in lane.methods and (match := lane.path_regex.match(scope["path"])):
                shadowed = scope["path"] in lane.shadowed
                return (lane, match.groupdict()) if not shadowed and lane.takes(scope) else None
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
    """The body as `model`, as FastAPI validates it (the value BodyGuard parsed, validated
    as Python data: api/body.py); None when it is not plainly valid: the ordinary handler
    explains why."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" or PARSED_BODY not in request.scope:
        return None
    try:
        return model.model_validate(request.scope[PARSED_BODY])
    except ValidationError:
        return None


def json_response(content: dict[str, Any], status_code: int) -> Response:
    """A small answer as FastAPI serialises a response model: compact JSON, fields in order."""
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")
