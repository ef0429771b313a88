"""The signing key file, and the former JSON checkpoint an auditor may still keep.

The checkpoints the ledger serves now are signed notes (tests/audit/test_checkpoint_note.py);
a checkpoint kept in the former format, ``{tree_size, root_hash, timestamp, signature}`` with
Ed25519 over the RFC 8785 JSON of the first three, is checked once by `claims audit` as it is
replaced, with ``verify_json_checkpoint``.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.signing import (
    SigningKeyError,
    key_path,
    load_or_create_key,
    public_key_hex,
    verify_json_checkpoint,
)
from store.settings import Database

ROOT = hashlib.sha256(b"the tree of the Putin/Elton John story").hexdigest()
WHEN = "2015-09-16T09:30:00Z"


def former_checkpoint(key: Ed25519PrivateKey, tree_size: int, root_hash: str, timestamp: str) -> dict[str, Any]:
    """A checkpoint as the ledger used to sign it, written out by hand as an auditor's code would."""
    signed = rfc8785.dumps({"tree_size": tree_size, "root_hash": root_hash, "timestamp": timestamp})
    return {"tree_size": tree_size, "root_hash": root_hash, "timestamp": timestamp,
            "signature": key.sign(signed).hex()}


@pytest.fixture
def key(tmp_path: Path) -> Ed25519PrivateKey:
    return load_or_create_key(tmp_path / "keys" / "ledger-signing-key.pem")


def test_a_former_checkpoint_verifies_with_the_ledger_public_key(key: Ed25519PrivateKey) -> None:
    assert verify_json_checkpoint(former_checkpoint(key, 3, ROOT, WHEN), public_key_hex(key))


@pytest.mark.parametrize(("field", "value"), [
    ("tree_size", 4),
    ("root_hash", hashlib.sha256(b"another tree").hexdigest()),
    ("timestamp", "2015-09-16T09:30:01Z"),
    ("signature", "00" * 64),
])
def test_a_former_checkpoint_with_any_field_changed_is_rejected(
    key: Ed25519PrivateKey, field: str, value: Any
) -> None:
    checkpoint = {**former_checkpoint(key, 3, ROOT, WHEN), field: value}
    assert not verify_json_checkpoint(checkpoint, public_key_hex(key))


def test_a_former_checkpoint_signed_by_another_key_is_rejected(key: Ed25519PrivateKey) -> None:
    impostor = Ed25519PrivateKey.generate()
    assert not verify_json_checkpoint(former_checkpoint(impostor, 3, ROOT, WHEN), public_key_hex(key))


@pytest.mark.parametrize("change", [
    lambda c: {k: v for k, v in c.items() if k != "timestamp"},
    lambda c: {**c, "public_key": "00" * 32},
    lambda c: {**c, "tree_size": "3"},
    lambda c: {**c, "tree_size": True},
    lambda c: {**c, "tree_size": -3},
    lambda c: {**c, "tree_size": 2**60},
    lambda c: {**c, "root_hash": c["root_hash"].upper()},
    lambda c: {**c, "signature": c["signature"][:-2]},
    lambda c: {**c, "signature": "zz" + c["signature"][2:]},
    lambda c: {**c, "signature": None},
    lambda c: list(c.items()),
    lambda c: None,
])
def test_a_malformed_former_checkpoint_is_rejected_without_raising(key: Ed25519PrivateKey, change: Any) -> None:
    checkpoint = change(former_checkpoint(key, 3, ROOT, WHEN))
    assert verify_json_checkpoint(checkpoint, public_key_hex(key)) is False


@pytest.mark.parametrize("public_key", ["", "00" * 31, "zz" * 32, None, "AB" * 32])
def test_a_malformed_public_key_verifies_nothing(key: Ed25519PrivateKey, public_key: Any) -> None:
    assert verify_json_checkpoint(former_checkpoint(key, 3, ROOT, WHEN), public_key) is False


def test_the_key_is_made_on_first_use_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "ledger-signing-key.pem"
    key = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_key_hex(load_or_create_key(path)) == public_key_hex(key)
    assert [p.name for p in path.parent.iterdir()] == [path.name]


PROCESSES = 4


def load_the_key_when_all_are_ready(ready: Any, path: str, keys: Any) -> None:
    """In a process of its own: wait until every process is up, then load (or make) the key."""
    ready.wait(120)
    keys.put(public_key_hex(load_or_create_key(Path(path))))


def test_processes_starting_together_all_use_the_one_key_made(tmp_path: Path) -> None:
    # Real processes (spawned: nothing shared but the file system), released together by a
    # barrier once each has started, so that several find no key and make one at once.
    path = tmp_path / "ledger-signing-key.pem"
    spawn = multiprocessing.get_context("spawn")
    ready, keys = spawn.Barrier(PROCESSES), spawn.Queue()
    processes = [spawn.Process(target=load_the_key_when_all_are_ready, args=(ready, str(path), keys))
                 for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    try:
        found = [keys.get(timeout=120) for _ in processes]
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
    assert [process.exitcode for process in processes] == [0] * PROCESSES
    assert set(found) == {public_key_hex(load_or_create_key(path))}
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644])
def test_a_key_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "ledger-signing-key.pem"
    load_or_create_key(path)
    os.chmod(path, mode)
    with pytest.raises(SigningKeyError, match=f"chmod 600 {path}"):
        load_or_create_key(path)


def test_a_file_that_is_not_a_private_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger-signing-key.pem"
    path.write_bytes(b"Elton John's Instagram post")
    os.chmod(path, 0o600)
    with pytest.raises(SigningKeyError, match="not an unencrypted PEM private key"):
        load_or_create_key(path)


def test_a_key_of_another_algorithm_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger-signing-key.pem"
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    os.chmod(path, 0o600)
    with pytest.raises(SigningKeyError, match="signs with Ed25519"):
        load_or_create_key(path)


def test_the_key_file_sits_beside_a_sqlite_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_SIGNING_KEY_FILE", raising=False)
    database = Database.from_url(f"sqlite:///{tmp_path / 'ledger.db'}")
    assert key_path(database) == tmp_path / "ledger.db.signing-key.pem"


def test_a_postgres_ledger_keeps_its_key_in_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_SIGNING_KEY_FILE", raising=False)
    database = Database.from_url("postgresql://postgres@127.0.0.1:5432/test")
    assert key_path(database) == Path("ledger-signing-key.pem")


def test_ledger_signing_key_file_overrides_where_the_key_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_SIGNING_KEY_FILE", str(tmp_path / "secrets" / "key.pem"))
    for url in (f"sqlite:///{tmp_path / 'ledger.db'}", "postgresql://postgres@127.0.0.1:5432/test"):
        assert key_path(Database.from_url(url)) == tmp_path / "secrets" / "key.pem"
