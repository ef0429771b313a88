"""Claims: register one, read one (now or at any past moment), list them, read a history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import anyio.to_thread
import orjson
from fastapi import APIRouter, Depends, Query, Request, Response

from api import formats
from api.body import JsonRoute
from api.problems import problem_responses
from api.routes.deps import (
    ClaimRef,
    IdempotencyKey,
    Services,
    ServicesDep,
    bearer,
    consistent_read,
    idempotent_write,
    read_access,
    require,
    services_of,
)
from api.routes.fast import claim_ref, fast_path
from api.schemas import SLUG_PATTERN, ClaimHistory, ClaimPage, ClaimView, ClaimWritten, RegisterClaimBody
from domain.commands import RegisterClaim
from domain.errors import UnknownClaim
from domain.fold import ClaimStatus
from domain.ledger import Outcome
from domain.values import parse_as_of
from store.tokens import Principal, Role

router = APIRouter(prefix="/v1/claims", tags=["claims"], route_class=JsonRoute)

READ_PROBLEMS = problem_responses(401, 403, 404, 422, 503)
AS_OF = (
    "T is a date (the end of that day, UTC) or an RFC 3339 date-time. Combinable with the other "
    "time-travel parameters."
)


@dataclass(frozen=True)
class TimeTravel:
    """Where on the two time axes (and at which version) to look at a claim."""

    version: int | None = None
    recorded_as_of: datetime | None = None
    said_as_of: datetime | None = None

    @property
    def now(self) -> bool:
        return self.version is None and self.recorded_as_of is None and self.said_as_of is None

    def kwargs(self) -> dict[str, Any]:
        return {"version": self.version, "recorded_as_of": self.recorded_as_of, "said_as_of": self.said_as_of}

    def describe(self) -> str:
        parts = []
        if self.version is not None:
            parts.append(f"version {self.version}")
        if self.recorded_as_of is not None:
            parts.append(f"recorded_as_of {self.recorded_as_of.isoformat()}")
        if self.said_as_of is not None:
            parts.append(f"said_as_of {self.said_as_of.isoformat()}")
        return ", ".join(parts)


async def time_travel(
    version: Annotated[int | None, Query(ge=1, le=2**31, description="The claim as of this version.")] = None,
    recorded_as_of: Annotated[str | None, Query(
        max_length=64, description="What the ledger knew at T. " + AS_OF, examples=["2015-09-15"],
    )] = None,
    said_as_of: Annotated[str | None, Query(
        max_length=64, description="The world at T, as known now (acts said by T). " + AS_OF,
    )] = None,
) -> TimeTravel:
    return TimeTravel(
        version=version,
        recorded_as_of=None if recorded_as_of is None else parse_as_of(recorded_as_of, "recorded_as_of"),
        said_as_of=None if said_as_of is None else parse_as_of(said_as_of, "said_as_of"),
    )


TimeTravelDep = Annotated[TimeTravel, Depends(time_travel)]


def not_found(svc: ServicesDep, ref: str, travel: TimeTravel) -> UnknownClaim:
    if travel.now or svc.runtime.read.resolve(ref) is None:
        return UnknownClaim(f"no claim has the id or key {ref!r:.130}")
    return UnknownClaim(f"claim {ref!r:.130} has no state at {travel.describe()}: it did not exist yet")


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


@router.post(
    "", status_code=201, response_model=ClaimWritten, summary="Register a claim",
    responses={
        200: {"model": ClaimWritten, "description": "The key already holds this statement; nothing was written."},
        **problem_responses(400, 401, 403, 409, 413, 415, 422, 503),
    },
)
async def register_claim(
    body: RegisterClaimBody, request: Request, response: Response,
    principal: Annotated[Principal, Depends(require(Role.RECORDER))],
    idempotency_key: IdempotencyKey = None,
) -> Any:
    svc = services_of(request)
    fields = body.model_dump(mode="json", exclude_unset=True)

    def written(outcome: Outcome, position: int) -> tuple[int, dict[str, Any]]:
        return (201 if outcome.created else 200), {
            "id": str(outcome.claim_id), "key": outcome.key, "version": outcome.version, "position": position,
        }

    def write(_: str | None) -> tuple[int, dict[str, Any]]:
        outcome = svc.write_in_thread(RegisterClaim.build(fields))
        assert outcome.claim_id is not None and outcome.version is not None
        return written(outcome, outcome.position or svc.position_of(outcome.claim_id, outcome.version))

    replayed = False
    if idempotency_key is None:  # waits for the group commit on the event loop, holding no thread
        outcome = await svc.write(RegisterClaim.build(fields))
        assert outcome.claim_id is not None and outcome.version is not None
        position = outcome.position
        if not position:  # an idempotent retry of an earlier write: find where it was recorded
            position = await anyio.to_thread.run_sync(svc.position_of, outcome.claim_id, outcome.version)
        status, answer = written(outcome, position)
    else:
        status, answer, replayed = await anyio.to_thread.run_sync(
            idempotent_write, request, svc, principal, idempotency_key, fields, None, write
        )
    response.status_code = status
    response.headers["Location"] = f"/v1/claims/{answer['id']}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return answer


@router.get(
    "", response_model=ClaimPage, summary="List claims",
    dependencies=[Depends(read_access), Depends(consistent_read)],
    responses={200: {"content": {formats.CSV: {}}}, **problem_responses(401, 403, 422, 503)},
)
def list_claims(
    svc: ServicesDep,
    request: Request,
    status: Annotated[ClaimStatus | None, Query(description="Only claims with this status.")] = None,
    party: Annotated[str | None, Query(
        pattern=SLUG_PATTERN, description="Only claims on which this party holds or voiced a stance.",
    )] = None,
    subject: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=200, description="Full-text search of statements.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page.")] = None,
) -> Any:
    def page(cursor: str | None) -> tuple[list[str], str | None]:
        return svc.runtime.read.list_claims_json(
            status=None if status is None else status.value, party=party, subject=subject, q=q,
            limit=limit, cursor=cursor,
        )

    items, next_cursor = page(cursor)
    if formats.wants_csv(request):  # every page from `cursor` on, `limit` claims at a time
        return formats.csv_response(formats.claims_csv((items, next_cursor), page), "claims.csv")
    # The stored views are ClaimView JSON already: sent as they are, not decoded,
    # validated and re-encoded (that was most of a page's cost).
    body = b'{"items":[' + ",".join(items).encode() + b'],"next_cursor":' + orjson.dumps(next_cursor) + b"}"
    return Response(body, media_type="application/json", headers=formats.VARY)


async def current_claim(svc: Services, ref: str, if_none_match: str | None) -> Response | None:
    """A claim as it is now (200, or 304 for a matching If-None-Match); None when unknown.

    The view as the projections stored it is the answer: one lookup, no decoding, no
    re-encoding (it was written from the same fields, in the same order as ClaimView).
    """
    found = await (await svc.read_lookups()).claim_view(ref)
    if found is None:
        return None
    body, version = found
    etag = f'"{version}"'
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag, **formats.VARY})
    return Response(body, media_type="application/json", headers={"ETag": etag, **formats.VARY})


async def fast_get_claim(request: Request) -> Response | None:
    """The route for a known claim as it is now (see routes/fast.py): the lane leaves every
    query parameter (min_position and time travel) to the route."""
    ref = claim_ref(request)
    if ref is None or formats.claim_format(request, None) is not formats.ClaimFormat.JSON:
        return None  # another format: the route answers
    await read_access(request)  # raises as the route's own dependency does
    return await current_claim(services_of(request), ref, request.headers.get("if-none-match"))


@router.get(
    "/{id}", response_model=ClaimView, summary="A claim: status, stances, counts — now or at a past moment",
    dependencies=[Depends(read_access), Depends(consistent_read)],
    responses={
        200: {"content": {formats.JSONLD: {}, formats.TURTLE: {}}, "description": (
            "The claim; `Accept: application/ld+json` answers schema.org JSON-LD, `text/turtle` PROV-O "
            "(docs/formats.md)."
        )},
        304: {"description": "If-None-Match named the current ETag."}, **READ_PROBLEMS,
    },
)
@fast_path(
    fast_get_claim, path=("id",), headers=("authorization", "if-none-match"),
    dependencies=(read_access, bearer, consistent_read, time_travel),
    passes_query=("min_position", "version", "recorded_as_of", "said_as_of", "format"),
)
async def get_claim(
    id: ClaimRef, request: Request, response: Response, travel: TimeTravelDep,
    format: Annotated[formats.ClaimFormat | None, Query(
        description="json; schema (schema.org JSON-LD); prov (PROV-O JSON-LD); turtle (PROV-O Turtle). "
        "Overrides Accept.",
    )] = None,
) -> Any:
    svc = services_of(request)
    fmt = formats.claim_format(request, format)
    if fmt is not formats.ClaimFormat.JSON:
        history = await anyio.to_thread.run_sync(lambda: svc.runtime.read.history_at(id, **travel.kwargs()))
        if history is None:
            raise await anyio.to_thread.run_sync(not_found, svc, id, travel)
        # Each format of a version is a representation of its own, with an ETag of its own.
        etag = None if travel.said_as_of is not None else f'"{history["events"][-1]["version"]}-{fmt.value}"'
        if etag is not None and etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers={"ETag": etag, **formats.VARY})
        answer = formats.claim_in_format(history, fmt, formats.base_url(request))
        if etag is not None:
            answer.headers["ETag"] = etag
        return answer
    if travel.now:
        current = await current_claim(svc, id, request.headers.get("if-none-match"))
        if current is None:
            raise not_found(svc, id, travel)
        return current
    view = await anyio.to_thread.run_sync(lambda: svc.runtime.read.claim_at(id, **travel.kwargs()))
    if view is None:
        raise await anyio.to_thread.run_sync(not_found, svc, id, travel)
    response.headers.update(formats.VARY)
    # A view cut by said_as_of is not the claim at any one version, so it gets no ETag.
    if travel.said_as_of is None:
        etag = f'"{view["version"]}"'
        if etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers={"ETag": etag, **formats.VARY})
        response.headers["ETag"] = etag
    return view


@router.get(
    "/{id}/history", response_model=ClaimHistory, summary="Every event of a claim, in order",
    dependencies=[Depends(read_access), Depends(consistent_read)],
    responses={200: {"content": {formats.CSV: {}}}, **READ_PROBLEMS},
)
def get_history(id: ClaimRef, request: Request, response: Response, svc: ServicesDep, travel: TimeTravelDep) -> Any:
    history = svc.runtime.read.history_at(id, **travel.kwargs())
    if history is None:
        raise not_found(svc, id, travel)
    if formats.wants_csv(request):
        return formats.csv_response(formats.history_csv(history), "history.csv")
    response.headers.update(formats.VARY)
    return history
