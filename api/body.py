"""Request bodies are parsed once, by `domain.ijson.loads`, before any route sees them.

`BodyGuard` (api/app.py) reads the body, refuses what is not I-JSON, and keeps the parsed
value in the request's scope (`PARSED_BODY`). The fast lane takes it from there
(routes/fast.py `json_body`), and so does FastAPI: routes that take a body are `JsonRoute`s,
whose request answers `json()` with that value instead of parsing the body again with the
standard library, which would keep the last of two members of the same name.
`unparsed_bodies` names the routes for which that would not hold; the app does not start
while there is one.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # the methods whose bodies BodyGuard reads
PARSED_BODY = "claims_ledger.body"  # the scope key of the parsed body (absent when it is empty)


class JsonRequest(Request):
    """A request whose JSON body is the value BodyGuard parsed."""

    async def json(self) -> Any:
        # FastAPI asks only for a body that is not empty, which BodyGuard parsed
        # (`unparsed_bodies` makes sure of that for every route that takes one).
        return self.scope[PARSED_BODY]


class JsonRoute(APIRoute):
    """A route whose body FastAPI reads through `JsonRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_parsed_body(request: Request) -> Response:
            return await handler(JsonRequest(request.scope, request.receive))

        return with_parsed_body


def unparsed_bodies(routes: Sequence[BaseRoute]) -> Iterator[str]:
    """The routes taking a body that FastAPI would parse itself, or that BodyGuard does not read."""
    for context in iter_route_contexts(routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or route.body_field is None:
            continue
        methods = set(context.methods or ())
        if not isinstance(route, JsonRoute) or not methods <= BODY_METHODS:
            yield f"{' '.join(sorted(methods))} {context.path}"
