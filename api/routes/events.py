"""The global event feed, in log order, for auditors (bodies and hashes as docs/auditing.md defines them)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from api.problems import problem_responses
from api.routes.deps import ServicesDep, consistent_read, require
from api.schemas import FeedPage
from domain.ijson import MAX_SAFE_INTEGER
from projections.queries import ReadModels
from store.tokens import Role

router = APIRouter(prefix="/v1/events", tags=["audit"])

NDJSON = "application/x-ndjson"
DEFAULT_LIMIT = 100
PAGE = 1000


def wants_ndjson(request: Request) -> bool:
    return NDJSON in request.headers.get("accept", "").lower()


def ndjson_pages(read: ReadModels, first: list[dict[str, Any]], limit: int | None) -> Iterator[bytes]:
    """The feed a page at a time, one item a line, up to `limit` items or the log's end."""
    page, sent = first, 0
    while page:
        yield "".join(json.dumps(item, separators=(",", ":"), ensure_ascii=False) + "\n" for item in page).encode()
        sent += len(page)
        size = PAGE if limit is None else min(PAGE, limit - sent)
        if len(page) < PAGE or size <= 0:
            return
        page = read.feed(page[-1]["position"], size)


@router.get(
    "", response_model=FeedPage, summary="The event feed (role auditor)",
    dependencies=[Depends(require(Role.AUDITOR)), Depends(consistent_read)],
    responses={
        200: {
            "description": f"A page of the feed; with `Accept: {NDJSON}`, one item a line (the whole "
            "feed after `after` unless `limit` is given).",
            "content": {NDJSON: {"schema": {"type": "string"}}},
        },
        **problem_responses(401, 403, 422, 503),
    },
)
def get_events(
    request: Request, svc: ServicesDep,
    after: Annotated[int, Query(ge=0, le=MAX_SAFE_INTEGER, description="Items after this position.")] = 0,
    limit: Annotated[int | None, Query(ge=1, le=10_000, description=f"At most this many (default {DEFAULT_LIMIT}).")] = None,
) -> Any:
    read = svc.runtime.read
    if wants_ndjson(request):
        first = read.feed(after, PAGE if limit is None else min(PAGE, limit))
        return StreamingResponse(ndjson_pages(read, first, limit), media_type=NDJSON)
    items = read.feed(after, limit or DEFAULT_LIMIT)
    return {"items": items, "next_after": items[-1]["position"] if items else after}
