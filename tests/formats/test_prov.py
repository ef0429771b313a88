"""PROV-O: the Turtle and JSON-LD the ledger writes, parsed back by rdflib and asked in SPARQL
who spoke for whom and which acts were withdrawn, and when."""

from __future__ import annotations

import io

from rdflib import Graph

from cli.formats import FormatName, export_format
from formats import prov
from formats.history import folded
from formats.vocab import act_iri, party_iri
from service.runtime import Runtime
from tests.formats.conftest import BASE, RETRACTION_KEYS, SEED_KEY, history_of

PREFIXES = """
PREFIX prov: <http://www.w3.org/ns/prov#>
PREFIX ledger: <https://w3id.org/claims-ledger/ns#>
PREFIX schema: <https://schema.org/>
"""
ON_BEHALF = PREFIXES + """
SELECT ?speakerName ?holderName ?act WHERE {
    ?act prov:wasAttributedTo ?speaker ; prov:wasGeneratedBy ?speech .
    ?speaker prov:qualifiedDelegation ?delegation ; schema:name ?speakerName .
    ?delegation a prov:Delegation ; prov:agent ?holder ; prov:hadActivity ?speech .
    ?holder schema:name ?holderName .
}"""
INVALIDATED = PREFIXES + """
SELECT ?id ?when ?byId WHERE {
    ?act prov:wasInvalidatedBy ?speech ; prov:invalidatedAtTime ?when ; schema:identifier ?id .
    ?by prov:wasGeneratedBy ?speech ; schema:identifier ?byId .
} ORDER BY ?id"""


def parsed_turtle(text: str) -> Graph:
    return Graph().parse(data=text, format="turtle")


def test_the_seed_story_in_turtle_says_peskov_spoke_for_putin_in_that_denial_only(stories: Runtime) -> None:
    history = history_of(stories, SEED_KEY)
    graph = parsed_turtle(prov.turtle(history, BASE))
    rows = [(str(a), str(b), str(c)) for a, b, c in graph.query(ON_BEHALF)]  # type: ignore[misc]
    assert rows == [("Dmitry Peskov", "Vladimir Putin", act_iri(BASE, history.claim_id, "peskov-tass-denial"))]
    # The unqualified statement is there too, and Elton John spoke for himself.
    assert graph.query(PREFIXES + f"ASK {{ <{party_iri(BASE, 'dmitry-peskov')}> prov:actedOnBehalfOf "
                                  f"<{party_iri(BASE, 'vladimir-putin')}> }}").askAnswer
    assert not graph.query(PREFIXES + f"ASK {{ <{party_iri(BASE, 'elton-john')}> prov:actedOnBehalfOf ?x }}").askAnswer
    # Sources, relays and both time axes.
    relays = graph.query(PREFIXES + """SELECT ?outlet WHERE {
        ?work prov:wasQuotedFrom ?act ; schema:publisher/schema:name ?outlet .
        ?act schema:identifier "peskov-tass-denial" } ORDER BY ?outlet""")
    assert [str(r[0]) for r in relays] == ["TASS", "The Moscow Times"]  # type: ignore[index]
    times = graph.query(PREFIXES + """SELECT ?said ?recorded WHERE {
        ?act schema:identifier "peskov-tass-denial" ; ledger:saidAt ?said ; ledger:recordedAt ?recorded }""")
    ((said, recorded),) = list(times)  # type: ignore[misc]
    assert str(said) == "2015-09-15"
    assert said.datatype.endswith("#date") and recorded.datatype.endswith("#dateTime")


def test_the_retraction_story_says_which_acts_were_invalidated_and_when(stories: Runtime) -> None:
    graph = Graph()
    for key in RETRACTION_KEYS:
        graph += parsed_turtle(prov.turtle(history_of(stories, key), BASE))
    rows = [(str(a), b.toPython().isoformat(), str(c)) for a, b, c in graph.query(INVALIDATED)]  # type: ignore[misc]
    assert rows == [
        ("council-announces-closure", "2024-01-20T10:00:00+00:00", "council-withdraws-date"),
        # Said on a day, no time: counted from the start of that day, as the ledger's fold does.
        ("councillor-repeats-date", "2024-01-21T00:00:00+00:00", "councillor-withdraws-date"),
        ("spokesperson-promises-free-ferry", "2024-01-20T10:05:00+00:00", "spokesperson-withdraws-free-ferry"),
    ]


def test_prov_jsonld_holds_the_same_triples_as_the_turtle(stories: Runtime) -> None:
    history = history_of(stories, SEED_KEY)
    from_turtle = parsed_turtle(prov.turtle(history, BASE))
    from_jsonld = Graph().parse(data=prov.prov_jsonld(history, BASE), format="json-ld")
    assert len(from_jsonld) == len(from_turtle) > 50
    assert from_jsonld.isomorphic(from_turtle)


def test_the_whole_ledger_exports_as_one_turtle_document_with_the_prefixes_once(stories: Runtime) -> None:
    out = io.StringIO()
    report = export_format(stories.ledger, stories.database, FormatName.PROV_TURTLE, out, BASE)
    text = out.getvalue()
    assert text.count("@prefix prov:") == 1
    graph = parsed_turtle(text)
    # Each claim's graph states its parties again: the document's triples are fewer than written.
    assert 0 < len(graph) <= report.units
    per_claim = Graph()
    views, _ = stories.read.list_claims(limit=500)
    for view in views:
        per_claim += parsed_turtle(prov.turtle(history_of(stories, view["key"]), BASE))
    assert graph.isomorphic(per_claim)
    assert graph.query(INVALIDATED).bindings, "the retraction story is in the export"
    jsonld_out = io.StringIO()
    export_format(stories.ledger, stories.database, FormatName.PROV_JSONLD, jsonld_out, BASE)
    assert Graph().parse(data=jsonld_out.getvalue(), format="json-ld").isomorphic(graph)


def test_a_url_that_is_no_iri_is_written_as_a_literal_not_a_broken_document() -> None:
    odd = 'https://news.example/a<b>"c{d}'
    party = {"id": "ada", "name": "Ada"}
    events = [
        {"position": 1, "version": 1, "type": "ClaimRegistered", "recorded_at": "2024-01-01T00:00:00Z",
         "statement": "A claim", "key": "a-claim", "language": "en", "subjects": []},
        {"position": 2, "version": 2, "type": "Asserted", "recorded_at": "2024-01-01T00:01:00Z", "act_id": "a1",
         "party": party, "said_at": None, "source": {"url": odd, "outlet": None, "title": None, "published_at": None},
         "reported_via": []},
    ]
    history = folded("8f1f3c56-3c4b-5a5e-9b1f-0e6f1f3c563c", events)
    for graph in (parsed_turtle(prov.turtle(history, BASE)),
                  Graph().parse(data=prov.prov_jsonld(history, BASE), format="json-ld")):
        urls = [str(row[0]) for row in graph.query(PREFIXES + "SELECT ?url WHERE { ?act prov:hadPrimarySource/schema:url ?url }")]  # type: ignore[index]
        assert urls == [odd]
