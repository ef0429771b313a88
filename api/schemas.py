"""Request and response bodies of the HTTP API, so /openapi.json is exact.

Request models forbid unknown fields. Their constraints mirror domain/values.py for the
documentation; the domain still validates every value (a date must be a real date, text
must not be blank) and its errors answer 422 just the same.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StringConstraints

from domain.fold import ClaimStatus
from domain.values import (
    MAX_NAME,
    MAX_RATING,
    MAX_REPORTED_VIA,
    MAX_STATEMENT,
    MAX_SUBJECTS,
    MAX_TEXT,
    MAX_URL,
)

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


RatingNumber = StrictInt | StrictFloat


class Rating(RequestBody):
    """A verdict as published, and where it sits on the reviewer's scale. `best` and `worst`
    come together (and differ); `value` needs both and lies between them."""

    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_RATING)] = Field(
        examples=["False", "Pants on Fire", "Unproven"]
    )
    value: RatingNumber | None = Field(None, examples=[1])
    best: RatingNumber | None = Field(None, examples=[5])
    worst: RatingNumber | None = Field(None, examples=[1])


class ReviewBody(RequestBody):
    """A fact-checker's published verdict on the claim. It never changes the claim's status."""

    reviewer: Party = Field(description="The fact-checking organisation.")
    rating: Rating
    url: Annotated[str, StringConstraints(max_length=MAX_URL, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://")] = Field(
        description="The published review: an absolute http(s) URL.",
        examples=["https://www.example.org/fact-checks/putin-elton-john-call"],
    )
    reviewed_at: SaidAt | None = Field(None, description="When the review was published (unknown: null).")
    summary: Text | None = None
    act_id: Slug | None = Field(None, description="Unique within the claim; made by the server when omitted.")


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
    reviews: int = Field(description="Standing reviews: the length of `reviews`.")


def _absent(value: object) -> bool:
    return value is None


class RatingView(BaseModel):
    text: str
    value: int | float | None = Field(None, description="Only when given.", exclude_if=_absent)
    best: int | float | None = Field(None, description="Only when given.", exclude_if=_absent)
    worst: int | float | None = Field(None, description="Only when given.", exclude_if=_absent)


class ClaimReview(BaseModel):
    """A reviewer's latest standing review of the claim."""

    act_id: str
    reviewer: PartyRef
    rating: RatingView
    url: str
    reviewed_at: str | None
    summary: str | None = Field(None, description="Only when given.", exclude_if=_absent)
    version: int
    recorded_at: str


class ClaimView(BaseModel):
    id: str
    key: str
    statement: str
    language: str
    subjects: list[str]
    status: ClaimStatus
    stances: list[ClaimStance]
    reviews: list[ClaimReview] = Field(description="Each reviewer's latest standing review, by reviewer id.")
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
    type: Literal["ClaimRegistered", "Asserted", "Denied", "Retracted", "ActVoided", "Reviewed"]
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
    reviewer: PartyRef | None = Field(None, description="Reviewed only.", exclude_if=_absent)
    rating: RatingView | None = Field(None, description="Reviewed only.", exclude_if=_absent)
    url: str | None = Field(None, description="Reviewed only.", exclude_if=_absent)
    reviewed_at: str | None = Field(None, description="Reviewed only, when known.", exclude_if=_absent)
    summary: str | None = Field(None, description="Reviewed only, when given.", exclude_if=_absent)
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


class PartyReview(ClaimReview):
    claim_id: str
    key: str
    statement: str
    status: ClaimStatus


class PartyView(BaseModel):
    party_id: str
    name: str
    stances: list[PartyStance] = Field(description="The party's own stances (as holder), one per claim.")
    spoken_for_others: list[PartyStance] = Field(description="Stances the party voiced for another holder.")
    reviews: list[PartyReview] = Field(description="The party's standing reviews as a reviewer, one per claim.")


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
    engine: Literal["running", "failing", "stopped", "external"] = Field(
        description="failing: the engine runs but its batch fails (see error) and is retried every second: the read"
        " models stay at position until the cause is fixed.",
    )
    error: str | None = Field(default=None, description="Why the engine's last batch failed (engine failing).")
    lease: Literal["leader", "standby", "sole"] | None = Field(
        default=None,
        description="On PostgreSQL, whether this node's engine holds the lease and applies the log (leader) or waits"
        " to take over (standby); sole on SQLite; null when the engine is stopped or runs in another process"
        " (--workers N).",
    )


class ReplicaHealth(BaseModel):
    name: str = Field(description="The standby's host:port (LEDGER_READ_DATABASE_URL).")
    status: Literal["ok", "behind", "unreachable"] = Field(
        description="ok: it serves reads; behind: more than LEDGER_READ_MAX_LAG_SECONDS behind the primary; "
        "unreachable: see problem. Reads skip a standby that is not ok.",
    )
    lag_bytes: int | None = Field(description="WAL bytes the primary wrote that the standby has not replayed.")
    lag_seconds: float | None = Field(
        description="Seconds since the standby replayed its last transaction, while it is behind (0 when not).",
    )
    replay_paused: bool = Field(description="Replay is paused on the standby (pg_wal_replay_pause()).")
    problem: str | None = Field(description="Why the lag could not be measured.")
    note: str | None = Field(
        default=None,
        description="How the lag was measured when not against the primary: while the primary is unreachable, in"
        " seconds since the standby was last seen current (lag_bytes null); it serves reads until that passes"
        " LEDGER_READ_MAX_LAG_SECONDS.",
    )


class CheckpointHealth(BaseModel):
    status: Literal["ok", "refused"] = Field(
        description="refused: the log's tree does not extend the largest tree the ledger signed (a restore rewound"
        " it); no checkpoint is signed or served until `claims recover --acknowledge-rollback`.",
    )
    reason: str | None = Field(description="Why checkpoints are refused.")


class WitnessHealth(BaseModel):
    name: str = Field(description="The witness's key name.")
    url: str
    status: Literal["ok", "failing", "pending"] = Field(
        description="ok: its last answer was a cosignature; failing: it was not (see problem); pending: not asked yet.",
    )
    cosigned_size: int | None = Field(description="Tree size of its newest cosignature this process holds.")
    problem: str | None = Field(description="Why its last answer was not a cosignature.")


class Health(BaseModel):
    status: Literal["ok", "degraded", "unavailable"] = Field(
        description="degraded: the ledger works but a witness does not cosign (see witnesses), a read replica"
        " is behind or unreachable (see replicas), or the primary database is unreachable while a read replica"
        " within the allowed lag serves the reads (writes: unavailable).",
    )
    writes: Literal["ok", "unavailable"] = Field(
        default="ok", description="unavailable: the primary database cannot be reached and writes are refused (503).",
    )
    database: str = Field(description="'ok', or why the database cannot be used.")
    checkpoints: CheckpointHealth = Field(
        default_factory=lambda: CheckpointHealth(status="ok", reason=None),
        description="Whether the ledger signs its checkpoints (docs/operations.md, restores).",
    )
    replicas: list[ReplicaHealth] = Field(
        default_factory=list, description="The hot standbys reads go to (LEDGER_READ_DATABASE_URL); empty: none.",
    )
    backend: str
    projections: ProjectionHealth
    witnesses: list[WitnessHealth] = Field(
        default_factory=list, description="The configured witnesses (LEDGER_WITNESSES), each with its state.",
    )


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
