"""`claims witness serve` speaking C2SP tlog-witness over real HTTP: each answer the protocol fixes.

One witness process per module follows a dozen in-memory logs; each test takes logs of its
own, so the witness's state for one test's origins is that test's alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.note import Note, Signer, Verifier
from tests.witness.conftest import MemoryLog, WitnessProcess, cosignature_of, run_witness

LOGS = 16
_next = itertools.count()


@pytest.fixture(scope="module")
def logs() -> list[MemoryLog]:
    return [MemoryLog.new(f"log.test/{i}") for i in range(LOGS)]


@pytest.fixture(scope="module")
def witness(tmp_path_factory: pytest.TempPathFactory, logs: list[MemoryLog]) -> Iterator[WitnessProcess]:
    yield from run_witness(tmp_path_factory.mktemp("witness"), logs)


@pytest.fixture
def log(logs: list[MemoryLog]) -> MemoryLog:
    """A log of this test's own (the witness has never seen its origin)."""
    return logs[next(_next)]


def refused(response_status: int, code: str, response: httpx.Response) -> None:
    """A problem document of the status and code, saying what is wrong."""
    assert response.status_code == response_status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith(code) and problem["status"] == response_status and problem["detail"], problem


def test_first_checkpoint_then_growth_are_cosigned_with_valid_cosignatures(
    witness: WitnessProcess, log: MemoryLog
) -> None:
    verifier = witness.verifier
    log.grow(5)
    first = cosignature_of(witness.post(log.body(0, 5)))
    assert Note(log.note(5).text, (first,)).verified_by([verifier]) == [verifier]
    assert first.name == witness.name and first.timestamp is not None

    log.grow(11)
    grown = witness.post(log.body(5, 16))
    cosigned = log.note(16).with_signatures(cosignature_of(grown))
    assert cosigned.verified_by([verifier, log.signer.verifier]) == [verifier, log.signer.verifier]
    # What another reader does with it: the cosignature verifies only on the tree it was made for.
    assert Note(log.note(5).text, (cosignature_of(grown),)).verified_by([verifier]) == []

    # The same tree again: a fresh cosignature of it (a log that restarted asks this way).
    again = cosignature_of(witness.post(log.body(16, 16)))
    assert log.note(16).with_signatures(again).verified_by([verifier]) == [verifier]


def test_a_stale_old_size_is_answered_409_with_the_witness_size(witness: WitnessProcess, log: MemoryLog) -> None:
    log.grow(9)
    cosignature_of(witness.post(log.body(0, 7)))
    for old in (0, 3, 8):
        response = witness.post(log.body(old, 9))
        assert response.status_code == 409, response.text
        assert response.headers["content-type"] == "text/x.tlog.size"
        assert response.text == "7\n"
    cosignature_of(witness.post(log.body(7, 9)))  # what a log does with the answer


def test_a_rollback_is_refused_and_changes_nothing(witness: WitnessProcess, log: MemoryLog) -> None:
    log.grow(12)
    cosignature_of(witness.post(log.body(0, 12)))
    refused(400, "old-size-past-checkpoint", witness.post(log.body(12, 8, proof=[])))
    response = witness.post(log.body(0, 8))  # a smaller tree from the bottom: not what it cosigned last
    assert (response.status_code, response.text) == (409, "12\n")


def test_a_bad_consistency_proof_is_422_and_changes_nothing(witness: WitnessProcess, log: MemoryLog) -> None:
    log.grow(21)
    cosignature_of(witness.post(log.body(0, 6)))
    right = log.proof(6, 21)
    for proof in ([], right[:-1], [*right, right[0]], [right[1], right[0], *right[2:]], [bytes(32)] * len(right)):
        refused(422, "bad-proof", witness.post(log.body(6, 21, proof=proof)))
    refused(422, "bad-proof", witness.post(log.body(6, 6, proof=[bytes(32)])))
    assert witness.post(log.body(0, 21)).text == "6\n"
    cosignature_of(witness.post(log.body(6, 21)))


def test_a_proof_that_the_old_tree_is_not_a_prefix_is_refused(witness: WitnessProcess, log: MemoryLog) -> None:
    """A log that rewrote its history after a checkpoint was cosigned: its own proofs do not
    lead from the tree the witness cosigned."""
    log.grow(10)
    cosignature_of(witness.post(log.body(0, 10)))
    rewritten = log.fork(at=7, size=14)
    refused(422, "bad-proof", witness.post(rewritten.body(10, 14)))
    assert witness.post(log.body(0, 14)).text == "10\n"


def test_a_fork_at_the_same_size_is_409(witness: WitnessProcess, log: MemoryLog) -> None:
    log.grow(8)
    cosignature_of(witness.post(log.body(0, 8)))
    other = log.fork(at=5, size=8)
    response = witness.post(other.body(8, 8))
    refused(409, "fork", response)
    assert "two different trees" in response.json()["detail"]


def test_a_checkpoint_without_a_known_log_key_is_403(witness: WitnessProcess, log: MemoryLog) -> None:
    log.grow(3)
    impostor = Signer(log.origin, Ed25519PrivateKey.generate())
    refused(403, "unknown-log-key", witness.post(log.body(0, 3, signer=impostor)))
    # Signed by the right key but a line of another name: ignored, still no known signature.
    other_name = Signer("someone.else/log", Ed25519PrivateKey.generate())
    text = log.note(3).text
    refused(403, "unknown-log-key", witness.post(f"old 0\n\n{Note(text, (other_name.sign(text),))}".encode()))
    assert cosignature_of(witness.post(log.body(0, 3)))  # the state never moved


def test_an_unknown_origin_is_404(witness: WitnessProcess) -> None:
    stranger = MemoryLog.new("stranger.test/log", 4)
    refused(404, "unknown-log", witness.post(stranger.body(0, 4)))


# (case, the body's head, whether the log's signed checkpoint follows it)
MALFORMED = [
    ("no blank line", b"old 0\n", False),
    ("old with a leading zero", b"old 03\n\n", True),
    ("old negative", b"old -1\n\n", True),
    ("not old", b"new 3\n\n", True),
    ("proof line not base64", b"old 3\nnot base64!\n\n", True),
    ("proof line of 31 bytes", b"old 3\n" + b"A" * 40 + b"=\n\n", True),
    ("not UTF-8", b"old 0\n\n\xff\xfe", False),
]


@pytest.mark.parametrize(("case", "head", "with_note"), MALFORMED, ids=[case for case, _, _ in MALFORMED])
def test_malformed_bodies_are_400_naming_the_fault(witness: WitnessProcess, log: MemoryLog, case: str,
                                                    head: bytes, with_note: bool) -> None:
    log.grow(3)
    body = head + str(log.note(3)).encode() if with_note else head
    refused(400, "malformed-submission", witness.post(body))
    assert cosignature_of(witness.post(log.body(0, 3)))  # nothing was recorded


def test_malformed_checkpoints_and_oversized_bodies_are_refused(witness: WitnessProcess, log: MemoryLog) -> None:
    log.grow(70)
    cosignature_of(witness.post(log.body(0, 2)))
    unsigned = log.note(70).text
    refused(400, "malformed-checkpoint", witness.post(f"old 2\n\n{unsigned}".encode()))
    bad_size = Note("log.test/x\n007\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", (log.signer.sign("x\n"),))
    refused(400, "malformed-checkpoint", witness.post(f"old 2\n\n{bad_size}".encode()))
    too_long = [bytes(32)] * 64
    refused(400, "malformed-submission", witness.post(log.body(2, 70, proof=too_long)))
    response = witness.post(b"old 0\n\n" + b"x" * (65 * 1024))
    refused(413, "body-too-large", response)
    assert witness.post(log.body(0, 70)).text == "2\n"


def test_other_paths_and_methods_are_problem_documents(witness: WitnessProcess) -> None:
    refused(405, "method-not-allowed", witness.http.get(witness.url + "/add-checkpoint"))
    refused(404, "not-found", witness.http.post(witness.url + "/checkpoint", content=b"x"))
    about = witness.http.get(witness.url + "/")
    assert about.text.splitlines()[0] == f"tlog-witness {witness.verifier}"
    health = witness.http.get(witness.url + "/healthz").json()
    assert health["status"] == "ok" and health["witness"] == str(witness.verifier)
    assert health["logs"] == witness.logs


def test_the_key_command_makes_a_private_key_once_and_prints_a_cosignature_vkey(tmp_path: Path) -> None:
    witness = WitnessProcess(tmp_path, [])
    first = witness.verifier
    assert (witness.key.stat().st_mode & 0o777) == 0o600
    assert first.alg == 0x04 and first.name == witness.name
    # Again, with the default name: the same key, loaded and not made anew.
    default = witness.command("key", "--key", str(witness.key))
    assert default.returncode == 0, default.stderr
    again = Verifier.parse(default.stdout.strip())
    assert again.public_key == first.public_key and again.name.startswith("claims-witness/")
    bad = witness.command("serve", "--key", str(witness.key), "--log", "not-a-key")
    assert bad.returncode == 2 and "--log 'not-a-key'" in bad.stderr
