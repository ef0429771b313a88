"""Claims and histories as CSV (RFC 4180: comma-separated, CRLF line ends, fields with a
comma, quote or line break quoted, quotes doubled; UTF-8; a header row), written with
Python's csv module.

Two tables, each with the columns documented in docs/formats.md:

- `CLAIM_COLUMNS`: one row per claim (the claim list, `GET /v1/claims` with
  `Accept: text/csv`);
- `EVENT_COLUMNS`: one row per event of a history (`GET /v1/claims/{id}/history` with
  `Accept: text/csv`, and `claims export --format csv`, which writes every claim's).

A cell holding several values (subjects, holders, relays, ratings) joins them with
`LIST_SEPARATOR`; an empty cell is an absent value.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any

Json = dict[str, Any]

LIST_SEPARATOR = "; "
CLAIM_COLUMNS = (
    "id", "key", "statement", "language", "subjects", "status", "asserted_by", "denied_by", "withdrawn_by",
    "assertions", "denials", "retractions", "voids", "reviews", "ratings", "version", "registered_at",
    "updated_at",
)
EVENT_COLUMNS = (
    "claim_id", "key", "position", "version", "type", "act_id", "recorded_at", "said_at",
    "party_id", "party_name", "on_behalf_of_id", "on_behalf_of_name",
    "source_url", "source_outlet", "source_title", "source_published_at", "reported_via",
    "quote", "note", "retracts", "voids", "reason",
    "reviewer_id", "reviewer_name", "rating", "rating_value", "rating_best", "rating_worst",
    "review_url", "reviewed_at", "summary", "statement", "prev_hash", "hash",
)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _joined(values: Iterable[object]) -> str:
    return LIST_SEPARATOR.join(_cell(v) for v in values if v is not None and v != "")


def claim_row(view: Json) -> list[str]:
    """A claim view (`GET /v1/claims/{id}`) as a row of CLAIM_COLUMNS."""
    stances = view.get("stances") or []
    counts = view.get("counts") or {}
    reviews = view.get("reviews") or []

    def holders(stance: str) -> str:
        return _joined(s["holder"]["id"] for s in stances if s["stance"] == stance)

    return [_cell(v) for v in (
        view["id"], view["key"], view["statement"], view.get("language"), _joined(view.get("subjects") or []),
        view["status"], holders("asserts"), holders("denies"), holders("withdrawn"),
        counts.get("assertions", 0), counts.get("denials", 0), counts.get("retractions", 0),
        counts.get("voids", 0), counts.get("reviews", len(reviews)),
        _joined(f"{r['reviewer']['id']}: {r['rating']['text']}" for r in reviews),
        view["version"], view.get("registered_at"), view.get("updated_at"),
    )]


def _source_cells(source: Json | None) -> list[object]:
    source = source or {}
    return [source.get("url"), source.get("outlet"), source.get("title"), source.get("published_at")]


def _relay(source: Json) -> str:
    return " ".join(_cell(v) for v in (source.get("outlet"), source.get("url")) if v) or _cell(source.get("title"))


def event_row(claim_id: str, key: str, event: Json) -> list[str]:
    """A history item (`GET /v1/claims/{id}/history`) as a row of EVENT_COLUMNS."""
    party = event.get("party") or {}
    holder = event.get("on_behalf_of") or {}
    reviewer = event.get("reviewer") or {}
    rating = event.get("rating") or {}
    return [_cell(v) for v in (
        claim_id, key, event.get("position"), event["version"], event["type"], event.get("act_id"),
        event["recorded_at"], event.get("said_at"), party.get("id"), party.get("name"),
        holder.get("id"), holder.get("name"), *_source_cells(event.get("source")),
        _joined(_relay(r) for r in event.get("reported_via") or []),
        event.get("quote"), event.get("note"), event.get("retracts"), event.get("voids"), event.get("reason"),
        reviewer.get("id"), reviewer.get("name"), rating.get("text"), rating.get("value"), rating.get("best"),
        rating.get("worst"), event.get("url"), event.get("reviewed_at"), event.get("summary"),
        event.get("statement"), event.get("prev_hash"), event.get("hash"),
    )]


class CsvWriter:
    """Rows to RFC 4180 text, a batch at a time (each `rows` call returns what it wrote)."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")

    def rows(self, rows: Iterable[Iterable[str]]) -> str:
        self._writer.writerows(rows)
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text


def claims_csv(pages: Iterable[Iterable[Json]]) -> Iterator[str]:
    """The claims table: the header, then a page of rows at a time."""
    writer = CsvWriter()
    yield writer.rows([CLAIM_COLUMNS])
    for page in pages:
        yield writer.rows(claim_row(view) for view in page)


def history_csv(claim_id: str, events: list[Json], writer: CsvWriter | None = None, *, header: bool = True) -> str:
    """One claim's history as the events table (its header first unless `header` is false)."""
    writer = writer or CsvWriter()
    key = next((e["key"] for e in events if e["type"] == "ClaimRegistered"), "")
    rows = (event_row(claim_id, key, event) for event in events)
    return writer.rows([EVENT_COLUMNS, *rows] if header else rows)
