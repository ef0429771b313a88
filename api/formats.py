"""Content negotiation for claims: JSON, schema.org JSON-LD, PROV-O (Turtle, JSON-LD), CSV.

`GET /v1/claims/{id}` answers `application/ld+json` with schema.org (formats/jsonld.py),
`text/turtle` with PROV-O (formats/prov.py), and `?format=` names one outright (`prov` is
PROV-O as JSON-LD); the list and a history answer `text/csv` too (formats/csv.py). JSON stays
the answer unless the client prefers one of these to it (`Accept` weights, RFC 9110
§12.5.1), so existing clients, which send `*/*` or `application/json`, see no change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from formats import csv as csv_format
from formats import jsonld
from formats.history import folded

Json = dict[str, Any]

JSON = "application/json"
JSONLD = "application/ld+json"
TURTLE = "text/turtle"
CSV = "text/csv"
PROV_PROFILE = "http://www.w3.org/ns/prov#"
# Every answer of a negotiated route says so, whatever format it is in: a cache must not give
# one client's JSON to another's request for Turtle.
VARY = {"Vary": "Accept"}
# What almost every client sends: JSON, without parsing the header.
JSON_ACCEPTS = frozenset({"*/*", JSON, "application/json, */*", "application/json, text/plain, */*"})


class ClaimFormat(StrEnum):
    """What `?format=` may name on a claim."""

    JSON = "json"
    SCHEMA = "schema"  # schema.org Claim and ClaimReview, JSON-LD
    PROV = "prov"  # PROV-O, JSON-LD
    TURTLE = "turtle"  # PROV-O, Turtle


def _accepted(header: str) -> list[tuple[str, float, dict[str, str]]]:
    """The media ranges of an Accept header with their weights and parameters."""
    ranges = []
    for part in header.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if not media:
            continue
        options: dict[str, str] = {}
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            name, value = name.strip().lower(), value.strip().strip('"')
            if name == "q":
                try:
                    weight = max(0.0, min(1.0, float(value)))
                except ValueError:
                    weight = 0.0
            elif name:
                options[name] = value
        ranges.append((media.lower(), weight, options))
    return ranges


def preferred(request: Request, offered: tuple[str, ...]) -> str | None:
    """The offered media type (other than JSON, offered first) the client prefers to JSON,
    else None: the answer is JSON. A JSON-LD range with the PROV-O profile names PROV-O."""
    header = request.headers.get("accept")
    if not header or header in JSON_ACCEPTS:
        return None
    best: tuple[float, int, str] | None = None
    json_weight = 0.0
    for media, weight, options in _accepted(header):
        if media in (JSON, "*/*", "application/*"):
            json_weight = max(json_weight, weight)
            continue
        if media not in offered or weight <= 0:
            continue
        chosen = "prov" if media == JSONLD and options.get("profile") == PROV_PROFILE else media
        rank = (weight, -offered.index(media), chosen)
        if best is None or rank > best:
            best = rank
    if best is None or best[0] < json_weight:
        return None
    return best[2]


def claim_format(request: Request, requested: ClaimFormat | None) -> ClaimFormat:
    """The format a claim is answered in: `?format=`, else what Accept prefers."""
    if requested is not None:
        return requested
    media = preferred(request, (JSONLD, TURTLE))
    return {JSONLD: ClaimFormat.SCHEMA, TURTLE: ClaimFormat.TURTLE, "prov": ClaimFormat.PROV}.get(
        media or "", ClaimFormat.JSON
    )


def base_url(request: Request) -> str:
    """The base of the ledger's IRIs: this server's own URL, as the request reached it
    (Starlette takes the Host header only when it is a valid host, else the server's address)."""
    return str(request.base_url).rstrip("/")


def claim_in_format(history: Json, fmt: ClaimFormat, base: str) -> Response:
    """A claim, from its (possibly time-travelled) history, in `fmt` (not JSON)."""
    claim = folded(history["claim_id"], history["events"])
    headers = dict(VARY)
    if fmt is ClaimFormat.SCHEMA:
        return Response(orjson.dumps(jsonld.claim_document(claim, base)), media_type=JSONLD, headers=headers)
    from formats import prov  # rdflib is imported by the first PROV-O answer, not by every process start

    if fmt is ClaimFormat.PROV:
        return Response(prov.prov_jsonld(claim, base), media_type=JSONLD, headers=headers)
    return Response(prov.turtle(claim, base), media_type=f"{TURTLE}; charset=utf-8", headers=headers)


def wants_csv(request: Request) -> bool:
    return preferred(request, (CSV,)) == CSV


def csv_response(chunks: Iterator[str], filename: str) -> StreamingResponse:
    return StreamingResponse(
        (chunk.encode("utf-8") for chunk in chunks), media_type=f"{CSV}; charset=utf-8; header=present",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', **VARY},
    )


def claims_csv(
    first: tuple[list[str], str | None], page: Callable[[str], tuple[list[str], str | None]],
) -> Iterator[str]:
    """The first page (read before the answer starts, so that a bad filter or cursor is a
    problem document, not a cut stream), then every next page, as CSV rows."""

    def pages() -> Iterator[list[Json]]:
        items, cursor = first
        while True:
            yield [orjson.loads(item) for item in items]
            if cursor is None:
                return
            items, cursor = page(cursor)

    return csv_format.claims_csv(pages())


def history_csv(history: Json) -> Iterator[str]:
    yield csv_format.history_csv(history["claim_id"], history["events"])
