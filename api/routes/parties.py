"""Parties: where each party stands across claims."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from api.problems import problem_responses
from api.routes.deps import ServicesDep, consistent_read, read_access
from api.schemas import SLUG_PATTERN, PartyView
from domain.errors import NotFound

router = APIRouter(prefix="/v1/parties", tags=["parties"])


@router.get(
    "/{party_id}", response_model=PartyView, summary="A party's stances across claims",
    dependencies=[Depends(read_access), Depends(consistent_read)],
    responses=problem_responses(401, 403, 404, 422, 503),
)
def get_party(
    party_id: Annotated[str, Path(pattern=SLUG_PATTERN, examples=["elton-john"])], svc: ServicesDep,
) -> Any:
    party = svc.runtime.read.party(party_id)
    if party is None:
        raise NotFound(f"no claim holds a stance of party {party_id!r}")
    return party
