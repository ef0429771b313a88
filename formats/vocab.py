"""The vocabularies the ledger's formats speak: schema.org, W3C PROV-O, and the ledger's own.

schema.org says what a fact-checker publishes (a `Claim`, its `ClaimReview`s); PROV-O says
who generated what, on whose behalf, from which source; neither says that someone *denied*
a claim, that an act was *retracted* or *voided*, or when the ledger *recorded* it. Those
are said with the ledger's own terms, under one stable namespace (`LEDGER`), each documented
in docs/formats.md ("The ledger's vocabulary"). The namespace is a name, never fetched:
every JSON-LD document carries its context inline, so it expands offline.

The IRIs of the ledger's own things (claims, acts, parties) are made here too, from a base
URL: the server's own when it answers over HTTP, `--base-url` for an export.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

SCHEMA = "https://schema.org/"
PROV = "http://www.w3.org/ns/prov#"
XSD = "http://www.w3.org/2001/XMLSchema#"
# The ledger's own terms. Never change it: documents already published use it.
LEDGER = "https://w3id.org/claims-ledger/ns#"

DEFAULT_BASE = "urn:claims-ledger:local"  # for exports given no --base-url
# What an IRI may not hold (RFC 3987; Turtle's IRIREF): a URL the ledger took that holds one of
# these is written as a literal (xsd:anyURI), not a node.
NOT_IN_IRI = re.compile(r'[\x00-\x20<>"{}|^`\\]')

# Classes of the ledger's acts, by event type, and back.
ACT_CLASS = {
    "Asserted": "Assertion",
    "Denied": "Denial",
    "Retracted": "Retraction",
    "ActVoided": "Void",
    "Reviewed": "Review",
}
TYPE_OF_CLASS = {cls: event_type for event_type, cls in ACT_CLASS.items()}
OP_OF_CLASS = {"Assertion": "assert", "Denial": "deny", "Retraction": "retract", "Void": "void", "Review": "review"}

# Every term of the ledger's vocabulary, with what it means: docs/formats.md lists the same
# (tests/formats check the two agree).
TERMS: dict[str, str] = {
    "Claim": "a claim as the ledger holds it (also a schema:Claim in JSON-LD, a prov:Entity in PROV-O)",
    "Party": "a party of the ledger: the ledger does not record whether it is a person or an organisation",
    "Assertion": "an act by which a party said the claim is true",
    "Denial": "an act by which a party said the claim is false",
    "Retraction": "an act withdrawing an earlier assertion, denial or review",
    "Void": "a correction by the ledger's staff: the voided act was recorded in error, never said",
    "Review": "a fact-checker's verdict on the claim, as recorded (standing ones are also schema:ClaimReview)",
    "act": "claim → each of its acts, in version order (voided and retracted ones included)",
    "claim": "act → the claim it is about",
    "status": "the claim's status: unattested, asserted, denied, disputed or retracted",
    "assertedBy": "claim → a holder whose stance is to assert it (the same parties as schema:author)",
    "deniedBy": "claim → a holder whose stance is to deny it",
    "withdrawnBy": "claim → a holder who retracted every act of theirs on it",
    "party": "act → the party who said it (who spoke)",
    "onBehalfOf": "act → the holder of its stance, when another party spoke for them",
    "saidAt": "when the party said it: a date or an RFC 3339 date-time (the said axis)",
    "recordedAt": "when the ledger recorded it (the recorded axis)",
    "registeredAt": "when the ledger registered the claim",
    "version": "the act's version: its place in the claim's history (the claim's, on a claim)",
    "source": "act → where it was said (a schema:CreativeWork)",
    "reportedVia": "act → a work that relayed it (a schema:CreativeWork)",
    "quote": "the words said, as quoted",
    "note": "the recorder's note on the act",
    "reason": "why an act was retracted or voided",
    "retracts": "retraction → the act it withdraws",
    "retractedBy": "act → the retraction that withdrew it",
    "voids": "void → the act it voids",
    "voidedBy": "act → the void that struck it",
    "eventHash": "the SHA-256 hash of the act's event in the claim's hash chain",
}

Json = dict[str, Any]


def claim_iri(base: str, claim_id: str) -> str:
    return f"{base.rstrip('/')}/v1/claims/{claim_id}"


def act_iri(base: str, claim_id: str, act_id: str) -> str:
    return f"{claim_iri(base, claim_id)}/acts/{quote(act_id, safe='')}"


def party_iri(base: str, party_id: str) -> str:
    return f"{base.rstrip('/')}/v1/parties/{quote(party_id, safe='')}"


def jsonld_context() -> Json:
    """The inline context of every JSON-LD document the ledger writes (schema.org by default)."""
    return {"@vocab": SCHEMA, "ledger": LEDGER, "prov": PROV, "xsd": XSD}
