"""The ledger's Ed25519 signing keys and its checkpoints: C2SP tlog-checkpoints in signed notes.

A checkpoint is the note text ``<origin>\\n<tree size>\\n<base64 root hash>\\n`` signed by the
ledger's key under the key name ``<origin>`` (domain/note.py holds the formats). The origin
is LEDGER_LOG_ORIGIN, else ``claims-ledger/<16 hex digits of SHA-256 of the public key>``,
kept across key rotations. The key lives in a PEM file (mode 0600, written whole or not at
all); ``rotate_key`` makes a new one and, during a stated overlap, the previous key signs
every checkpoint beside it, so that an auditor who pinned the old key can follow to the new.

The former JSON checkpoint (``{tree_size, root_hash, timestamp, signature}``, Ed25519 over
the RFC 8785 JSON of the first three) is no longer served; ``verify_json_checkpoint`` checks
one an auditor kept, once, as it is replaced by a note.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import stat
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from domain import ijson
from domain.canonical import canonical_bytes
from domain.errors import InvalidInput, InvalidJson, LedgerError
from domain.ijson import MAX_SAFE_INTEGER
from domain.note import ED25519, Checkpoint, Note, NoteError, Signer, Verifier, check_key_name
from domain.values import format_instant, parse_instant
from store.settings import Database

DEFAULT_KEY_FILE = "ledger-signing-key.pem"
ORIGIN_PREFIX = "claims-ledger/"
JSON_CHECKPOINT_FIELDS = frozenset({"tree_size", "root_hash", "timestamp", "signature"})
NOTES_KEPT = 8  # signed notes a process keeps: the current tree head and the few before it

_HEX_KEY = re.compile(r"[0-9a-f]{64}")
_ROOT_HASH = re.compile(r"[0-9a-f]{64}")
_SIGNATURE = re.compile(r"[0-9a-f]{128}")


class SigningKeyError(LedgerError):
    """The signing key file cannot be used as it is: unsafe permissions or not a key."""

    code = "signing-key-error"
    title = "Signing key unusable"


# -- Key files ------------------------------------------------------------------------------------


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


def previous_key_path(path: Path) -> Path:
    """Where a rotation keeps the key it replaced, for the overlap."""
    return path.with_name(f"{path.name}.previous")


def rotation_path(path: Path) -> Path:
    """The record of the last rotation: the log's origin, the previous key, the overlap's end."""
    return path.with_name(f"{path.name}.rotation.json")


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The key in ``path`` (PEM, PKCS #8), made on first use with mode 0600."""
    try:
        return _load_key(path)
    except FileNotFoundError:
        pass
    # When several processes start at once the first link wins and the others load its key.
    _write_private(path, _pem(Ed25519PrivateKey.generate()), replace=False)
    return _load_key(path)


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes, *, replace: bool) -> None:
    """Write ``data`` to ``path`` with mode 0600, whole or not at all.

    A private temporary file is written and synced, then linked into place (``replace=False``:
    an existing file wins) or renamed over it (``replace=True``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (mode 0600), whole or not at all: the one way the ledger and
    its auditor write a file that a kill must never leave half written (the tree kept beside the
    key, an auditor's kept checkpoint, the monitor's status)."""
    _write_private(path, data, replace=True)


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


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_hex(key: Ed25519PrivateKey) -> str:
    """The raw 32-byte public key in hex, as auditors pin it."""
    return public_bytes(key).hex()


def default_origin(public_key: bytes) -> str:
    """The origin of a log whose operator set none: unique to its first signing key.

    Witnesses and monitors tell logs apart by origin, so two ledgers (a copy made for tests,
    a restored backup that went its own way) must not share one; a name made from the key
    needs no configuration and is the same in every process that holds the key.
    """
    return ORIGIN_PREFIX + hashlib.sha256(public_key).hexdigest()[:16]


# -- Rotation -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rotation:
    """The last rotation: the log's origin then, when it happened, the key it replaced and
    until when that key goes on signing beside the new one."""

    origin: str
    rotated_at: datetime
    overlap_until: datetime
    previous_public_key: bytes

    def text(self) -> str:
        return json.dumps({
            "origin": self.origin, "rotated_at": format_instant(self.rotated_at),
            "overlap_until": format_instant(self.overlap_until),
            "previous_public_key": self.previous_public_key.hex(),
        }, indent=2) + "\n"

    @classmethod
    def read(cls, path: Path) -> Rotation | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            record = ijson.loads(raw)
            if not isinstance(record, dict):
                raise InvalidInput("not a JSON object")
            previous = record["previous_public_key"]
            if not isinstance(previous, str) or not _HEX_KEY.fullmatch(previous):
                raise InvalidInput("previous_public_key is not 64 hex digits")
            return cls(check_key_name(record["origin"]), parse_instant(record["rotated_at"], "rotated_at"),
                       parse_instant(record["overlap_until"], "overlap_until"), bytes.fromhex(previous))
        except (InvalidJson, InvalidInput, KeyError, TypeError) as e:
            raise SigningKeyError(
                f"the rotation record {path} cannot be read ({e}); it was written by `claims audit-key rotate`: "
                "restore it from a backup"
            ) from None


@dataclass(frozen=True)
class Keyring:
    """The keys that sign the ledger's checkpoints: the current one, and during the overlap
    after a rotation the previous one too, both under the log's origin."""

    current: Ed25519PrivateKey
    origin: str
    previous: Ed25519PrivateKey | None = None
    overlap_until: datetime | None = None

    @functools.cached_property
    def signer(self) -> Signer:
        return Signer(self.origin, self.current)

    @functools.cached_property
    def verifier(self) -> Verifier:
        return self.signer.verifier

    @functools.cached_property
    def previous_signer(self) -> Signer | None:
        return None if self.previous is None else Signer(self.origin, self.previous)

    @functools.cached_property
    def previous_verifier(self) -> Verifier | None:
        return None if self.previous_signer is None else self.previous_signer.verifier

    def overlapping(self, now: datetime) -> bool:
        """Whether the previous key still signs beside the current one at ``now``."""
        return self.previous is not None and self.overlap_until is not None and now < self.overlap_until

    def signers(self, now: datetime) -> list[Signer]:
        """Who signs a checkpoint made at ``now``: the current key, then the previous during the overlap."""
        if self.overlapping(now) and self.previous_signer is not None:
            return [self.signer, self.previous_signer]
        return [self.signer]

    def key_ids(self, now: datetime) -> tuple[bytes, ...]:
        """The key IDs of ``signers(now)``."""
        if self.overlapping(now) and self.previous_verifier is not None:
            return (self.verifier.key_id, self.previous_verifier.key_id)
        return (self.verifier.key_id,)


def key_document(keyring: Keyring, now: datetime) -> dict[str, Any]:
    """The keys as GET /v1/audit/public-key and `claims audit-key --json` give them."""
    previous = None
    if keyring.overlapping(now) and keyring.previous_signer is not None and keyring.overlap_until is not None:
        previous = {
            "public_key": public_bytes(keyring.previous_signer.private_key).hex(),
            "verifier_key": str(keyring.previous_signer.verifier),
            "signs_until": format_instant(keyring.overlap_until),
        }
    return {
        "algorithm": "ed25519", "public_key": public_bytes(keyring.current).hex(),
        "verifier_key": str(keyring.verifier), "origin": keyring.origin, "previous": previous,
    }


def load_keyring(path: Path, origin: str | None = None) -> Keyring:
    """The keys at ``path`` (the current key made on first use) and the log's origin.

    ``origin`` (LEDGER_LOG_ORIGIN) wins; else the origin the last rotation recorded; else the
    default made from the current key.
    """
    current = load_or_create_key(path)
    rotation = Rotation.read(rotation_path(path))
    if origin is None:
        origin = rotation.origin if rotation is not None else default_origin(public_bytes(current))
    previous = None
    if rotation is not None and rotation.previous_public_key != public_bytes(current):
        with contextlib.suppress(FileNotFoundError):
            previous = _load_key(previous_key_path(path))
        if previous is not None and public_bytes(previous) != rotation.previous_public_key:
            raise SigningKeyError(
                f"{previous_key_path(path)} holds the key {public_key_hex(previous)}, but the rotation record "
                f"{rotation_path(path)} names {rotation.previous_public_key.hex()}; restore both from one backup"
            )
    return Keyring(current, check_key_name(origin), previous, None if rotation is None else rotation.overlap_until)


def rotate_key(path: Path, overlap: timedelta, origin: str | None = None, now: datetime | None = None) -> Keyring:
    """Make a new signing key at ``path``; the replaced key signs beside it for ``overlap``.

    The files change in an order that leaves a usable state at every step: the previous key
    is written, then the record, then the new key replaces the current one. A rotation
    started while another's overlap lasts is refused (auditors still on the key before
    would lose their way), unless ``overlap`` is zero: then the old keys stop signing at once.
    """
    now = now or datetime.now(UTC)
    if overlap < timedelta(0):
        raise InvalidInput(f"the overlap must not be negative (got {overlap})", "overlap")
    if not path.exists():
        raise SigningKeyError(f"there is no signing key at {path} to rotate; the ledger makes one on first use")
    before = load_keyring(path, origin)
    if overlap and before.overlapping(now) and before.overlap_until is not None:
        raise SigningKeyError(
            f"the last rotation's overlap lasts until {format_instant(before.overlap_until)} (its previous key "
            "still signs); rotate again after that, or with an overlap of 0 to stop every old key at once"
        )
    old = before.current
    if overlap:
        _write_private(previous_key_path(path), _pem(old), replace=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(previous_key_path(path))
    record = Rotation(before.origin, now, now + overlap, public_bytes(old))
    _write_private(rotation_path(path), record.text().encode(), replace=True)
    _write_private(path, _pem(Ed25519PrivateKey.generate()), replace=True)
    return load_keyring(path, origin)


# -- Signed checkpoints ---------------------------------------------------------------------------


def now_utc() -> datetime:
    return datetime.now(UTC)


class CheckpointSigner:
    """One process's signer of checkpoints: its keys, re-read when their files change (a
    rotation needs no restart), and the signed note of each recent tree head, signed once.

    A plain checkpoint holds no time, so the same tree signed by the same keys is the same
    note: it is signed once per tree head (and set of signing keys), not once per request.
    """

    def __init__(self, path: Path, origin: str | None = None, clock: Callable[[], datetime] = now_utc) -> None:
        self.path = path
        self.configured_origin = origin
        self.clock = clock
        self._lock = threading.Lock()
        self._stamp: tuple[object, ...] | None = None
        self._keyring: Keyring | None = None
        self._notes: OrderedDict[tuple[int, bytes, tuple[bytes, ...]], Note] = OrderedDict()

    def _files_stamp(self) -> tuple[object, ...]:
        stamps: list[object] = []
        for path in (self.path, rotation_path(self.path), previous_key_path(self.path)):
            try:
                found = path.stat()
            except FileNotFoundError:
                stamps.append(None)
            else:
                stamps.append((found.st_ino, found.st_mtime_ns, found.st_size))
        return tuple(stamps)

    def keyring(self) -> Keyring:
        """The keys as the files hold them now."""
        with self._lock:
            stamp = self._files_stamp()
            if self._keyring is None or stamp != self._stamp:
                self._keyring = load_keyring(self.path, self.configured_origin)
                self._stamp = self._files_stamp()
            return self._keyring

    def note(self, size: int, root_hash: bytes) -> Note:
        """The checkpoint of the tree (size, root_hash), signed by every key that signs now."""
        keyring = self.keyring()
        now = self.clock()
        key = (size, root_hash, keyring.key_ids(now))
        with self._lock:
            found = self._notes.get(key)
            if found is not None:
                self._notes.move_to_end(key)
                return found
        signers = keyring.signers(now)
        text = Checkpoint(keyring.origin, size, root_hash).text()
        note = Note(text, tuple(signer.sign(text) for signer in signers))
        with self._lock:
            self._notes[key] = note
            while len(self._notes) > NOTES_KEPT:
                self._notes.popitem(last=False)
        return note


@functools.lru_cache(maxsize=8)
def _signer_at(path: str, origin: str | None) -> CheckpointSigner:
    return CheckpointSigner(Path(path), origin)


def checkpoint_signer(database: Database) -> CheckpointSigner:
    """The process's signer for the ledger on ``database`` (one per key file and origin)."""
    return _signer_at(str(key_path(database)), database.settings.log_origin)


def read_checkpoint_note(raw: str | bytes) -> tuple[Note, Checkpoint]:
    """A served or kept checkpoint: the signed note and the checkpoint its text holds (NoteError if not)."""
    note = Note.parse(raw)
    return note, Checkpoint.parse(note.text)


# -- The auditor's pinned key ---------------------------------------------------------------------


@dataclass(frozen=True)
class PinnedKey:
    """The key an auditor trusts: a raw Ed25519 key, with its key name when pinned as a verifier key.

    Pinned as a raw key, the name is the checkpoint's origin (the ledger's key name), so the
    key ID still binds the two.
    """

    public_key: bytes
    name: str | None = None

    @classmethod
    def of(cls, verifier: Verifier) -> PinnedKey:
        return cls(verifier.public_key, verifier.name)

    @classmethod
    def parse(cls, text: str) -> PinnedKey:
        """64 hex digits, a verifier key ``<name>+<key ID>+<base64>``, or the JSON of GET /v1/audit/public-key."""
        text = text.strip()
        if text.startswith("{"):
            try:
                answer = ijson.loads(text)
            except InvalidJson as e:
                raise InvalidInput(f"not JSON ({e})") from None
            if not isinstance(answer, dict):
                raise InvalidInput("not the JSON of GET /v1/audit/public-key")
            found = answer.get("verifier_key") or answer.get("public_key")
            if not isinstance(found, str):
                raise InvalidInput("the JSON has neither verifier_key nor public_key")
            text = found.strip()
        if _HEX_KEY.fullmatch(text.lower()):
            return cls(bytes.fromhex(text))
        if "+" in text:
            try:
                verifier = Verifier.parse(text)
            except NoteError as e:
                raise InvalidInput(f"not a verifier key: {e}") from None
            if verifier.alg != ED25519:
                raise InvalidInput("the verifier key is not an Ed25519 note key (algorithm 0x01)")
            return cls.of(verifier)
        raise InvalidInput(
            "expected the ledger's Ed25519 public key as 64 hex digits, or its verifier key "
            "<name>+<key ID>+<base64> (see `claims audit-key`)"
        )

    def verifier(self, origin: str) -> Verifier:
        return Verifier.of(self.name or origin, self.public_key)

    def __str__(self) -> str:
        return self.public_key.hex() if self.name is None else str(Verifier.of(self.name, self.public_key))


# -- The former JSON checkpoint, for auditors moving from it --------------------------------------


def _json_signed_part(tree_size: int, root_hash: str, timestamp: str) -> bytes:
    return canonical_bytes({"tree_size": tree_size, "root_hash": root_hash, "timestamp": timestamp})


def verify_json_checkpoint(checkpoint: Mapping[str, Any], public_key_hex: str) -> bool:
    """True when a former JSON checkpoint has exactly its four fields and the key signed the first three."""
    if not isinstance(checkpoint, Mapping) or set(checkpoint) != JSON_CHECKPOINT_FIELDS:
        return False
    tree_size = checkpoint["tree_size"]
    root_hash = checkpoint["root_hash"]
    timestamp = checkpoint["timestamp"]
    signature = checkpoint["signature"]
    if not (isinstance(tree_size, int) and not isinstance(tree_size, bool) and 0 <= tree_size <= MAX_SAFE_INTEGER
            and isinstance(root_hash, str) and _ROOT_HASH.fullmatch(root_hash)
            and isinstance(timestamp, str) and timestamp
            and isinstance(signature, str) and _SIGNATURE.fullmatch(signature)
            and isinstance(public_key_hex, str) and _HEX_KEY.fullmatch(public_key_hex)):
        return False
    try:
        public_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
        public_key.verify(bytes.fromhex(signature), _json_signed_part(tree_size, root_hash, timestamp))
    except (InvalidSignature, ValueError):
        return False
    return True
