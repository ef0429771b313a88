"""The HTTP API's app factory: routes, errors as problems, request ids, body limits, lifespan.

    create_app(url="sqlite:///ledger.db")   # opens (and closes) its own Runtime
    create_app(runtime)                      # uses one the caller owns

The lifespan starts the group-commit writer and, unless run_projections=False, the
projection engine thread; it stops both (and closes a Runtime it opened) on shutdown.
"""

from __future__ import annotations

import logging
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import problems
from api.body import BODY_METHODS, PARSED_BODY, unparsed_bodies
from api.lookups import Lookups
from api.metrics import ApiMetrics, LeaseCollector, ReplicaCollector, StreamCollector
from api.routes import acts, audit, claims, events, health, parties, streams, tiles
from api.routes.deps import ApiSettings, Services, read_access
from api.routes.fast import FastLane, lanes_of
from api.schemas import ProblemDetail
from domain import ijson
from domain.errors import InvalidJson, MalformedJson
from service.follower import Follower, StreamLimits
from service.forward import WriterHost, WriterLink
from service.runtime import Runtime
from service.witnessing import open_witnessing
from service.writer import GroupWriter
from store.idempotency import IdempotencyStore
from store.settings import get_settings
from store.tokens import TokenStore

log = logging.getLogger("claims.api")

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
LOOKUP_CONNECTIONS = 8  # PostgreSQL connections of the event loop's one-statement lookups

DESCRIPTION = """An event-sourced ledger of claims: who asserted, denied and retracted what.

Writes need a bearer token (`claims token create --role recorder`); reads are open unless
the server runs with `LEDGER_READ_TOKENS_REQUIRED=1`. Every write answers with the log
`position` of its event; pass it to any read as `?min_position=` to read your own write.
Errors are RFC 9457 problem details (`application/problem+json`).
"""


def open_services(
    runtime: Runtime | None, url: str | None, settings: ApiSettings, run_projections: bool
) -> Services:
    rt = runtime or Runtime.open(url, pool_size=settings.threads + 2)
    try:
        lookups = Lookups(rt.database, min(settings.threads, LOOKUP_CONNECTIONS))
        tokens = TokenStore(rt.store, lookups)
        tokens.ensure_table()
        idempotency = IdempotencyStore(rt.store)
        idempotency.ensure_table()
        idempotency.purge()
        metrics = ApiMetrics(lambda: (rt.engine.position(), rt.ledger.max_position()))
        if rt.replicas is not None:
            metrics.add_collector(ReplicaCollector(rt.replicas))
        writer = GroupWriter(
            rt.ledger, max_batch=settings.max_batch, on_commit=metrics.observe_commit, gate=tokens.check,
        )
        writer.start()
        engine_thread = rt.engine.start_thread() if run_projections else None
        if run_projections:
            metrics.add_collector(LeaseCollector(rt.engine.lease))
        witnessing = open_witnessing(rt)
        if witnessing is not None:
            metrics.add_collector(witnessing.collector())
            if witnessing.lease is not None:
                metrics.add_collector(LeaseCollector(witnessing.lease))
            witnessing.start()
    except BaseException:
        if runtime is None:
            rt.close()
        raise
    standby_lookups = {} if rt.replicas is None else {
        id(standby): Lookups(standby.database, min(settings.threads, LOOKUP_CONNECTIONS))
        for standby in rt.replicas.standbys
    }
    return Services(rt, settings, writer, tokens, idempotency, metrics, run_projections, lookups, engine_thread,
                    witnessing=witnessing, standby_lookups=standby_lookups)


def stream_limits(services: Services) -> StreamLimits:
    settings = services.runtime.database.settings
    return StreamLimits(
        max_subscribers=settings.stream_max_subscribers, buffer_events=settings.stream_buffer_events,
        buffer_bytes=settings.stream_buffer_bytes, poll=settings.stream_poll_ms / 1000,
    )


def close_services(services: Services, *, owns_runtime: bool) -> None:
    if services.witnessing is not None:
        services.witnessing.stop()
    services.writer.stop()
    if services.runs_projections:
        services.runtime.engine.stop()
    if owns_runtime:
        services.runtime.close()


def create_app(
    runtime: Runtime | None = None, *, url: str | None = None, run_projections: bool = True,
    settings: ApiSettings | None = None, writer_socket: str | None = None, hosts_writer: bool = False,
    fast_lane: bool = True, routers: Sequence[APIRouter] = (), form_paths: Collection[str] = (),
) -> FastAPI:
    """The API on `runtime`, or on a Runtime it opens on `url` (default LEDGER_DATABASE_URL).

    With `writer_socket` (`claims serve --workers N`), the worker that `hosts_writer` serves
    its group writer there and the others send it their writes (service/forward.py).
    Without `fast_lane`, every request goes through FastAPI (routes/fast.py), with the same
    answers; the fast handlers' declarations are checked either way.
    `routers` are added after the API's own, before the fast lanes are worked out (the web
    pages, web/app.py); `form_paths` take HTML form bodies instead of JSON (their sign-in).
    """
    settings = settings or ApiSettings.from_settings(get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Sync endpoints run in AnyIO's thread pool; the read pool has one connection per thread.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threads
        services = await anyio.to_thread.run_sync(open_services, runtime, url, settings, run_projections)
        if writer_socket is not None:
            await _join_writer(services, writer_socket, hosts_writer)
        app.state.services = services
        app.state.follower = follower = Follower(services.runtime.read, services.runtime.ledger, stream_limits(services))
        services.metrics.add_collector(StreamCollector(follower))
        await follower.start()
        try:
            yield
        finally:
            await follower.close()  # ends the open streams
            del app.state.follower
            await services.lookups.aclose()
            for standby in services.standby_lookups.values():
                await standby.aclose()
            if services.link is not None:
                await services.link.close()
            # The writer commits what is queued, forwarded writes included, and answers them.
            await anyio.to_thread.run_sync(lambda: close_services(services, owns_runtime=runtime is None))
            if services.host is not None:
                await services.host.close()
            del app.state.services

    app = LedgerAPI(
        title="Claims ledger", version="1.0", description=DESCRIPTION, lifespan=lifespan,
        openapi_tags=[
            {"name": "claims", "description": "Register, read, list and time-travel claims."},
            {"name": "acts", "description": "Assertions, denials, retractions and voids."},
            {"name": "parties", "description": "Where parties stand."},
            {"name": "audit", "description": "The event feed."},
            {"name": "streams", "description": "The event feed and claims' changes as Server-Sent Events."},
            {"name": "operations", "description": "Health and metrics."},
        ],
    )
    problems.install(app)
    # streams first: /v1/claims/stream before /v1/claims/{id} (the fast lane leaves it to FastAPI)
    for module in (streams, claims, acts, parties, events, audit, tiles, health):
        app.include_router(module.router)
    for router in routers:
        app.include_router(router)
    lanes = lanes_of(app.routes)  # raises when a fast handler misses an input of its route
    unparsed = list(unparsed_bodies(app.routes))
    if unparsed:
        raise RuntimeError(
            f"{', '.join(unparsed)} would parse its body itself: give its router route_class=JsonRoute "
            f"(api/body.py) and a method in {sorted(BODY_METHODS)}"
        )
    app.fast_lane = FastLane(app.behind, api=app, lanes=lanes) if fast_lane else None
    app.front = RequestContext(BodyGuard(
        app.fast_lane if app.fast_lane is not None else app.behind,
        max_bytes=settings.max_body_bytes, form_paths=form_paths,
    ))
    app.openapi = lambda: openapi(app, reads_open=not settings.read_tokens_required)  # type: ignore[method-assign]
    return app


class LedgerAPI(FastAPI):
    """FastAPI with the ledger's own middleware in front of FastAPI's stack, not inside it.

    Every HTTP request meets request ids and metrics (RequestContext), then the body checks
    (BodyGuard), then the fast lane (routes/fast.py); what the lane does not answer goes on
    to FastAPI as usual (`behind`: its error middleware, its telemetry, the router). A
    request the lane answers skips those layers (a measurable share of an API worker's CPU per
    write under load); the answers are the same either way.
    """

    front: ASGIApp | None = None
    fast_lane: FastLane | None = None  # None: every request goes through FastAPI

    async def behind(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.front is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        await self.front(scope, receive, send)


async def _join_writer(services: Services, path: str, hosts: bool) -> None:
    if not hosts:
        services.link = WriterLink(path, services.writer, on_forwarded=services.metrics.writes_forwarded.inc)
        return
    host = WriterHost(services.writer, path)
    try:
        await host.start()
    except OSError as e:  # every worker then writes through its own writer, as they can
        log.warning("cannot serve the group writer on %s (%s); each worker writes on its own", path, e)
        return
    services.host = host


def worker_app(writer_socket: str | None = None, hosts_writer: bool = False) -> FastAPI:
    """An API worker of `claims serve --workers N`: the projection process runs the engine."""
    return create_app(run_projections=False, writer_socket=writer_socket, hosts_writer=hosts_writer)


def openapi(app: FastAPI, *, reads_open: bool) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes,
            tags=app.openapi_tags,
        )
        if reads_open:  # a token is optional on reads: bearer, or nothing at all
            for route in app.routes:
                if isinstance(route, APIRoute) and any(d.dependency is read_access for d in route.dependencies):
                    for method in route.methods or ():
                        schema["paths"][route.path_format][method.lower()]["security"].append({})
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = ProblemDetail.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        for name, sub in ProblemDetail.model_json_schema(ref_template="#/components/schemas/{model}").get(
            "$defs", {}
        ).items():
            schema["components"]["schemas"].setdefault(name, sub)
        schema["components"]["schemas"]["Problem"].pop("$defs", None)
        app.openapi_schema = schema
    return app.openapi_schema


def _request_id(scope: Scope) -> str:
    return str(scope.get("state", {}).get("request_id", ""))


class RequestContext:
    """Request ids, metrics, and the last line of defence: an unexpected error is logged and
    answered as a 500 problem (never a stack trace)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        # A version-4 UUID from Python's generator: ids need not be secret, and os.urandom
        # (uuid4) is a system call that hands the GIL to the writer thread mid-request.
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.UUID(int=random.getrandbits(128), version=4).hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-Id"] = request_id
            await send(message)

        try:
            refusal = _host_refusal(scope)
            if refusal is not None:
                await problems.problem_response(
                    400, refusal, code="invalid-host", title="Invalid Host header", instance=scope["path"],
                    request_id=request_id,
                )(scope, receive, send_with_id)
                return
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unexpected error on %s %s (request %s)", scope["method"], scope["path"], request_id)
            if not response_started:
                await problems.internal_error(scope["path"], request_id)(scope, receive, send_with_id)
        finally:
            services = getattr(scope["app"].state, "services", None) if "app" in scope else None
            if isinstance(services, Services):
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                services.metrics.observe_request(scope["method"], template, status, time.perf_counter() - started)


def _host_refusal(scope: Scope) -> str | None:
    """Why RFC 9112 (section 3.2) has a server answer 400: an HTTP/1.1 request without a Host
    header, or any request with more than one; else None. (uvicorn's parser lets both through.)"""
    hosts = sum(1 for name, _ in scope["headers"] if name == b"host")
    if hosts > 1:
        return f"the request has {hosts} Host headers; send exactly one (RFC 9112 section 3.2)"
    if hosts == 0 and scope.get("http_version") == "1.1":
        return "an HTTP/1.1 request must carry a Host header, e.g. 'Host: ledger.example' (RFC 9112 section 3.2)"
    return None


class BodyGuard:
    """Request bodies: at most `max_bytes` (413, by Content-Length and by what arrives), JSON
    (415), and I-JSON (422 naming the member): parsed here, once, by `domain.ijson.loads`,
    and kept for the routes (api/body.py)."""

    def __init__(self, app: ASGIApp, max_bytes: int, form_paths: Collection[str] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.form_paths = frozenset(form_paths)  # an HTML form's body is theirs to read

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self.reject(scope, receive, send, *self.too_large(declared))
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self.reject(scope, receive, send, *self.too_large(None))
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if body and not (media == FORM_MEDIA_TYPE and scope["path"] in self.form_paths):
            if media != "application/json" and not media.endswith("+json"):
                await self.reject(scope, receive, send, 415, "unsupported-media-type",
                                  "send the body as JSON with 'Content-Type: application/json'")
                return
            try:
                scope[PARSED_BODY] = ijson.loads(body)
            except InvalidJson as e:
                await self.refuse_json(scope, receive, send, e)
                return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def too_large(self, declared: str | None) -> tuple[int, str, str]:
        if declared is not None and not declared.isdigit():
            return 400, "bad-content-length", "Content-Length must be a number of bytes"
        return 413, "body-too-large", (
            f"the request body is larger than {self.max_bytes // 1024} KiB; send one claim or act per request"
        )

    @staticmethod
    async def reject(
        scope: Scope, receive: Receive, send: Send, status: int, code: str, detail: str, *,
        title: str | None = None, extra: dict[str, Any] | None = None,
    ) -> None:
        title = title or {413: "Content Too Large"}.get(status)
        response = problems.problem_response(
            status, detail, code=code, title=title, instance=scope["path"], request_id=_request_id(scope),
            extra=extra,
        )
        await response(scope, receive, send)

    async def refuse_json(self, scope: Scope, receive: Receive, send: Send, error: InvalidJson) -> None:
        """422 naming the member (`errors[].loc` as FastAPI's, from "body"); malformed JSON keeps
        the problem type it always had."""
        malformed = isinstance(error, MalformedJson)
        await self.reject(
            scope, receive, send, 422, "malformed-body" if malformed else error.code,
            f"the request body is refused: {error}", title="Malformed request body" if malformed else error.title,
            extra={"errors": [{"loc": ["body", *map(str, error.loc)], "msg": str(error), "type": error.code}]},
        )
