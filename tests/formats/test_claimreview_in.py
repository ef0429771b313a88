"""ClaimReview in: the ledger's own export back into an empty ledger (both backends), a Data
Commons-style DataFeed, a Fact Check Tools answer, the command line, and hostile files
refused whole, naming the item, with nothing written."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli import fixtures as fixture_commands  # noqa: F401  (adds import and export to the app)
from cli.formats import FormatName, export_format, import_claimreview
from cli.main import app
from formats.claimreview_in import MAX_DEPTH, ClaimReviewError, claim_key
from service.runtime import Runtime
from tests.formats.conftest import BASE, load_stories

Json = dict[str, Any]

CLAIM_TEXT = "The Glenharrow reservoir was empty in July 2023"


def views(runtime: Runtime) -> dict[str, Json]:
    runtime.engine.catch_up()
    items, cursor = runtime.read.list_claims(limit=500)
    assert cursor is None
    return {view["key"]: view for view in items}


def exported(runtime: Runtime) -> bytes:
    out = io.StringIO()
    export_format(runtime.ledger, runtime.database, FormatName.CLAIMREVIEW, out, BASE)
    return out.getvalue().encode()


def claim_review(publisher: str, rating: Json, url: str, text: str = CLAIM_TEXT, **extra: Any) -> Json:
    return {
        "@context": "https://schema.org", "@type": "ClaimReview", "claimReviewed": text,
        "author": {"@type": "Organization", "name": publisher, "url": "https://" + publisher.lower() + ".example"},
        "reviewRating": {"@type": "Rating", **rating}, "url": url, "datePublished": "2023-08-02",
        "itemReviewed": {
            "@type": "Claim", "author": {"@type": "Person", "name": "Ada Lund"}, "datePublished": "2023-07-30",
            "appearance": [{"@type": "CreativeWork", "url": "https://social.example/ada/1"}],
        },
        **extra,
    }


def test_an_export_imported_into_an_empty_ledger_gives_the_same_claims(
    stories: Runtime, empty_runtime: Runtime,
) -> None:
    document = exported(stories)
    report = import_claimreview(empty_runtime.ledger, document, "export.jsonld")
    assert report.fixture.events == stories.ledger.max_position()
    assert not report.conversion.ignored
    before, after = views(stories), views(empty_runtime)
    assert after.keys() == before.keys()
    for key, view in before.items():  # statuses, stances and reviews: the whole view, times included
        assert after[key] == view, key
    again = import_claimreview(empty_runtime.ledger, document, "export.jsonld")
    assert (again.fixture.events, again.fixture.unchanged) == (0, report.fixture.events)


def test_a_datafeed_of_two_publishers_reviews_is_one_claim_with_two_reviews(sqlite_runtime: Runtime) -> None:
    feed = {
        "@context": "https://schema.org", "@type": "DataFeed", "name": "fact checks",
        "dataFeedElement": [
            {"@type": "DataFeedItem", "item": [claim_review(
                "Northvale", {"alternateName": "False", "ratingValue": "1", "bestRating": "5", "worstRating": "1"},
                "https://northvale.example/1", sdPublisher={"name": "x"},
            )]},
            {"@type": "DataFeedItem", "item": claim_review(
                "Coastline", {"alternateName": "Pants on Fire", "ratingValue": 0},
                "https://coastline.example/2", text="  “the glenharrow reservoir was EMPTY in july 2023”  ",
                inLanguage={"@type": "Language", "name": "English"},
            )},
        ],
    }
    report = import_claimreview(sqlite_runtime.ledger, json.dumps(feed).encode(), "feed.json")
    assert (report.conversion.items, report.conversion.claims, report.conversion.reviews) == (2, 2, 2)
    assert report.conversion.ignored == {
        "ClaimReview.sdPublisher": 1, "ClaimReview.reviewRating.value (without bestRating and worstRating)": 1,
        "ClaimReview.inLanguage (not a language tag)": 1,
    }
    (view,) = views(sqlite_runtime).values()
    assert view["key"] == claim_key(CLAIM_TEXT)
    assert view["statement"] == CLAIM_TEXT
    assert view["status"] == "asserted"
    assert [s["holder"] for s in view["stances"]] == [{"id": "ada-lund", "name": "Ada Lund"}]
    assert [(r["reviewer"]["id"], r["rating"]) for r in view["reviews"]] == [
        ("coastline", {"text": "Pants on Fire"}),
        ("northvale", {"text": "False", "value": 1, "best": 5, "worst": 1}),
    ]
    assert view["reviews"][1]["url"] == "https://northvale.example/1"
    history = sqlite_runtime.read.history_at(view["key"])
    assert history is not None
    assertion = next(e for e in history["events"] if e["type"] == "Asserted")
    assert (assertion["said_at"], assertion["source"]["url"]) == ("2023-07-30", "https://social.example/ada/1")


def test_a_fact_check_tools_answer_is_claims_with_their_claimants_and_reviews(sqlite_runtime: Runtime) -> None:
    answer = {"claims": [
        {"text": "Wind turbines cause more deaths than coal", "claimant": "A. Blogger",
         "claimDate": "2021-02-01T00:00:00Z", "claimReview": [
             {"publisher": {"name": "Full Fact", "site": "fullfact.org"}, "url": "https://fullfact.org/energy/1",
              "title": "No, wind is not deadlier than coal", "reviewDate": "2021-02-03T00:00:00Z",
              "textualRating": "False", "languageCode": "en"},
             {"publisher": {"site": "politifact.com"}, "url": "https://politifact.com/2",
              "textualRating": "Pants on Fire", "languageCode": "en"},
         ]},
        {"text": "Claim nobody reviewed yet", "claimReview": []},
    ], "nextPageToken": "abc"}
    report = import_claimreview(sqlite_runtime.ledger, json.dumps(answer).encode(), "search.json")
    assert (report.conversion.items, report.conversion.claims, report.conversion.reviews) == (2, 2, 2)
    found = views(sqlite_runtime)
    wind = found[claim_key("Wind turbines cause more deaths than coal")]
    assert wind["status"] == "asserted"
    assert {r["reviewer"]["name"]: r["rating"]["text"] for r in wind["reviews"]} == {
        "Full Fact": "False", "politifact.com": "Pants on Fire",
    }
    assert next(r for r in wind["reviews"] if r["reviewer"]["id"] == "full-fact")["summary"] == (
        "No, wind is not deadlier than coal"
    )
    assert found[claim_key("Claim nobody reviewed yet")]["status"] == "unattested"
    again = import_claimreview(sqlite_runtime.ledger, json.dumps(answer).encode(), "search.json")
    assert again.fixture.events == 0


GOOD = claim_review("Northvale", {"alternateName": "False"}, "https://northvale.example/1")
HOSTILE: list[tuple[str, bytes, str]] = [
    ("not JSON", b"<html>no</html>", "feed.json: not I-JSON"),
    ("a duplicate member", b'[{"@type": "ClaimReview", "url": "a", "url": "b"}]', "duplicate"),
    ("nested too deep", b"[" * (MAX_DEPTH + 5) + b"]" * (MAX_DEPTH + 5), f"nesting deeper than {MAX_DEPTH}"),
    ("a bare string", b'"ClaimReview"', "expected a JSON object or array, not a string"),
    ("an unknown shape", b'{"hello": "world"}', "not a ClaimReview file"),
    ("a huge claim text", json.dumps([GOOD, {**GOOD, "claimReviewed": "x" * 100_000}]).encode(),
     "feed.json:item 2: statement is 100000 characters; at most 2000"),
    ("a number for a text", json.dumps([{**GOOD, "claimReviewed": 42}]).encode(),
     "feed.json:item 1: ClaimReview.claimReviewed must be a string, not a number"),
    ("no rating", json.dumps([GOOD, {k: v for k, v in GOOD.items() if k != "reviewRating"}]).encode(),
     "feed.json:item 2: ClaimReview.reviewRating is required"),
    ("a url that is no web address", json.dumps([GOOD, {**GOOD, "url": "javascript:alert(1)"}]).encode(),
     "feed.json:item 2: url must be an absolute http or https URL"),
    ("a date that is not one", json.dumps([GOOD, {**GOOD, "datePublished": "yesterday"}]).encode(),
     "feed.json:item 2: reviewed_at must be"),
    ("an item that is an array of numbers", json.dumps([GOOD, [1, 2]]).encode(),
     "feed.json:item 2: item[0] must be an object, not a number"),
    ("fact check claims that are not an array", b'{"claims": {"text": "x"}}', "claims must be an array"),
]


@pytest.mark.parametrize(("case", "data", "message"), HOSTILE, ids=[case for case, _, _ in HOSTILE])
def test_hostile_files_are_refused_whole_with_a_clear_error(
    sqlite_runtime: Runtime, case: str, data: bytes, message: str,
) -> None:
    with pytest.raises(ClaimReviewError) as refused:
        import_claimreview(sqlite_runtime.ledger, data, "feed.json")
    assert message in str(refused.value), case
    assert sqlite_runtime.ledger.max_position() == 0, "nothing is written"


def test_a_broken_rule_in_a_later_item_fails_the_file_naming_that_item(sqlite_runtime: Runtime) -> None:
    clash = {**GOOD, "identifier": "same-act", "url": "https://northvale.example/2"}
    data = json.dumps({"@type": "DataFeed", "dataFeedElement": [
        {**GOOD, "identifier": "same-act"}, GOOD, clash,
    ]}).encode()
    with pytest.raises(ClaimReviewError, match=r"^feed\.json:item 3: act_id 'same-act' is already used"):
        import_claimreview(sqlite_runtime.ledger, data, "feed.json")
    assert sqlite_runtime.ledger.max_position() == 0


def test_the_command_line_imports_and_exports_every_format(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    runtime = Runtime.open(url)
    load_stories(runtime)
    runtime.close()
    runner = CliRunner()
    env = {"LEDGER_DATABASE_URL": url}
    for fmt in FormatName:
        out = tmp_path / f"export.{fmt.value}"
        result = runner.invoke(app, ["export", "--format", fmt.value, "--out", str(out), "--base-url", BASE], env=env)
        assert result.exit_code == 0, result.output
        assert "exported 6 claims" in result.output
        assert out.stat().st_size > 1000
    result = runner.invoke(app, ["export", "--format", "prov-turtle", "--base-url", "https://a b"], env=env)
    assert result.exit_code == 2 and "--base-url must be an absolute URL" in result.output
    copy_url = f"sqlite:///{tmp_path / 'copy.db'}"
    result = runner.invoke(app, ["import", "--format", "claimreview", str(tmp_path / "export.claimreview")],
                           env={"LEDGER_DATABASE_URL": copy_url})
    assert result.exit_code == 0, result.output
    assert "imported 6 items" in result.output
    bad = tmp_path / "bad.json"  # its text is shown as it is, not read as the terminal's markup
    bad.write_text(json.dumps([GOOD, {**GOOD, "[/bold]": 1, "reviewRating": "[/red]False"}]))
    result = runner.invoke(app, ["import", "--format", "claimreview", str(bad)], env={"LEDGER_DATABASE_URL": copy_url})
    assert result.exit_code == 1
    assert "nothing was written" in result.output and "item 2: ClaimReview.reviewRating must be an object" in result.output
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps([{**GOOD, "[/bold]": 1}]))
    result = runner.invoke(app, ["import", "--format", "claimreview", str(odd)], env={"LEDGER_DATABASE_URL": copy_url})
    assert result.exit_code == 0, result.output
    assert "ClaimReview.[/bold] (1)" in result.output


@pytest.fixture
def sqlite_runtime(tmp_path: Path) -> Any:
    runtime = Runtime.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield runtime
    runtime.close()
