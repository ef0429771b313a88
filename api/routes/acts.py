"""Acts on a claim: assertions, denials, retractions, reviews (recorder) and voids (editor)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from api.auth import credential_of
from api.body import JsonRoute
from api.problems import problem_responses
from api.routes.deps import (
    ClaimRef,
    IdempotencyKey,
    IfMatch,
    Services,
    bearer,
    expected_version,
    idempotent_write,
    principal_of,
    require,
    services_of,
)
from api.routes.fast import Endpoint, claim_ref, fast_path, json_body, json_response
from api.schemas import ActWritten, RetractionBody, ReviewBody, StanceBody, VoidBody
from domain.commands import RecordAct
from domain.ledger import Outcome
from store.tokens import Credential, Principal, Role

router = APIRouter(prefix="/v1/claims/{id}", tags=["acts"], route_class=JsonRoute)

RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ActWritten, "description": "The same act (same act_id and content) was recorded before; "
          "nothing was written."},
    **problem_responses(400, 401, 403, 404, 409, 412, 413, 415, 422, 503),
}

Recorder = Annotated[Principal, Depends(require(Role.RECORDER))]
Editor = Annotated[Principal, Depends(require(Role.EDITOR))]


def answer(outcome: Outcome, position: int) -> tuple[int, dict[str, Any]]:
    return (201 if outcome.created else 200), {
        "act_id": outcome.act_id, "version": outcome.version, "position": position,
    }


async def record_now(
    svc: Services, command: RecordAct, credential: Credential | None = None,
) -> tuple[int, dict[str, Any]]:
    """Record an act (no Idempotency-Key): (status, answer). The request waits for the
    group commit on the event loop, holding no thread; the writer checks `credential`."""
    outcome = await svc.write(command, credential)
    assert outcome.claim_id is not None and outcome.version is not None
    position = outcome.position
    if not position:  # an idempotent retry of an earlier write: find where it was recorded
        position = await anyio.to_thread.run_sync(svc.position_of, outcome.claim_id, outcome.version)
    return answer(outcome, position)


async def record_act(
    op: str, ref: str, body: BaseModel, request: Request, response: Response,
    principal: Principal, idempotency_key: str | None, if_match: str | None,
) -> dict[str, Any]:
    svc = services_of(request)
    fields = body.model_dump(mode="json", exclude_unset=True)
    expected = expected_version(if_match)
    if idempotency_key is None:
        response.status_code, result = await record_now(
            svc, RecordAct.build(op, ref, fields, expected_version=expected)
        )
        return result

    def write(derived_act_id: str | None) -> tuple[int, dict[str, Any]]:
        act_fields = fields if fields.get("act_id") or derived_act_id is None else {**fields, "act_id": derived_act_id}
        command = RecordAct.build(op, ref, act_fields, expected_version=expected)
        outcome = svc.write_in_thread(command)
        assert outcome.claim_id is not None and outcome.version is not None
        return answer(outcome, outcome.position or svc.position_of(outcome.claim_id, outcome.version))

    status, result, replayed = await anyio.to_thread.run_sync(
        idempotent_write, request, svc, principal, idempotency_key, fields, if_match, write
    )
    response.status_code = status
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return result


def fast_act(op: str, body_model: type[BaseModel], role: Role) -> Callable[[Endpoint], Endpoint]:
    """The route's `@fast_path` (see routes/fast.py): its handler takes a valid body and
    leaves Idempotency-Key and If-Match to the route."""

    async def handler(request: Request) -> Response | None:
        ref = claim_ref(request)
        body = None if ref is None else await json_body(request, body_model)
        if ref is None or body is None:
            return None
        # The token is checked by the group writer, with the rest of its batch, before the
        # act is applied: 401 and 403 still come before any other refusal of a valid body.
        credential = credential_of(request.headers.get("authorization"), role)
        try:
            command = RecordAct.build(op, ref, body.model_dump(mode="json", exclude_unset=True))
        except Exception:
            await principal_of(request, role)  # raises as the route's own dependency would
            raise
        status, result = await record_now(services_of(request), command, credential)
        return json_response(result, status)

    return fast_path(
        handler, path=("id",), body=("body",), headers=("authorization", "content-type"),
        dependencies=(require(role), bearer), passes_headers=("idempotency-key", "if-match"),
    )


@router.post("/assertions", status_code=201, response_model=ActWritten, responses=RESPONSES,
             summary="Record that a party asserts the claim")
@fast_act("assert", StanceBody, Role.RECORDER)
async def assert_claim(
    id: ClaimRef, body: StanceBody, request: Request, response: Response,
    principal: Recorder, idempotency_key: IdempotencyKey = None, if_match: IfMatch = None,
) -> Any:
    return await record_act("assert", id, body, request, response, principal, idempotency_key, if_match)


@router.post("/denials", status_code=201, response_model=ActWritten, responses=RESPONSES,
             summary="Record that a party denies the claim")
@fast_act("deny", StanceBody, Role.RECORDER)
async def deny_claim(
    id: ClaimRef, body: StanceBody, request: Request, response: Response,
    principal: Recorder, idempotency_key: IdempotencyKey = None, if_match: IfMatch = None,
) -> Any:
    return await record_act("deny", id, body, request, response, principal, idempotency_key, if_match)


@router.post("/retractions", status_code=201, response_model=ActWritten, responses=RESPONSES,
             summary="Record that a party withdraws an assertion or denial")
@fast_act("retract", RetractionBody, Role.RECORDER)
async def retract_act(
    id: ClaimRef, body: RetractionBody, request: Request, response: Response,
    principal: Recorder, idempotency_key: IdempotencyKey = None, if_match: IfMatch = None,
) -> Any:
    return await record_act("retract", id, body, request, response, principal, idempotency_key, if_match)


@router.post("/voids", status_code=201, response_model=ActWritten, responses=RESPONSES,
             summary="Void an act recorded in error (the party never said it)")
@fast_act("void", VoidBody, Role.EDITOR)
async def void_act(
    id: ClaimRef, body: VoidBody, request: Request, response: Response,
    principal: Editor, idempotency_key: IdempotencyKey = None, if_match: IfMatch = None,
) -> Any:
    return await record_act("void", id, body, request, response, principal, idempotency_key, if_match)


@router.post("/reviews", status_code=201, response_model=ActWritten, responses=RESPONSES,
             summary="Record a fact-checker's published verdict on the claim (never changes its status)")
@fast_act("review", ReviewBody, Role.RECORDER)
async def review_claim(
    id: ClaimRef, body: ReviewBody, request: Request, response: Response,
    principal: Recorder, idempotency_key: IdempotencyKey = None, if_match: IfMatch = None,
) -> Any:
    return await record_act("review", id, body, request, response, principal, idempotency_key, if_match)
