"""schema.org JSON-LD: the IRIs a JSON-LD processor (PyLD) expands it to, the fields Google asks
of a ClaimReview, and the ledger's own vocabulary, documented term by term."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

from pyld import jsonld as pyld

from cli.formats import FormatName, export_format
from formats import jsonld
from formats.vocab import LEDGER, SCHEMA, TERMS
from service.runtime import Runtime
from tests.formats.conftest import BASE, SEED_KEY, all_keys, history_of

REVIEWED_KEY = "glenharrow-reservoir-below-20-percent"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "formats.md"


def offline_loader(url: str, options: dict[str, Any] | None = None) -> Any:
    raise AssertionError(f"the document made PyLD fetch {url}: its context must be inline")


def expanded(document: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pyld.expand(document, {"documentLoader": offline_loader}))


def nodes_of_type(expanded_nodes: list[dict[str, Any]], iri: str) -> list[dict[str, Any]]:
    return [n for n in expanded_nodes if iri in n.get("@type", [])]


def test_the_seed_story_expands_to_schema_org_claim_with_its_authors_and_appearances(stories: Runtime) -> None:
    document = jsonld.claim_document(history_of(stories, SEED_KEY), BASE)
    nodes = expanded(document)
    (claim,) = nodes_of_type(nodes, SCHEMA + "Claim")
    assert claim[SCHEMA + "text"] == [{"@value": "Vladimir Putin telephoned Elton John on 14 September 2015"}]
    (author,) = claim[SCHEMA + "author"]
    assert SCHEMA + "Person" in author["@type"]
    assert author[SCHEMA + "name"] == [{"@value": "Elton John"}]
    assert claim[SCHEMA + "datePublished"] == [{"@value": "2015-09-14"}]
    first = claim[SCHEMA + "firstAppearance"][0]
    assert first[SCHEMA + "publisher"][0][SCHEMA + "name"] == [{"@value": "Instagram"}]
    outlets = [a[SCHEMA + "publisher"][0][SCHEMA + "name"][0]["@value"] for a in claim[SCHEMA + "appearance"]]
    assert outlets == ["Instagram", "The Moscow Times"]
    # What schema.org cannot say, in the ledger's terms: Putin denies, through Peskov.
    assert claim[LEDGER + "status"] == [{"@value": "disputed"}]
    (denier,) = claim[LEDGER + "deniedBy"]
    assert denier[SCHEMA + "identifier"] == [{"@value": "vladimir-putin"}]
    denial = next(a for a in claim[LEDGER + "act"] if LEDGER + "Denial" in a["@type"])
    assert denial[LEDGER + "party"][0][SCHEMA + "name"] == [{"@value": "Dmitry Peskov"}]
    assert denial[LEDGER + "onBehalfOf"][0][SCHEMA + "name"] == [{"@value": "Vladimir Putin"}]
    assert denial[LEDGER + "saidAt"] == [{"@value": "2015-09-15"}]
    assert denial[LEDGER + "recordedAt"] == [{"@value": "2015-09-15T14:30:00Z"}]


def test_each_standing_review_is_a_claimreview_with_the_fields_google_requires(stories: Runtime) -> None:
    history = history_of(stories, REVIEWED_KEY)
    reviews = history.view["reviews"]
    assert reviews, "the reviews story reviews this claim"
    nodes = expanded(jsonld.claim_document(history, BASE))
    claim_reviews = nodes_of_type(nodes, SCHEMA + "ClaimReview")
    assert len(claim_reviews) == len(reviews)
    for node, review in zip(claim_reviews, reviews, strict=True):
        assert node[SCHEMA + "claimReviewed"] == [{"@value": history.view["statement"]}]
        assert node[SCHEMA + "url"] == [{"@value": review["url"]}]
        # Its publication date when the ledger knows it (a review may be recorded without it).
        assert node.get(SCHEMA + "datePublished") == (
            [{"@value": review["reviewed_at"]}] if review["reviewed_at"] else None
        )
        (author,) = node[SCHEMA + "author"]
        assert SCHEMA + "Organization" in author["@type"]
        assert author[SCHEMA + "name"] == [{"@value": review["reviewer"]["name"]}]
        (rating,) = node[SCHEMA + "reviewRating"]
        assert rating["@type"] == [SCHEMA + "Rating"]
        assert rating[SCHEMA + "alternateName"] == [{"@value": review["rating"]["text"]}]
        for name, term in (("value", "ratingValue"), ("best", "bestRating"), ("worst", "worstRating")):
            assert (SCHEMA + term in rating) == (name in review["rating"])
        (item,) = node[SCHEMA + "itemReviewed"]
        assert SCHEMA + "Claim" in item["@type"]
        assert SCHEMA + "author" in item and SCHEMA + "appearance" in item


def test_every_claim_of_every_story_expands_and_names_only_documented_ledger_terms(stories: Runtime) -> None:
    used: set[str] = set()

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            for name, inner in value.items():
                if name.startswith(LEDGER):
                    used.add(name.removeprefix(LEDGER))
                if name == "@type":
                    used.update(t.removeprefix(LEDGER) for t in inner if t.startswith(LEDGER))
                collect(inner)
        elif isinstance(value, list):
            for inner in value:
                collect(inner)

    for key in all_keys(stories):
        collect(expanded(jsonld.claim_document(history_of(stories, key), BASE)))
    assert used <= set(TERMS), f"undocumented terms: {sorted(used - set(TERMS))}"
    assert {"Denial", "Retraction", "Void", "retracts", "voidedBy", "onBehalfOf"} <= used


def test_docs_formats_md_documents_every_term_of_the_vocabulary() -> None:
    text = DOCS.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `ledger:(\w+)` \|", text, flags=re.MULTILINE))
    assert documented == set(TERMS), (
        f"missing from docs/formats.md: {sorted(set(TERMS) - documented)}; "
        f"not in formats/vocab.py: {sorted(documented - set(TERMS))}"
    )
    assert LEDGER in text


def test_the_whole_ledger_export_is_one_datafeed_of_every_claim(stories: Runtime) -> None:
    out = io.StringIO()
    report = export_format(stories.ledger, stories.database, FormatName.CLAIMREVIEW, out, BASE)
    (feed,) = expanded(json.loads(out.getvalue()))
    assert feed["@type"] == [SCHEMA + "DataFeed"]
    elements = feed[SCHEMA + "dataFeedElement"]
    assert len(elements) == report.claims == len(all_keys(stories))
    nodes = [node for element in elements for node in element[SCHEMA + "item"]]
    claims = nodes_of_type(nodes, SCHEMA + "Claim")
    assert sorted(c[SCHEMA + "identifier"][0]["@value"] for c in claims) == sorted(all_keys(stories))
    reviews = sum(len(history_of(stories, key).view["reviews"]) for key in all_keys(stories))
    assert len(nodes_of_type(nodes, SCHEMA + "ClaimReview")) == reviews > 0
