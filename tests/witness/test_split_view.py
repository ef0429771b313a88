"""The attack witnesses exist for: a ledger rewound and rewritten after its tree was cosigned.

The ledger's SQLite file is copied, the log grows and both witnesses cosign it, then the
copy is put back and other events are written in place of the cosigned ones. The ledger's
own signature and every check an auditor can make alone still hold on the rewritten tree;
the witnesses refuse it (the proof from the tree they cosigned does not verify), the ledger
says so on /healthz, and `claims audit --witness ... --quorum K` refuses the checkpoint.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.rollback import FILE_SUFFIX
from domain.note import COSIGNATURE_V1, Note, Signer
from store.settings import Database
from tests.conftest import new_database_url
from tests.reliability.server import wait_until
from tests.witness.test_ledger import WAIT, start_witnessed, stop_witnessed


def files_of(database: Path) -> list[Path]:
    """The ledger's files, and the largest tree it signed, kept beside its key (audit/rollback.py):
    rewound alone, the database would be refused by the ledger itself; rewound with it, only the
    witnesses, who keep what they cosigned, can tell."""
    return [*sorted(database.parent.glob(database.name + "*")),
            *database.parent.glob("ledger-signing-key.pem" + FILE_SUFFIX)]


def test_a_rewritten_log_is_refused_by_the_witnesses_and_the_auditors_quorum(tmp_path: Path) -> None:
    url = new_database_url("sqlite", tmp_path)
    database = Path(Database.from_url(url).path)
    backup = tmp_path / "backup"
    backup.mkdir()
    witnessed = start_witnessed(tmp_path, url)
    try:
        kept = witnessed.write(2)
        witnessed.cosigned_by(kept, 2)
        witnessed.ledger.stop()
        for path in files_of(database):
            shutil.copy2(path, backup / path.name)
        witnessed.ledger.start()

        size = witnessed.write(3)
        witnessed.cosigned_by(size, 2)
        # The honest ledger: a quorum of 2 of its witnesses holds; 3 of 3 with one it never asked does not.
        status, out = witnessed.audit(tmp_path, *witnessed.verifiers, quorum=2)
        assert status == 0, out
        assert "witnesses: 2 of 2 cosigned this checkpoint (witness.test/w1, witness.test/w2), 2 required" in out
        stranger = Signer("witness.test/stranger", Ed25519PrivateKey.generate(), COSIGNATURE_V1).verifier
        status, out = witnessed.audit(tmp_path, *witnessed.verifiers, stranger, quorum=3)
        assert status == 1, out
        assert "fewer than the quorum of 3; missing: witness.test/stranger (no cosignature)" in out

        # Rewind the ledger to the copy and write other events where the cosigned ones were.
        witnessed.ledger.stop()
        for path in files_of(database):
            path.unlink()
        for path in sorted(backup.iterdir()):
            shutil.copy2(path, database.parent / path.name)
        witnessed.ledger.start()
        rewritten = witnessed.write(5)
        assert rewritten > size

        def refuses_the_rewritten_tree(witness: dict[str, object]) -> bool:
            """Asked while the log passed its cosigned size, or after. (Asked before, while
            the rewritten log was still shorter than what it cosigned, it refused too, as
            a rollback: a tree that is not yet the one in question.)"""
            problem = str(witness["problem"])
            return witness["status"] == "failing" and (
                f"has cosigned another tree of {size} events" in problem
                or f"refuses the consistency proof from {size} to " in problem)

        def both_refuse() -> bool:
            return all(refuses_the_rewritten_tree(w) for w in witnessed.health()["witnesses"])

        wait_until(both_refuse, WAIT, "both witnesses refuse the rewritten log")
        health = witnessed.health()
        assert health["status"] == "degraded"
        for witness in health["witnesses"]:
            assert refuses_the_rewritten_tree(witness), witness
            assert witness["cosigned_size"] == kept  # the copy's cosignature: of the prefix both logs share
        checkpoint = witnessed.checkpoint()
        assert checkpoint["tree_size"] == rewritten and checkpoint["cosignatures"] == []
        assert Note.parse(checkpoint["note"]).verified_by(witnessed.verifiers) == []

        # Alone, a new auditor finds nothing wrong: the rewritten log is consistent in itself.
        status, out = witnessed.audit(tmp_path)
        assert status == 0, out
        # With the witnesses, it refuses the checkpoint, naming them.
        status, out = witnessed.audit(tmp_path, *witnessed.verifiers, quorum=1)
        assert status == 1, out
        assert ("missing: witness.test/w1 (no cosignature); witness.test/w2 (no cosignature). No quorum of "
                "witnesses has seen this tree") in out
    finally:
        stop_witnessed(witnessed)
