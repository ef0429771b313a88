"""The auditor's witness policy (`claims audit --witness VKEY... --quorum K`): the keys and the
quorum it accepts, and what it says of a checkpoint with too few valid cosignatures."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.remote import AuditReport, WitnessPolicy
from domain.errors import InvalidInput
from domain.note import COSIGNATURE_V1, Signature, Signer
from tests.witness.conftest import MemoryLog

WITNESSES = [Signer(f"quorum.test/w{i}", Ed25519PrivateKey.generate(), COSIGNATURE_V1) for i in (1, 2, 3)]
KEYS = [str(w.verifier) for w in WITNESSES]


@pytest.mark.parametrize(
    ("keys", "quorum", "message"),
    [
        ([], 2, "--quorum needs the witnesses' keys"),
        (KEYS[:2], 3, "--quorum 3 cannot be met by 2 distinct witness key(s)"),
        ([KEYS[0], KEYS[0]], 2, "--quorum 2 cannot be met by 1 distinct witness key(s)"),
        (KEYS[:2], 0, "--quorum 0 cannot be met"),
        (["not-a-key"], None, "--witness 'not-a-key'"),
        ([str(MemoryLog.new("quorum.test/log").signer.verifier)], None, "is a key of algorithm 0x01"),
    ],
)
def test_keys_and_quorums_that_cannot_work_are_refused(keys: list[str], quorum: int | None, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        WitnessPolicy.parse(keys, quorum)


def test_without_witnesses_there_is_no_policy_and_the_default_quorum_is_all() -> None:
    assert WitnessPolicy.parse([], None) is None
    policy = WitnessPolicy.parse(KEYS, None)
    assert policy is not None and policy.quorum == 3 and [str(w) for w in policy.witnesses] == KEYS


def test_a_quorum_counts_valid_cosignatures_of_the_given_keys_only() -> None:
    log = MemoryLog.new("quorum.test/log", 6)
    note = log.note(6)
    now = int(time.time())
    good = [w.sign(note.text, timestamp=now) for w in WITNESSES[:2]]
    # w3's line over another tree: its name and key ID, a signature that does not verify here.
    forged = WITNESSES[2].sign(log.note(5).text, timestamp=now)
    stranger = Signer("quorum.test/stranger", Ed25519PrivateKey.generate(), COSIGNATURE_V1).sign(note.text, now)
    cosigned = note.with_signatures(*good, forged, stranger)
    policy = WitnessPolicy.parse(KEYS, 2)
    assert policy is not None

    report = AuditReport(url="http://ledger.test")
    policy.check(cosigned, report)
    assert report.ok and report.witnessed == (
        "witnesses: 2 of 3 cosigned this checkpoint (quorum.test/w1, quorum.test/w2), 2 required")

    strict = WitnessPolicy.parse(KEYS, 3)
    assert strict is not None
    report = AuditReport(url="http://ledger.test")
    strict.check(cosigned, report)
    assert not report.ok
    [problem] = report.problems
    assert "valid cosignatures of 2 of the witnesses given, fewer than the quorum of 3" in problem
    assert "missing: quorum.test/w3 (its cosignature does not verify)" in problem

    report = AuditReport(url="http://ledger.test")
    strict.check(note.with_signatures(Signature(forged.name, forged.key_id, forged.payload)), report)
    assert "missing: quorum.test/w1 (no cosignature); quorum.test/w2 (no cosignature); quorum.test/w3 (its" \
        in report.problems[0]
