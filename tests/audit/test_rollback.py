"""audit/rollback.py on in-memory logs: which trees the ledger signs after the largest one it
signed, what it refuses, and the signed statement that lets it resume."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from audit.rollback import RolledBack, TreeGuard, kept_path
from audit.signing import CheckpointSigner
from domain.errors import InvalidInput
from domain.merkle import consistency_path, leaf_hash, root_of
from domain.note import Checkpoint, Note


class Log:
    """A log the guard reads its proofs from; `leaves` may be rewritten like a restored database."""

    def __init__(self, count: int, tag: str = "a") -> None:
        self.leaves = [leaf_hash(f"{tag}{i}".encode()) for i in range(count)]

    def tree(self, size: int | None = None) -> tuple[int, bytes]:
        size = len(self.leaves) if size is None else size
        return size, root_of(self.leaves[:size])

    def proof(self, first: int, second: int) -> list[bytes]:
        if second > len(self.leaves):
            raise InvalidInput(f"second_size {second} is beyond the log", "second_size")
        return consistency_path(self.leaves[:second], first)


def guard(tmp_path: Path, log: Log, ledger: str = "ledger-1") -> TreeGuard:
    return TreeGuard(CheckpointSigner(tmp_path / "key.pem", "rollback.test/log"), ledger, log.proof)


def test_trees_that_extend_the_largest_signed_one_are_signed_and_kept(tmp_path: Path) -> None:
    log = Log(12)
    signing = guard(tmp_path, log)
    for size in (3, 7, 12):
        note = signing.sign(*log.tree(size))
        assert Checkpoint.parse(note.text).size == size
    kept = signing.kept.largest("ledger-1")
    assert kept is not None and kept.size == 12
    assert signing.sign(*log.tree(7)).text  # an earlier tree of the same log: a prefix of the kept one
    assert kept_path(tmp_path / "key.pem").stat().st_mode & 0o777 == 0o600
    # Another ledger signed with the same key keeps its own tree.
    other = Log(2, "b")
    assert guard(tmp_path, other, "ledger-2").sign(*other.tree()).text


@pytest.mark.parametrize(
    ("rewrite", "why"),
    [
        (lambda log: log.leaves.__delitem__(slice(8, None)), "the log holds 8 events, not the tree of 12"),
        (lambda log: log.leaves.__setitem__(11, leaf_hash(b"other")), "has another root than the one the ledger"),
        (lambda log: log.leaves.__setitem__(slice(8, None), [leaf_hash(f"c{i}".encode()) for i in range(9)]),
         "the tree of 17 events does not extend the tree of 12"),
    ],
)
def test_a_rewound_or_rewritten_log_is_refused_until_the_rollback_is_acknowledged(
    tmp_path: Path, rewrite: Callable[[Log], None], why: str,
) -> None:
    log = Log(12)
    signing = guard(tmp_path, log)
    signing.sign(*log.tree())
    rewrite(log)
    restarted = guard(tmp_path, log)  # a new process: it knows only the file beside the key
    assert restarted.check(*log.tree()) is not None and why in (restarted.check(*log.tree()) or "")
    with pytest.raises(RolledBack, match=why):
        restarted.sign(*log.tree())
    assert restarted.problem is not None and "claims recover --acknowledge-rollback" in restarted.problem

    statement = restarted.acknowledge(*log.tree())
    assert statement is not None
    assert (statement["lost"]["size"], statement["resumed"]["size"]) == (12, len(log.leaves))
    note = Note.parse(statement["note"])
    keyring = restarted.signer.keyring()
    assert note.verified_by([keyring.verifier]) == [keyring.verifier]
    assert note.text.splitlines()[:2] == ["rollback.test/log", "rollback statement"]
    assert restarted.sign(*log.tree()).text and restarted.problem is None
    assert guard(tmp_path, log).statements() == [statement]
    assert restarted.acknowledge(*log.tree()) is None  # nothing more to acknowledge
