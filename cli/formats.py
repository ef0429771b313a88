"""The whole ledger out in fact-checking's formats, and ClaimReview feeds in.

`claims export --format claimreview|prov-turtle|prov-jsonld|csv` reads the event log claim by
claim (`LogScanner.by_claim`, one consistent snapshot, a page of events at a time) and writes
each claim as soon as its last event is read: memory holds one page and one claim, whatever
the ledger's size. `claims import --format claimreview FILE` converts the file
(formats/claimreview_in.py) into fixture lines and records them with the fixture import, in
one transaction: all of them, or none and the item that failed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import orjson

from domain.ledger import Ledger, LoggedEvent
from fixtures.replay import FixtureError, ImportReport, import_fixture
from formats import jsonld, prov
from formats.claimreview_in import MAX_BYTES, ClaimReviewError, Conversion, convert
from formats.csv import CsvWriter, history_csv
from formats.history import ClaimHistory, folded
from formats.vocab import jsonld_context
from projections.queries import history_item
from store.log import scanning
from store.settings import Database

PAGE = 2_000  # events read from the log at a time
Json = dict[str, Any]


class FormatName(StrEnum):
    CLAIMREVIEW = "claimreview"
    PROV_TURTLE = "prov-turtle"
    PROV_JSONLD = "prov-jsonld"
    CSV = "csv"


@dataclass(frozen=True)
class ExportReport:
    claims: int
    events: int
    units: int  # what the format writes: CSV rows, RDF triples, JSON-LD nodes
    unit: str
    seconds: float


def claim_events(ledger: Ledger, database: Database) -> Iterator[tuple[str, list[Json]]]:
    """Every claim's id and history items, one claim at a time, in claim id order, from one
    snapshot of the log."""
    upto = ledger.max_position()
    with scanning(ledger, database, snapshot=True) as scanner:
        after = None
        current: list[LoggedEvent] = []
        while True:
            events, after = scanner.by_claim(after, upto, PAGE)
            for event in events:
                if current and event.claim_id != current[0].claim_id:
                    yield _history(current)
                    current = []
                current.append(event)
            if len(events) < PAGE:
                break
        if current:
            yield _history(current)


def _history(events: list[LoggedEvent]) -> tuple[str, list[Json]]:
    return events[0].claim_id, [history_item(e.position, e.body()) for e in events]


def claim_histories(ledger: Ledger, database: Database) -> Iterator[ClaimHistory]:
    """Every claim's history, folded, one claim at a time (see `claim_events`)."""
    for claim_id, events in claim_events(ledger, database):
        yield folded(claim_id, events)


def export_format(ledger: Ledger, database: Database, fmt: FormatName, out: IO[str], base: str) -> ExportReport:
    """Write the whole ledger to `out` in `fmt`; what was written."""
    started = time.perf_counter()
    claims = events = units = 0
    unit = {FormatName.CSV: "rows", FormatName.CLAIMREVIEW: "nodes"}.get(fmt, "triples")
    write = out.write
    if fmt is FormatName.PROV_TURTLE:
        write(prov.turtle_prefixes())
    elif fmt is FormatName.CLAIMREVIEW:
        write('{"@context":' + orjson.dumps(jsonld_context()).decode() + ',"@type":"DataFeed","dataFeedElement":[\n')
    elif fmt is FormatName.PROV_JSONLD:
        write('{"@context":' + orjson.dumps(jsonld_context()).decode() + ',"@graph":[\n')
    csv_writer = CsvWriter()
    first = True
    for claim_id, items in claim_events(ledger, database):
        claims += 1
        events += len(items)
        if fmt is FormatName.CSV:  # rows of the events as they are: nothing to fold
            write(history_csv(claim_id, items, csv_writer, header=first))
            units += len(items)
            first = False
            continue
        history = folded(claim_id, items)
        if fmt is FormatName.CLAIMREVIEW:
            graph = jsonld.claim_graph(history, base)
            element = {"@type": "DataFeedItem", "item": graph}
            write(("" if first else ",\n") + orjson.dumps(element).decode())
            units += len(graph)
        else:
            graph_rdf = prov.claim_graph(history, base)
            units += len(graph_rdf)
            if fmt is FormatName.PROV_TURTLE:
                write(prov.turtle_body(graph_rdf).lstrip("\n"))
            else:
                nodes = _nodes(graph_rdf.serialize(format="json-ld", context=jsonld_context(), auto_compact=True))
                write(("" if first else ",\n") + ",\n".join(orjson.dumps(n).decode() for n in nodes))
        first = False
    if fmt is FormatName.CSV and first:
        write(history_csv("", [], csv_writer))  # the header alone: an empty ledger
    elif fmt in (FormatName.CLAIMREVIEW, FormatName.PROV_JSONLD):
        write("\n]}\n")
    return ExportReport(claims, events, units, unit, time.perf_counter() - started)


def _nodes(text: str) -> list[dict[str, object]]:
    document = orjson.loads(text)
    if isinstance(document, dict) and "@graph" in document:
        return list(document["@graph"])
    document.pop("@context", None)
    return [document]


@dataclass(frozen=True)
class ClaimReviewReport:
    conversion: Conversion
    fixture: ImportReport

    def summary(self) -> str:
        c, f = self.conversion, self.fixture
        ignored = ", ".join(f"{name} ({count:,})" for name, count in c.ignored.most_common(10))
        return (
            f"imported {c.items:,} items from {f.path}: {c.claims:,} claims, {c.reviews:,} reviews; "
            f"{f.events:,} new events, {f.unchanged:,} already recorded, in {f.seconds:.2f} s"
            + (f"; ignored properties: {ignored}" if ignored else "")
        )


def import_claimreview(ledger: Ledger, data: bytes, name: str) -> ClaimReviewReport:
    """Record a ClaimReview file in one transaction; ClaimReviewError names the first bad item."""
    conversion = convert(data, name)
    try:
        report = import_fixture(ledger, (orjson.dumps(line) for line in conversion.lines), name=name)
    except FixtureError as e:  # the line of the converted file: the item it came from
        raise ClaimReviewError(name, conversion.items_of_lines[e.line - 1], e.message) from None
    return ClaimReviewReport(conversion, report)


def read_input(path: Path) -> bytes:
    """A file's bytes, refused before reading when it is larger than the import takes."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ClaimReviewError(str(path), None, f"the file is {size:,} bytes; at most {MAX_BYTES:,}")
    return path.read_bytes()
