"""CSV: read back by Python's csv reader under the documented header, every cell what the
JSON said, awkward text (commas, quotes, line breaks, non-ASCII) included."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from cli.formats import FormatName, export_format
from formats.csv import CLAIM_COLUMNS, EVENT_COLUMNS, LIST_SEPARATOR, claim_row, claims_csv, history_csv
from service.runtime import Runtime
from tests.formats.conftest import BASE, SEED_KEY, all_keys

DOCS = Path(__file__).resolve().parents[2] / "docs" / "formats.md"


def read(text: str) -> list[dict[str, str]]:
    assert "\r\n" in text, "RFC 4180 ends lines with CRLF"
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_a_history_reads_back_cell_for_cell(stories: Runtime) -> None:
    history = stories.read.history_at(SEED_KEY)
    assert history is not None
    text = history_csv(history["claim_id"], history["events"])
    assert text.splitlines()[0] == ",".join(EVENT_COLUMNS)
    rows = read(text)
    assert [r["type"] for r in rows] == ["ClaimRegistered", "Asserted", "Denied"]
    for row, event in zip(rows, history["events"], strict=True):
        assert row["position"] == str(event["position"])
        assert row["hash"] == event["hash"]
        assert row["quote"] == (event["quote"] or "")
    denial = rows[2]
    assert (denial["party_id"], denial["on_behalf_of_id"]) == ("dmitry-peskov", "vladimir-putin")
    assert denial["reported_via"] == LIST_SEPARATOR.join(["TASS", "The Moscow Times"])
    assert rows[0]["statement"] == "Vladimir Putin telephoned Elton John on 14 September 2015"


def test_awkward_text_survives_quoting() -> None:
    awkward = 'He said "no", twice;\r\nthen — «нет», 再见'
    view = {
        "id": "x", "key": "k", "statement": awkward, "language": "en", "subjects": ["a, b"], "status": "asserted",
        "stances": [], "counts": {}, "reviews": [], "version": 1, "registered_at": None, "updated_at": None,
    }
    (header, row) = csv.reader(io.StringIO("".join(claims_csv([[view]])), newline=""))
    assert tuple(header) == CLAIM_COLUMNS
    assert row == claim_row(view)
    assert row[2] == awkward and row[4] == "a, b"


def test_the_whole_ledger_as_csv_is_every_event_once_under_one_header(stories: Runtime) -> None:
    out = io.StringIO()
    report = export_format(stories.ledger, stories.database, FormatName.CSV, out, BASE)
    rows = read(out.getvalue())
    assert len(rows) == report.events == report.units == stories.ledger.max_position()
    assert sorted(int(r["position"]) for r in rows) == list(range(1, report.events + 1))
    assert {r["key"] for r in rows} == set(all_keys(stories))
    reviewed = [r for r in rows if r["type"] == "Reviewed"]
    assert reviewed and all(r["reviewer_id"] and r["rating"] and r["review_url"] for r in reviewed)


def test_docs_formats_md_lists_the_columns_in_order() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for columns in (CLAIM_COLUMNS, EVENT_COLUMNS):
        documented = re.findall(r"^\| \d+ \| `(\w+)` \|", text, flags=re.MULTILINE)
        start = documented.index(columns[0])
        assert tuple(documented[start:start + len(columns)]) == columns
