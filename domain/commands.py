"""Commands a caller gives the ledger, validated into the exact data their events carry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.claim import ACT_EVENT_OF_OP
from domain.errors import InvalidInput
from domain.values import (
    MAX_STATEMENT,
    MAX_TEXT,
    check_language,
    check_party,
    check_rating,
    check_said_at,
    check_slug,
    check_source,
    check_sources,
    check_subjects,
    check_text,
    check_web_url,
    key_from_statement,
)

Json = dict[str, Any]

REGISTER_FIELDS = {"statement", "key", "language", "subjects"}
ACT_FIELDS: dict[str, set[str]] = {
    "assert": {"act_id", "party", "on_behalf_of", "said_at", "source", "reported_via", "quote", "note"},
    "deny": {"act_id", "party", "on_behalf_of", "said_at", "source", "reported_via", "quote", "note"},
    "retract": {"act_id", "retracts", "party", "said_at", "source", "reason"},
    "void": {"act_id", "voids", "reason"},
    "review": {"act_id", "reviewer", "rating", "url", "reviewed_at", "summary"},
}


@dataclass(frozen=True)
class RegisterClaim:
    statement: str
    key: str
    language: str = "en"
    subjects: tuple[str, ...] = ()
    recorded_at: datetime | None = None

    @classmethod
    def build(cls, fields: Mapping[str, Any], recorded_at: datetime | None = None) -> RegisterClaim:
        _reject_unknown(fields, REGISTER_FIELDS, "a claim registration")
        statement = check_text(
            fields.get("statement"), "statement", max_len=MAX_STATEMENT, min_len=1, optional=False
        )
        assert statement is not None
        key = fields.get("key")
        key = key_from_statement(statement) if key is None else check_slug(key, "key")
        return cls(
            statement=statement, key=key, language=check_language(fields.get("language")),
            subjects=tuple(check_subjects(fields.get("subjects"))), recorded_at=recorded_at,
        )


@dataclass(frozen=True)
class RecordAct:
    """An assertion, denial, retraction, void or review on the claim named by id or key."""

    op: str  # one of ACT_EVENT_OF_OP
    claim: str
    data: Json = field(hash=False)
    recorded_at: datetime | None = None
    expected_version: int | None = None

    @classmethod
    def build(
        cls, op: str, claim: str, fields: Mapping[str, Any], *,
        recorded_at: datetime | None = None, expected_version: int | None = None,
    ) -> RecordAct:
        if op not in ACT_EVENT_OF_OP:
            raise InvalidInput(f"unknown op {op!r}; use one of {', '.join(ACT_EVENT_OF_OP)}", "op")
        if not isinstance(claim, str) or not claim:
            raise InvalidInput("claim must name a claim by its id or key", "claim")
        _reject_unknown(fields, ACT_FIELDS[op], op)
        act_id = fields.get("act_id")
        data: Json = {"act_id": None if act_id is None else check_slug(act_id, "act_id")}
        if op in ("assert", "deny"):
            data.update(
                party=check_party(fields.get("party"), "party"),
                on_behalf_of=check_party(fields.get("on_behalf_of"), "on_behalf_of", optional=True),
                said_at=check_said_at(fields.get("said_at")),
                source=check_source(fields.get("source"), "source"),
                reported_via=check_sources(fields.get("reported_via"), "reported_via"),
                quote=check_text(fields.get("quote"), "quote", max_len=MAX_TEXT),
                note=check_text(fields.get("note"), "note", max_len=MAX_TEXT),
            )
        elif op == "retract":
            data.update(
                retracts=check_slug(fields.get("retracts"), "retracts"),
                party=check_party(fields.get("party"), "party"),
                said_at=check_said_at(fields.get("said_at")),
                source=check_source(fields.get("source"), "source"),
                reason=check_text(fields.get("reason"), "reason", max_len=MAX_TEXT),
            )
        elif op == "review":
            data.update(
                reviewer=check_party(fields.get("reviewer"), "reviewer"),
                rating=check_rating(fields.get("rating")),
                url=check_web_url(fields.get("url"), "url"),
                reviewed_at=check_said_at(fields.get("reviewed_at"), "reviewed_at"),
                summary=check_text(fields.get("summary"), "summary", max_len=MAX_TEXT),
            )
        else:
            data.update(
                voids=check_slug(fields.get("voids"), "voids"),
                reason=check_text(fields.get("reason"), "reason", max_len=MAX_TEXT, min_len=1, optional=False),
            )
        if expected_version is not None and (not isinstance(expected_version, int) or expected_version < 1):
            raise InvalidInput("expected version must be a positive integer", "If-Match")
        return cls(op=op, claim=claim, data=data, recorded_at=recorded_at, expected_version=expected_version)


Command = RegisterClaim | RecordAct


def _reject_unknown(fields: Mapping[str, Any], allowed: set[str], what: str) -> None:
    """``what``: a description of the object, or the op of an act."""
    if type(fields) is dict and allowed.issuperset(fields):  # the common case, checked first
        return
    if what in ACT_FIELDS:
        what = f"an {what} act" if what == "assert" else f"a {what} act"
    if not isinstance(fields, Mapping):
        raise InvalidInput(f"{what} must be a JSON object")
    extra = set(fields) - allowed
    if extra:
        raise InvalidInput(
            f"{what} does not take {', '.join(sorted(extra))}; allowed fields: {', '.join(sorted(allowed))}",
            sorted(extra)[0],
        )
