"""A fast lane for the hottest routes: the same answers without FastAPI's per-request machinery.

Most of the CPU FastAPI spends on a request goes to solving its dependencies and
parameters, each examined afresh on every request. A route of `FastRoute` may carry a
fast handler (`@fast_path(handler)`) for its common, well-formed case: the handler reads
what it needs straight from the request and answers, or returns None, and the route's
ordinary handler answers instead: every error, every rare header or parameter goes
through FastAPI as before. A fast handler raises only what the ordinary handler would
raise for the same request (its exception handlers answer both), and it shares its work
with the ordinary handler (`record_now`, `current_claim`), so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

FastHandler = Callable[[Request], Awaitable[Response | None]]
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

MAX_REF = 200  # as ClaimRef's max_length


def fast_path(handler: FastHandler) -> Callable[[Endpoint], Endpoint]:
    """Give an endpoint a fast handler (put this below the route decorator)."""

    def mark(endpoint: Endpoint) -> Endpoint:
        endpoint.fast_handler = handler  # type: ignore[attr-defined]
        return endpoint

    return mark


class FastRoute(APIRoute):
    """An APIRoute that tries its endpoint's fast handler, if any, before the ordinary one."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        ordinary = super().get_route_handler()
        fast: FastHandler | None = getattr(self.endpoint, "fast_handler", None)
        if fast is None:
            return ordinary

        async def handler(request: Request) -> Response:
            response = await fast(request)
            return response if response is not None else await ordinary(request)

        return handler


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
