"""Restores that auditors can trust: the largest tree the ledger signed, kept beside its key.

A database restored from a backup rewinds the log, and with it the Merkle tree: a checkpoint
signed after the restore would be of a tree that is not an extension of one the ledger signed
before, and an auditor holding the earlier checkpoint would see two signed, inconsistent
histories. The signing key is a file the restore does not rewind; beside it
(`<key>.signed-trees.json`, written whole or not at all) the ledger keeps, for each ledger it
signs for (store/identity.py), the largest tree it has signed. Before signing a tree it checks
it against that one: smaller, or of the same size with another root, or larger without a
consistency proof from the kept tree, and it refuses (`RolledBack`, HTTP 503): no checkpoint
is signed or served, and /healthz says why.

`claims recover --acknowledge-rollback` lets an operator resume: it signs a statement of what
was lost (the tree the ledger had signed, the tree it holds now), keeps it in the same file
(served at /v1/audit/rollbacks), and keeps the current tree as the one to extend.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.signing import CheckpointSigner, now_utc, write_private
from domain.errors import LedgerError
from domain.merkle import verify_consistency
from domain.note import Note
from domain.values import format_instant

ReadProof = Callable[[int, int], list[bytes]]  # RFC 9162 consistency proof from one size to another
FILE_SUFFIX = ".signed-trees.json"
STATEMENT = "rollback statement"


class RolledBack(LedgerError):
    """The ledger's tree is not an extension of the largest tree it signed (a restore rewound it)."""

    code = "rolled-back"
    title = "Ledger rolled back"


@dataclass(frozen=True)
class Tree:
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.size} {base64.b64encode(self.root).decode()}"

    def json(self) -> dict[str, Any]:
        return {"size": self.size, "root_hash": self.root.hex()}


def kept_path(key_file: Path) -> Path:
    return key_file.with_name(key_file.name + FILE_SUFFIX)


class KeptTrees:
    """The file beside the key: per ledger id, the largest tree signed and the rollback statements."""

    def __init__(self, key_file: Path) -> None:
        self.path = kept_path(key_file)

    def _read(self) -> dict[str, Any]:
        try:
            found = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise RolledBack(f"{self.path} cannot be read ({e}): restore it from the key's backup") from e
        return found if isinstance(found, dict) else {}

    def largest(self, ledger: str) -> Tree | None:
        entry = self._read().get(ledger, {}).get("signed")
        return None if entry is None else Tree(int(entry["size"]), bytes.fromhex(entry["root_hash"]))

    def statements(self, ledger: str) -> list[dict[str, Any]]:
        return list(self._read().get(ledger, {}).get("rollbacks", []))

    def keep(self, ledger: str, tree: Tree, statement: dict[str, Any] | None = None) -> None:
        everything = self._read()
        entry = everything.setdefault(ledger, {})
        entry["signed"] = tree.json()
        if statement is not None:
            entry.setdefault("rollbacks", []).append(statement)
        write_private(self.path, json.dumps(everything, indent=1, sort_keys=True).encode() + b"\n")


class TreeGuard:
    """The one way the ledger's checkpoints are signed: `sign` checks the tree against the
    largest one signed before, signs it, and keeps it when it is larger."""

    def __init__(self, signer: CheckpointSigner, ledger: str, proof: ReadProof) -> None:
        self.signer = signer
        self.ledger = ledger
        self.proof = proof
        self.kept = KeptTrees(signer.path)
        self.problem: str | None = None  # why the last tree looked at was refused
        self._admitted: Tree | None = None  # the largest tree checked since the kept one was read
        self._lock = threading.Lock()

    def sign(self, size: int, root: bytes) -> Note:
        with self._lock:
            tree = Tree(size, root)
            self._admit(tree)
            note = self.signer.note(size, root)
            if self._largest_kept is None or size > self._largest_kept.size:
                self.kept.keep(self.ledger, tree)
                self._largest_kept = tree
            return note

    def check(self, size: int, root: bytes) -> str | None:
        """Why the tree (size, root) may not be signed, or None (recorded in `problem`)."""
        with self._lock:
            try:
                self._admit(Tree(size, root))
            except RolledBack as e:
                return str(e)
            return None

    _largest_kept: Tree | None = None

    def _admit(self, tree: Tree) -> None:
        kept = self._largest_kept = self.kept.largest(self.ledger)
        if kept is None or kept.size == 0 or tree == self._admitted:
            self.problem = None
            return
        why = None
        if tree.size == kept.size and tree.root != kept.root:
            why = f"the tree of {tree.size} events has another root than the one the ledger signed"
        elif tree.size < kept.size and not self._consistent(tree, kept):
            # An earlier tree is fine when it is a prefix of the kept one, proved from the log;
            # a log that no longer holds the kept tree cannot prove it.
            why = f"the log holds {tree.size} events, not the tree of {kept.size} the ledger signed"
        elif tree.size > kept.size and not self._consistent(kept, tree):
            why = f"the tree of {tree.size} events does not extend the tree of {kept.size} the ledger signed"
        if why is not None:
            self.problem = (f"{why}: the database was restored from an earlier state or changed; no checkpoint "
                            "is signed until an operator runs `claims recover --acknowledge-rollback`")
            raise RolledBack(self.problem)
        self.problem = None
        if tree.size >= kept.size:
            self._admitted = tree

    def _consistent(self, first: Tree, second: Tree) -> bool:
        """Whether the log proves `first` a prefix of `second` (False when it cannot prove it)."""
        if first.size == 0:
            return True
        try:
            proof = self.proof(first.size, second.size)
        except LedgerError:  # the log does not hold `second`
            return False
        return verify_consistency(first.size, second.size, first.root, second.root, proof)

    def acknowledge(self, size: int, root: bytes) -> dict[str, Any] | None:
        """Sign and keep a statement of what was lost, and resume from the tree (size, root);
        None when there is nothing to acknowledge."""
        with self._lock:
            current = Tree(size, root)
            try:
                self._admit(current)
            except RolledBack:
                pass
            else:
                return None
            lost = self.kept.largest(self.ledger)
            assert lost is not None
            keyring = self.signer.keyring()
            when = format_instant(now_utc())
            text = (f"{keyring.origin}\n{STATEMENT}\nsigned {lost.text()}\nresumed {current.text()}\n"
                    f"acknowledged {when}\n")
            note = Note(text, (keyring.signer.sign(text),))
            statement = {"lost": lost.json(), "resumed": current.json(), "acknowledged_at": when, "note": str(note)}
            self.kept.keep(self.ledger, current, statement)
            self._largest_kept, self._admitted, self.problem = current, current, None
            return statement

    def statements(self) -> list[dict[str, Any]]:
        return self.kept.statements(self.ledger)
