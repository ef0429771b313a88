"""Server-Sent Event streams: the event feed and claims' changes, caught up then live.

    GET /v1/events/stream   (role auditor)    id = position, event = type, data = {position, hash, body}
    GET /v1/claims/stream   (read policy)     id = last position the view reflects, event = claim, data = the view

Both start after `Last-Event-ID` (or `?after=`), read the store until they have caught up,
then take what the process's one follower (service/follower.py) reads as the projections
move on. Bad input is refused before the stream starts, as a problem document.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated

import anyio.to_thread
import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

from api.problems import Problem, problem_responses
from api.routes.deps import Services, read_access, require, services_of
from api.schemas import SLUG_PATTERN
from domain.fold import ClaimStatus
from domain.ijson import MAX_SAFE_INTEGER
from domain.values import MAX_NAME, check_text, claim_ids_for_ref
from projections.queries import ReadModels
from service.follower import (
    CLAIMS,
    EVENTS,
    Follower,
    Page,
    StreamFilter,
    Subscriber,
    TooManyStreams,
    catch_up_claims,
    catch_up_events,
)
from store.settings import Settings
from store.tokens import Role

router = APIRouter(tags=["streams"])

EVENT_STREAM = "text/event-stream"
RETRY_MS = 2000  # the reconnection delay the streams ask clients for
RETRY = b"retry: %d\n\n" % RETRY_MS
FULL_RETRY_AFTER = 5  # seconds: Retry-After of a 503 when the process serves all the streams it can
# A send that the client has not taken in this long (a heartbeat or an event) ends the stream.
SEND_TIMEOUT_FLOOR = 60.0
CatchUp = Callable[[ReadModels, int, StreamFilter], Page]


def follower_of(request: Request) -> Follower:
    found = getattr(request.app.state, "follower", None)
    if not isinstance(found, Follower):
        raise RuntimeError("the app's lifespan has not run: serve it with uvicorn or `with TestClient(app)`")
    return found


def only_known(*names: str) -> Callable[[Request], None]:
    """A dependency refusing query parameters other than `names` (422): a misspelt filter
    would otherwise stream everything, for as long as the stream stays open."""

    known = frozenset(names)

    def dependency(request: Request) -> None:
        unknown = sorted({name for name in request.query_params if name not in known})
        if unknown:
            raise RequestValidationError([
                {"loc": ("query", name), "type": "unknown-parameter",
                 "msg": f"unknown query parameter; this stream takes {', '.join(sorted(known))}"}
                for name in unknown
            ])

    return dependency


def start_position(
    after: Annotated[int | None, Query(
        ge=0, le=MAX_SAFE_INTEGER,
        description="Start after this log position (0: from the start). `Last-Event-ID` takes precedence.",
    )] = None,
    last_event_id: Annotated[str | None, Header(
        alias="Last-Event-ID", max_length=32,
        description="The id of the last event received: the stream resumes after it.",
    )] = None,
) -> int:
    """Where a stream starts: after `Last-Event-ID` (an EventSource sends it when it
    reconnects, with the URL it first opened, so it wins over `after`), else after `after`."""
    if last_event_id is None:
        return after or 0
    text = last_event_id.strip()
    if not text.isascii() or not text.isdigit() or int(text) > MAX_SAFE_INTEGER:
        raise RequestValidationError([{
            "loc": ("header", "Last-Event-ID"), "type": "invalid-last-event-id",
            "msg": f"must be the id of an event this stream sent: a position from 0 to {MAX_SAFE_INTEGER}"
            f" (got {last_event_id!r:.40})",
        }])
    return int(text)


def claim_filter(read: ReadModels, refs: list[str]) -> frozenset[str] | None:
    """The ids `?claim=` names (a UUID or a key each): the claim a ref names now, or, for
    one not registered yet, every id it could name (domain.values.claim_ids_for_ref)."""
    if not refs:
        return None
    ids: set[str] = set()
    for ref in refs:
        candidates = claim_ids_for_ref(ref)
        if not candidates:
            raise RequestValidationError([{
                "loc": ("query", "claim"), "type": "invalid-claim",
                "msg": f"must be a claim's UUID or its key (lowercase letters, digits and '-'); got {ref!r:.80}",
            }])
        found = read.resolve(ref)
        ids.update([found] if found is not None else (str(c) for c in candidates))
    return frozenset(ids)


def check_start(svc: Services, after: int) -> None:
    """422 when `after` is past the newest event: the client holds an id this ledger never
    gave (another ledger's, or one restored from an older backup)."""
    if after == 0:
        return
    head = svc.log_head()
    if after > head:
        raise Problem(
            422, f"the stream cannot start after position {after}: the newest event in the ledger is at "
            f"{head}; resume from the id of the last event received, or 0 for the whole stream",
            code="position-beyond-log", title="Position beyond the log",
        )


def open_stream(request: Request, kind: str, only: StreamFilter, after: int, catch_up: CatchUp) -> EventSourceResponse:
    follower = follower_of(request)
    try:
        sub = follower.subscribe(kind, only, after)
    except TooManyStreams as e:
        raise Problem(
            503, f"{e}; retry in a few seconds, or connect to another server process",
            code="too-many-streams", title="Too many streams", headers={"Retry-After": str(FULL_RETRY_AFTER)},
        ) from None
    settings: Settings = services_of(request).runtime.database.settings
    heartbeat = settings.stream_heartbeat_seconds
    return EventSourceResponse(
        stream_body(follower, sub, services_of(request).runtime.read, catch_up),
        # The stream's slot is freed when its body ends, and after a response that never ran
        # its body (HEAD is answered with the headers alone).
        background=BackgroundTask(follower.unsubscribe, sub),
        ping=heartbeat, sep="\n", send_timeout=max(SEND_TIMEOUT_FLOOR, 4 * heartbeat),
        ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep="\n"),
    )


async def stream_body(follower: Follower, sub: Subscriber, read: ReadModels, catch_up: CatchUp) -> AsyncIterator[bytes]:
    """The bytes of one stream: `retry:`, then events, queued ones first, pages read from
    the store while it is behind; `event: dropped` when its client stopped reading."""
    try:
        yield RETRY
        while not sub.closed:
            if sub.dropped:
                yield dropped(sub.sent)
                return
            chunk = b""
            if sub.queue:
                chunk = sub.take()
            elif sub.behind:
                page = await anyio.to_thread.run_sync(catch_up, read, sub.position, sub.only)
                sub.caught_up(page)
                chunk = b"".join(item.chunk for item in page.items)
            else:
                sub.wake.clear()
                await sub.wake.wait()
            if chunk:
                sub.sending = True  # until the response has handed it on and asks for more
                yield chunk
                sub.sending = False
    finally:
        follower.unsubscribe(sub)


def dropped(sent: int) -> bytes:
    data = orjson.dumps({
        "resume_after": sent,
        "detail": "this stream's client read too slowly and the server stopped keeping events for it; "
        "reconnect with Last-Event-ID (or ?after=) set to resume_after",
    })
    return b"event: dropped\ndata: %s\n\n" % data


STREAM_RESPONSES = {
    200: {"description": "A Server-Sent Event stream.", "content": {EVENT_STREAM: {"schema": {"type": "string"}}}},
    **problem_responses(401, 403, 422, 503),
}


@router.get(
    "/v1/events/stream", summary="The event feed as Server-Sent Events (role auditor)",
    response_class=EventSourceResponse, responses=STREAM_RESPONSES,
    dependencies=[Depends(require(Role.AUDITOR)), Depends(only_known("after", "claim"))],
)
async def events_stream(
    request: Request,
    start: Annotated[int, Depends(start_position)],
    claim: Annotated[list[str] | None, Query(
        min_length=1, description="Only the events of this claim (UUID or key); repeatable.",
    )] = None,
) -> EventSourceResponse:
    """Each event of the log in order, `id:` its position, `event:` its type, `data:` the item
    `GET /v1/events` serves; caught up from `Last-Event-ID` or `after`, then live."""
    svc = services_of(request)
    await anyio.to_thread.run_sync(check_start, svc, start)
    only = StreamFilter(claim_ids=await anyio.to_thread.run_sync(claim_filter, svc.runtime.read, claim or []))
    return open_stream(request, EVENTS, only, start, catch_up_events)


@router.get(
    "/v1/claims/stream", summary="Claims' changes as Server-Sent Events",
    response_class=EventSourceResponse, responses=STREAM_RESPONSES,
    dependencies=[Depends(read_access), Depends(only_known("after", "claim", "status", "party", "subject"))],
)
async def claims_stream(
    request: Request,
    start: Annotated[int, Depends(start_position)],
    claim: Annotated[list[str] | None, Query(
        min_length=1, description="Only this claim (UUID or key); repeatable.",
    )] = None,
    status: Annotated[ClaimStatus | None, Query(description="Only changes after which the claim has this status.")] = None,
    party: Annotated[str | None, Query(
        pattern=SLUG_PATTERN, description="Only claims on which this party holds or voiced a stance.",
    )] = None,
    subject: Annotated[str | None, Query(min_length=1, max_length=200, description="Only claims with this subject.")] = None,
) -> EventSourceResponse:
    """Each change of a claim's view once a GET answers it: `id:` the last log position the
    view reflects, `event: claim`, `data:` the view `GET /v1/claims/{id}` serves. Changes of
    one claim applied together may come as one event, with the latest view."""
    svc = services_of(request)
    if subject is not None:
        check_text(subject, "subject", max_len=MAX_NAME)  # as GET /v1/claims
    await anyio.to_thread.run_sync(check_start, svc, start)
    only = StreamFilter(
        claim_ids=await anyio.to_thread.run_sync(claim_filter, svc.runtime.read, claim or []),
        status=None if status is None else status.value, party=party, subject=subject,
    )
    return open_stream(request, CLAIMS, only, start, catch_up_claims)
