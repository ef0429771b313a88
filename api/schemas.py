"""Request and response bodies of the HTTP API, so /openapi.json is exact.

Request models forbid unknown fields. Their constraints mirror domain/values.py for the
documentation; the domain still validates every value (a date must be a real date, text
must not be blank) and its errors answer 422 just the same.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from domain.fold import ClaimStatus
from domain.values import MAX_NAME, MAX_REPORTED_VIA, MAX_STATEMENT, MAX_SUBJECTS, MAX_TEXT, MAX_URL

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,119}$"
TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2}))?$"
LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"

Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
SaidAt = Annotated[
    str,
    StringConstraints(pattern=TIME_PATTERN),
    Field(description="A date (2015-09-14) or an RFC 3339 date-time with an offset.",
          examples=["2015-09-14", "2015-09-14T18:00:00Z"]),
]


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Party(RequestBody):
    """Who spoke, or on whose behalf: a slug id and a display name."""

    id: Slug = Field(examples=["elton-john"])
    name: Name = Field(examples=["Elton John"])


class Source(RequestBody):
    """Where an act was published."""

    url: Annotated[str, StringConstraints(max_length=MAX_URL)] | None = Field(
        None, examples=["https://www.instagram.com/p/7r0fHKSsBC/"]
    )
    outlet: Name | None = Field(None, examples=["Instagram"])
    title: Annotated[str, StringConstraints(max_length=MAX_NAME * 5)] | None = None
    published_at: SaidAt | None = None


class RegisterClaimBody(RequestBody):
    statement: Annotated[str, StringConstraints(min_length=1, max_length=MAX_STATEMENT)] = Field(
        examples=["Vladimir Putin telephoned Elton John on 14 September 2015"]
    )
    key: Slug | None = Field(
        None, description="Stable key; made from the statement when omitted.", examples=["putin-phoned-elton-john"]
    )
    language: Annotated[str, StringConstraints(max_length=35, pattern=LANGUAGE_PATTERN)] | None = Field(
        None, description="BCP 47 language tag (default en).", examples=["en"]
    )
    subjects: Annotated[list[Name], Field(max_length=MAX_SUBJECTS)] | None = Field(
        None, examples=[["vladimir-putin", "elton-john"]]
    )


class StanceBody(RequestBody):
    """An assertion or a denial."""

    party: Party
    on_behalf_of: Party | None = Field(None, description="The holder of the stance, when the party speaks for someone.")
    said_at: SaidAt | None = None
    source: Source | None = None
    reported_via: Annotated[list[Source], Field(max_length=MAX_REPORTED_VIA)] | None = None
    quote: Text | None = None
    note: Text | None = None
    act_id: Slug | None = Field(None, description="Unique within the claim; made by the server when omitted.")


class RetractionBody(RequestBody):
    retracts: Slug = Field(description="act_id of the assertion or denial withdrawn.")
    party: Party
    said_at: SaidAt | None = None
    source: Source | None = None
    reason: Text | None = None
    act_id: Slug | None = None


class VoidBody(RequestBody):
    voids: Slug = Field(description="act_id of the act recorded in error.")
    reason: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT)]
    act_id: Slug | None = None


# Responses.
class ClaimWritten(BaseModel):
    id: str = Field(description="The claim's UUID.")
    key: str
    version: int
    position: int = Field(description="Log position of the event; pass it as min_position to read your write.")


class ActWritten(BaseModel):
    act_id: str
    version: int
    position: int


class PartyRef(BaseModel):
    id: str
    name: str


class StanceName(StrEnum):
    ASSERTS = "asserts"
    DENIES = "denies"
    WITHDRAWN = "withdrawn"


class ClaimStance(BaseModel):
    holder: PartyRef
    party: PartyRef
    stance: StanceName
    act_id: str
    said_at: str | None


class Counts(BaseModel):
    assertions: int
    denials: int
    retractions: int
    voids: int


class ClaimView(BaseModel):
    id: str
    key: str
    statement: str
    language: str
    subjects: list[str]
    status: ClaimStatus
    stances: list[ClaimStance]
    counts: Counts
    version: int
    registered_at: str
    updated_at: str


class ClaimPage(BaseModel):
    items: list[ClaimView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class SourceView(BaseModel):
    url: str | None = None
    outlet: str | None = None
    title: str | None = None
    published_at: str | None = None


class HistoryEvent(BaseModel):
    position: int
    version: int
    type: Literal["ClaimRegistered", "Asserted", "Denied", "Retracted", "ActVoided"]
    act_id: str | None
    party: PartyRef | None
    on_behalf_of: PartyRef | None
    said_at: str | None
    recorded_at: str
    source: SourceView | None
    reported_via: list[SourceView]
    quote: str | None
    note: str | None
    retracts: str | None
    voids: str | None
    reason: str | None
    statement: str | None = Field(None, description="ClaimRegistered only.")
    key: str | None = Field(None, description="ClaimRegistered only.")
    language: str | None = Field(None, description="ClaimRegistered only.")
    subjects: list[str] | None = Field(None, description="ClaimRegistered only.")
    prev_hash: str
    hash: str


class ClaimHistory(BaseModel):
    claim_id: str
    events: list[HistoryEvent]


class PartyStance(ClaimStance):
    claim_id: str
    key: str
    statement: str
    status: ClaimStatus


class PartyView(BaseModel):
    party_id: str
    name: str
    stances: list[PartyStance] = Field(description="The party's own stances (as holder), one per claim.")
    spoken_for_others: list[PartyStance] = Field(description="Stances the party voiced for another holder.")


class FeedItem(BaseModel):
    position: int
    hash: str = Field(description="sha256 of the RFC 8785 canonical JSON of `body`.")
    body: dict[str, Any] = Field(description="The event body exactly as hashed (docs/auditing.md).")


class FeedPage(BaseModel):
    items: list[FeedItem]
    next_after: int = Field(description="Pass as `after` for the next page.")


class ProjectionHealth(BaseModel):
    position: int | None
    head: int | None = Field(description="Newest position in the event log.")
    lag: int | None
    engine: Literal["running", "stopped", "external"]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    database: str = Field(description="'ok', or why the database cannot be used.")
    backend: str
    projections: ProjectionHealth


class ValidationItem(BaseModel):
    loc: list[str]
    msg: str
    type: str


class ProblemDetail(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(title="Problem")

    type: str
    title: str
    status: int
    detail: str
    instance: str
    request_id: str | None = None
    errors: list[ValidationItem] | None = None
    expected_version: int | None = None
    current_version: int | None = None
