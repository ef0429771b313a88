"""The ledger's Ed25519 signing key and its signed checkpoints of the Merkle log.

A checkpoint is ``{tree_size, root_hash, timestamp, signature}``; the signature covers the
RFC 8785 canonical JSON of the other three fields, so an auditor can check it with any
Ed25519 library and the pinned public key.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from domain.canonical import canonical_bytes
from domain.errors import InvalidInput, LedgerError
from domain.ijson import MAX_SAFE_INTEGER, safe_integer
from domain.values import parse_instant
from store.settings import Database

DEFAULT_KEY_FILE = "ledger-signing-key.pem"
CHECKPOINT_FIELDS = frozenset({"tree_size", "root_hash", "timestamp", "signature"})

_ROOT_HASH = re.compile(r"[0-9a-f]{64}")
_PUBLIC_KEY = re.compile(r"[0-9a-f]{64}")
_SIGNATURE = re.compile(r"[0-9a-f]{128}")


class SigningKeyError(LedgerError):
    """The signing key file cannot be used as it is: unsafe permissions or not a key."""

    code = "signing-key-error"
    title = "Signing key unusable"


def key_path(database: Database) -> Path:
    """Where the ledger keeps its signing key.

    LEDGER_SIGNING_KEY_FILE when set; else beside a SQLite ledger's file; else the
    working directory (a PostgreSQL ledger has no file of its own to sit beside).
    """
    configured = database.settings.signing_key_file
    if configured is not None:
        return configured.expanduser()
    if database.backend == "sqlite":
        return Path(f"{database.path}.signing-key.pem")
    return Path(DEFAULT_KEY_FILE)


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The key in ``path`` (PEM, PKCS #8), made on first use with mode 0600."""
    try:
        return _load_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Write a private temporary file and link it into place: the key appears whole or not
    # at all, and when several processes start at once the first link wins and the others
    # load the winner's key.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return _load_key(path)


def _load_key(path: Path) -> Ed25519PrivateKey:
    with path.open("rb") as file:
        mode = os.fstat(file.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SigningKeyError(
                f"the signing key {path} is open to group or others (mode {stat.S_IMODE(mode):04o}); "
                f"make it private with `chmod 600 {path}`"
            )
        pem = file.read()
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise SigningKeyError(
            f"{path} is not an unencrypted PEM private key ({e}); move it away and a new key is made"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} holds a {type(key).__name__}; the ledger signs with Ed25519")
    return key


def public_key_hex(key: Ed25519PrivateKey) -> str:
    """The raw 32-byte public key in hex, as auditors pin it."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def _signed_part(tree_size: int, root_hash: str, timestamp: str) -> bytes:
    return canonical_bytes({"tree_size": tree_size, "root_hash": root_hash, "timestamp": timestamp})


def sign_checkpoint(
    key: Ed25519PrivateKey, tree_size: int, root_hash_hex: str, timestamp: str
) -> dict[str, Any]:
    """A checkpoint of the tree of ``tree_size`` leaves with root ``root_hash_hex``."""
    safe_integer(tree_size, "tree_size")
    if not isinstance(root_hash_hex, str) or not _ROOT_HASH.fullmatch(root_hash_hex):
        raise InvalidInput(
            f"root_hash must be 64 lowercase hex digits (got {root_hash_hex!r:.80})", "root_hash"
        )
    parse_instant(timestamp, "timestamp")
    signature = key.sign(_signed_part(tree_size, root_hash_hex, timestamp))
    return {
        "tree_size": tree_size,
        "root_hash": root_hash_hex,
        "timestamp": timestamp,
        "signature": signature.hex(),
    }


def verify_checkpoint(checkpoint: Mapping[str, Any], public_key_hex: str) -> bool:
    """True when ``checkpoint`` has exactly the four fields and the key signed the first three."""
    if not isinstance(checkpoint, Mapping) or set(checkpoint) != CHECKPOINT_FIELDS:
        return False
    tree_size = checkpoint["tree_size"]
    root_hash = checkpoint["root_hash"]
    timestamp = checkpoint["timestamp"]
    signature = checkpoint["signature"]
    if not (isinstance(tree_size, int) and not isinstance(tree_size, bool) and 0 <= tree_size <= MAX_SAFE_INTEGER
            and isinstance(root_hash, str) and _ROOT_HASH.fullmatch(root_hash)
            and isinstance(timestamp, str) and timestamp
            and isinstance(signature, str) and _SIGNATURE.fullmatch(signature)
            and isinstance(public_key_hex, str) and _PUBLIC_KEY.fullmatch(public_key_hex)):
        return False
    try:
        public_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
        public_key.verify(bytes.fromhex(signature), _signed_part(tree_size, root_hash, timestamp))
    except (InvalidSignature, ValueError):
        return False
    return True
