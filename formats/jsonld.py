"""A claim as schema.org JSON-LD: a `Claim` and one `ClaimReview` per standing review.

What schema.org can say is said with schema.org's terms (the context's default vocabulary):
the claim's text, its authors (the holders asserting it), where it appeared, when it was
first said, and the fact-checkers' reviews, each with the fields Google asks of a
ClaimReview. What it cannot (denials, retractions, voids, who spoke for whom, when the
ledger recorded each act) is said with the ledger's own terms (`ledger:`, formats/vocab.py),
on the claim's `ledger:act` list: every act of its history, from which the claim's whole
history can be recorded again (formats/claimreview_in.py reads it back).

The mapping, term by term, is in docs/formats.md.
"""

from __future__ import annotations

from typing import Any

from domain.fold import ActState
from formats.history import ClaimHistory
from formats.vocab import ACT_CLASS, act_iri, claim_iri, jsonld_context, party_iri

Json = dict[str, Any]


def claim_document(history: ClaimHistory, base: str) -> Json:
    """The whole JSON-LD document of one claim: its context and graph."""
    return {"@context": jsonld_context(), "@graph": claim_graph(history, base)}


def claim_graph(history: ClaimHistory, base: str) -> list[Json]:
    """The claim's nodes: the Claim first, then its ClaimReviews."""
    claim = claim_node(history, base)
    return [claim, *(review_node(history, base, review, claim) for review in history.view.get("reviews", []))]


def party_node(base: str, party: Json, kind: str = "Person") -> Json:
    """A party of the ledger. It does not record whether a party is a person or an organisation:
    claim parties are typed Person, reviewers Organization (docs/formats.md), both ledger:Party."""
    return {
        "@id": party_iri(base, party["id"]), "@type": [kind, "ledger:Party"],
        "identifier": party["id"], "name": party["name"],
    }


def creative_work(source: Json, author: Json | None = None, said_at: str | None = None) -> Json:
    """A source or a relay as a CreativeWork: url, name (title), publisher (outlet), datePublished."""
    work: Json = {"@type": "CreativeWork"}
    if source.get("url"):
        work["url"] = source["url"]
    if source.get("title"):
        work["name"] = source["title"]
    if source.get("outlet"):
        work["publisher"] = {"@type": "Organization", "name": source["outlet"]}
    published = source.get("published_at") or said_at
    if published:
        work["datePublished"] = published
    if author is not None:
        work["author"] = author
    return work


def claim_node(history: ClaimHistory, base: str) -> Json:
    view = history.view
    claim_id = history.claim_id
    node: Json = {
        "@id": claim_iri(base, claim_id), "@type": ["Claim", "ledger:Claim"],
        "identifier": view["key"], "text": view["statement"], "inLanguage": view["language"],
    }
    if view["subjects"]:
        node["keywords"] = list(view["subjects"])
    stances = view["stances"]
    asserting = [s["holder"] for s in stances if s["stance"] == "asserts"]
    if asserting:
        node["author"] = [party_node(base, holder) for holder in asserting]
    # Where the claim appeared: the sources and relays of every assertion said (voided ones
    # never were), earliest said first.
    assertions = sorted(
        (e for e in history.act_events() if e["type"] == "Asserted" and not _voided(history, e)),
        key=lambda e: history.acts[e["act_id"]].order,
    )
    appearances = []
    for event in assertions:
        speaker = party_node(base, event["party"])
        if event.get("source"):
            appearances.append(creative_work(event["source"], speaker, event.get("said_at")))
        appearances.extend(creative_work(relay) for relay in event.get("reported_via") or [])
    if appearances:
        node["appearance"] = appearances
        node["firstAppearance"] = appearances[0]
    said = next((e["said_at"] for e in assertions if e.get("said_at")), None)  # in said order
    if said is not None:
        node["datePublished"] = said
    node["ledger:status"] = view["status"]
    for term, stance in (("ledger:assertedBy", "asserts"), ("ledger:deniedBy", "denies"),
                         ("ledger:withdrawnBy", "withdrawn")):
        holders = [party_node(base, s["holder"]) for s in stances if s["stance"] == stance]
        if holders:
            node[term] = holders
    node["ledger:version"] = view["version"]
    node["ledger:registeredAt"] = view["registered_at"]
    node["ledger:act"] = [act_node(history, base, event) for event in history.act_events()]
    return node


def _voided(history: ClaimHistory, event: Json) -> bool:
    act = history.acts.get(event.get("act_id") or "")
    return act is not None and act.voided_by is not None


def act_node(history: ClaimHistory, base: str, event: Json) -> Json:
    """One act of the history with the ledger's terms (reviews with schema.org's too)."""
    claim_id = history.claim_id
    act_id = event["act_id"]
    node: Json = {
        "@id": act_iri(base, claim_id, act_id), "@type": f"ledger:{ACT_CLASS.get(event['type'], 'Act')}",
        "identifier": act_id, "ledger:version": event["version"], "ledger:recordedAt": event["recorded_at"],
    }
    if event.get("party"):
        node["ledger:party"] = party_node(base, event["party"])
    if event.get("on_behalf_of"):
        node["ledger:onBehalfOf"] = party_node(base, event["on_behalf_of"])
    if event.get("said_at"):
        node["ledger:saidAt"] = event["said_at"]
    if event.get("source"):
        node["ledger:source"] = creative_work(event["source"])
    if event.get("reported_via"):
        node["ledger:reportedVia"] = [creative_work(relay) for relay in event["reported_via"]]
    for name in ("quote", "note", "reason"):
        if event.get(name):
            node[f"ledger:{name}"] = event[name]
    if event.get("retracts"):
        node["ledger:retracts"] = {"@id": act_iri(base, claim_id, event["retracts"])}
    if event.get("voids"):
        node["ledger:voids"] = {"@id": act_iri(base, claim_id, event["voids"])}
    if event["type"] == "Reviewed":
        node.update(_review_fields(base, event))
    act: ActState | None = history.acts.get(act_id)
    if act is not None and act.retracted_by:
        node["ledger:retractedBy"] = {"@id": act_iri(base, claim_id, act.retracted_by)}
    if act is not None and act.voided_by:
        node["ledger:voidedBy"] = {"@id": act_iri(base, claim_id, act.voided_by)}
    if event.get("hash"):
        node["ledger:eventHash"] = event["hash"]
    return node


def rating_node(rating: Json) -> Json:
    node: Json = {"@type": "Rating", "alternateName": rating["text"]}
    for name, term in (("value", "ratingValue"), ("best", "bestRating"), ("worst", "worstRating")):
        if rating.get(name) is not None:
            node[term] = rating[name]
    return node


def _review_fields(base: str, review: Json) -> Json:
    """The schema.org fields of a review, from a review of the view or a Reviewed event."""
    fields: Json = {
        "author": party_node(base, review["reviewer"], "Organization"),
        "reviewRating": rating_node(review["rating"]),
    }
    if review.get("url"):
        fields["url"] = review["url"]
    if review.get("reviewed_at"):
        fields["datePublished"] = review["reviewed_at"]
    if review.get("summary"):
        fields["reviewBody"] = review["summary"]
    return fields


def review_node(history: ClaimHistory, base: str, review: Json, claim: Json) -> Json:
    """A standing review as a ClaimReview, with the Claim it reviews embedded (Google reads
    itemReviewed's author and appearance there)."""
    item = {name: value for name, value in claim.items() if not name.startswith("ledger:")}
    node: Json = {
        "@id": act_iri(base, history.claim_id, review["act_id"]), "@type": ["ClaimReview", "ledger:Review"],
        "identifier": review["act_id"], "claimReviewed": history.view["statement"], "itemReviewed": item,
    }
    node.update(_review_fields(base, review))
    if review.get("recorded_at"):
        node["ledger:recordedAt"] = review["recorded_at"]
    return node
