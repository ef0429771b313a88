"""The hash-chain rules, written once in audit.chain: each broken rule is named by claim and version,
and `claims verify` and `claims audit` name the same broken rules in the same tampered history."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from audit.chain import Break, ChainCheck
from audit.verify import VerifyReport, verify_store
from domain.canonical import GENESIS_HASH, canonical_bytes, event_body
from domain.values import claim_id_for_key
from service.runtime import Runtime
from tests.audit.test_audit import seed, start_server
from tests.audit.test_verify import changed_quote, execute_on_store, rehash, rewrite_state, stored_id
from tests.conftest import new_database_url
from tests.story import CLAIM_KEY

CLAIM = str(claim_id_for_key(CLAIM_KEY))
OTHER = str(claim_id_for_key("elton-john-met-putin"))


def hashed(claim_id: str, version: int, kind: str, prev_hash: str, data: dict[str, Any]) -> dict[str, Any]:
    """A feed item's fields: its body and the hash the ledger gives it."""
    body = event_body(claim_id=claim_id, version=version, type=kind, recorded_at=f"2026-01-01T00:00:0{version}Z",
                      prev_hash=prev_hash, data=data)
    return {"body": body, "hash": hashlib.sha256(canonical_bytes(body)).hexdigest()}


def history(
    claim_id: str = CLAIM, kinds: tuple[str, ...] = ("ClaimRegistered", "Asserted", "Denied"),
) -> list[dict[str, Any]]:
    """A claim's events as the ledger records them: versions 1, 2, ... each chained to the last."""
    events: list[dict[str, Any]] = []
    for version, kind in enumerate(kinds, start=1):
        data = {"key": CLAIM_KEY, "statement": "s"} if kind == "ClaimRegistered" else {"act_id": f"act-{version}"}
        events.append(hashed(claim_id, version, kind, events[-1]["hash"] if events else GENESIS_HASH, data))
    return events


def breaks(events: list[dict[str, Any]], check: ChainCheck | None = None) -> list[Break]:
    """What the checker finds in these events, each body's hash recomputed as an auditor does."""
    if check is None:
        check = ChainCheck()
    found: list[Break] = []
    for event in events:
        body = event["body"]
        digest = hashlib.sha256(canonical_bytes(body)).hexdigest()
        found.extend(check.take(body["claim_id"], body["version"], body["type"], body["prev_hash"], event["hash"],
                                digest))
    return found


def where(found: list[Break]) -> list[tuple[str, str, int]]:
    return [(b.rule, b.claim_id, b.version) for b in found]


# -- The rules, one by one ------------------------------------------------------------------------


def test_interleaved_claims_that_keep_every_rule_break_none() -> None:
    first, second = history(CLAIM), history(OTHER, ("ClaimRegistered", "Retracted", "ActVoided"))
    check = ChainCheck()
    assert breaks([first[0], second[0], first[1], second[1], second[2], first[2]], check) == []
    assert check.claims == 2


def test_a_body_changed_after_it_was_hashed_breaks_its_own_hash_and_nothing_after_it() -> None:
    events = history()
    events[1]["body"]["data"]["act_id"] = "forged"
    [broken] = breaks(events)
    assert where([broken]) == [("event-hash", CLAIM, 2)]
    assert f"but it carries the hash {events[1]['hash']}" in broken.detail


def test_a_rehashed_change_breaks_the_chain_at_the_next_version() -> None:
    events = history()
    events[1] = hashed(CLAIM, 2, "Asserted", events[0]["hash"], {"act_id": "forged"})
    [broken] = breaks(events)
    assert where([broken]) == [("chain", CLAIM, 3)]
    assert broken.detail == (f"prev_hash is {events[2]['body']['prev_hash']} but must be {events[1]['hash']}, "
                             "the hash of version 2")


def test_the_prev_hash_of_version_1_is_64_zeros() -> None:
    events = history()
    events[0] = hashed(CLAIM, 1, "ClaimRegistered", "1" * 64, {"key": CLAIM_KEY})
    found = breaks(events[:1])
    assert where(found) == [("chain", CLAIM, 1)]
    assert found[0].detail.endswith("must be 64 zeros (it is the claim's first event)")


@pytest.mark.parametrize(("kept", "version", "detail"), [
    ((1, 3), 3, "version 3 follows version 1 in the log; a claim's versions run 1, 2, 3, ..."),
    ((2, 3), 2, "the claim's first event in the log is version 2, not 1"),
    ((1, 2, 2), 2, "version 2 follows version 2 in the log; a claim's versions run 1, 2, 3, ..."),
])
def test_a_claims_versions_run_from_1_without_gaps_or_repeats(kept: tuple[int, ...], version: int, detail: str) -> None:
    events = history()
    found = breaks([events[v - 1] for v in kept])
    assert [(b.rule, b.version, b.detail) for b in found] == [("version", version, detail)]


def test_version_1_is_the_registration_and_no_later_version_is() -> None:
    asserted_first = history(kinds=("Asserted", "ClaimRegistered"))
    assert [(b.rule, b.version, b.detail) for b in breaks(asserted_first)] == [
        ("type", 1, "a claim's first event is ClaimRegistered, not Asserted"),
        ("type", 2, "ClaimRegistered after the claim's first event: a claim is registered once"),
    ]


def test_a_type_that_is_none_of_the_claim_events_is_named() -> None:
    found = breaks(history(kinds=("ClaimRegistered", "Endorsed")))
    assert where(found) == [("type", CLAIM, 2)]
    assert "'Endorsed' is none of the claim events (ActVoided, Asserted, ClaimRegistered, Denied, Retracted, Reviewed)" in (
        found[0].detail
    )


@pytest.mark.parametrize("claim_id", [CLAIM.upper(), CLAIM.replace("-", ""), "putin-phoned-elton-john"])
def test_a_claim_id_is_a_uuid_written_lowercase_with_hyphens(claim_id: str) -> None:
    found = breaks(history(claim_id))
    assert where(found) == [("claim-id", claim_id, 1)]
    assert "is not a UUID written lowercase with hyphens" in found[0].detail


def test_every_rule_an_event_breaks_is_named() -> None:
    forged = hashed(CLAIM, 3, "Endorsed", GENESIS_HASH, {})
    forged["hash"] = "0" * 64
    assert [b.rule for b in breaks([*history()[:1], forged])] == ["event-hash", "version", "type"]


# -- Both verifiers on the same tampered store -----------------------------------------------------


def assertion_before_registration(rt: Runtime) -> None:
    """The claim's first two events trade places, each rehashed and chained as the ledger would."""
    where = " WHERE originator_id = ? AND originator_version = ?"
    claim = stored_id(rt, CLAIM_KEY)
    registration, assertion = (
        execute_on_store(rt, "SELECT topic, state FROM {events}" + where, (claim, version))[0] for version in (1, 2)
    )
    prev_hash = GENESIS_HASH
    for version, kind, (topic, state) in ((1, "Asserted", assertion), (2, "ClaimRegistered", registration)):
        fields = orjson.loads(bytes(state))
        fields["prev_hash"] = prev_hash
        rehash(fields, CLAIM, version, kind)
        prev_hash = fields["hash"]
        execute_on_store(rt, "UPDATE {events} SET topic = ?, state = ?" + where,
                         (topic, orjson.dumps(fields), claim, version))


def registration_off_genesis(rt: Runtime) -> None:
    def change(fields: dict[str, Any]) -> None:
        fields["prev_hash"] = "f" * 64
        rehash(fields, CLAIM, 1, "ClaimRegistered")

    rewrite_state(rt, CLAIM_KEY, 1, change)


def rehashed_denial(rt: Runtime) -> None:
    rewrite_state(rt, CLAIM_KEY, 3, lambda f: (changed_quote(f), rehash(f, CLAIM, 3, "Denied")))


def deleted_assertion(rt: Runtime) -> None:
    execute_on_store(rt, "DELETE FROM {events} WHERE originator_id = ? AND originator_version = 2",
                     (stored_id(rt, CLAIM_KEY),))


TAMPERINGS: dict[str, tuple[Callable[[Runtime], None], list[tuple[str, int]]]] = {
    "changed-denial": (lambda rt: rewrite_state(rt, CLAIM_KEY, 3, changed_quote), [("event-hash", 3)]),
    "rehashed-denial": (rehashed_denial, [("chain", 4)]),
    "registration-off-genesis": (registration_off_genesis, [("chain", 1), ("chain", 2)]),
    "deleted-assertion": (deleted_assertion, [("version", 3)]),
    "assertion-before-registration": (assertion_before_registration, [("type", 1), ("type", 2), ("chain", 3)]),
}


def as_audit_reports(report: VerifyReport) -> list[str]:
    """`claims verify`'s chain findings in the words `claims audit` reports them."""
    return [f"position {f.position} (claim {f.claim_id} version {f.version}): {f.detail}" for f in report.findings]


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_verify_and_audit_name_the_same_broken_rules_in_the_same_tampered_history(
    tampering: str, tmp_path: Path
) -> None:
    tamper, expected = TAMPERINGS[tampering]
    url = new_database_url("sqlite", tmp_path)
    seed(url)
    rt = Runtime.open(url)
    try:
        tamper(rt)
        rt.engine.catch_up()  # the projections, and so the feed, hold the tampered history
        verified = verify_store(rt)
    finally:
        rt.close()
    assert [(f.check, f.claim_id, f.version) for f in verified.findings] == [
        (rule, CLAIM, version) for rule, version in expected
    ], verified.lines()
    server = start_server(url, tmp_path)
    try:
        audited = server.audit(tmp_path / "checkpoint.json")
    finally:
        server.stop()
    assert audited.problems == as_audit_reports(verified)
