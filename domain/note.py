"""C2SP signed notes, tlog checkpoints and tlog cosignatures: the transparency-log formats.

A *signed note* (C2SP ``signed-note``) is a UTF-8 text ending in a newline, a blank line, and
one or more signature lines ``— <key name> <base64(4-byte key ID ‖ signature)>``. An Ed25519
signature (algorithm 0x01) covers the text, final newline included. A *cosignature* (C2SP
``tlog-cosignature``, algorithm 0x04) is a witness's signature line whose payload is an 8-byte
big-endian timestamp and an Ed25519 signature over ``cosignature/v1\\ntime <t>\\n`` followed by
the checkpoint's text. A *checkpoint* (C2SP ``tlog-checkpoint``) is the note text
``<origin>\\n<tree size>\\n<base64 root hash>\\n`` with optional extension lines.

Parsing follows Go's ``golang.org/x/mod/sumdb/note`` (the reference): the same message
rules, the same key IDs, the same verifier key text, and signatures from unknown keys are
ignored, not refused. Every refusal says what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from domain.errors import InvalidInput

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
ALGORITHMS = {ED25519: "Ed25519", COSIGNATURE_V1: "cosignature/v1 (Ed25519)"}

KEY_ID_SIZE = 4
PUBLIC_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
TIMESTAMP_SIZE = 8
HASH_SIZE = 32
MAX_SIGNATURES = 100
MAX_UINT64 = 2**64 - 1

SIGNATURE_PREFIX = "\u2014 "  # EM DASH, space
COSIGNATURE_HEADER = "cosignature/v1\n"

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_KEY_ID_HEX = re.compile(r"[0-9a-fA-F]{8}")


class NoteError(InvalidInput):
    """A signed note, checkpoint, signature line or verifier key that does not follow its format."""

    code = "malformed-note"
    title = "Malformed signed note"


def key_id(name: str, alg: int, public_key: bytes) -> bytes:
    """The 4-byte key ID: the first bytes of SHA-256(name ‖ "\\n" ‖ alg ‖ public key)."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public_key).digest()[:KEY_ID_SIZE]


def check_key_name(name: str) -> str:
    """``name`` when it may name a key: non-empty, valid UTF-8, no whitespace and no "+"."""
    if not isinstance(name, str) or not name:
        raise NoteError("a key name must not be empty", "name")
    if any(c.isspace() for c in name) or "+" in name:
        raise NoteError(f"the key name {name!r:.80} holds whitespace or '+'; a key name has neither", "name")
    _check_characters(name, "the key name")
    return name


def _check_characters(text: str, what: str) -> None:
    """Valid UTF-8 (no lone surrogates) and no ASCII control character other than newline."""
    for index, char in enumerate(text):
        if (char < " " and char != "\n") or "\ud800" <= char <= "\udfff":
            raise NoteError(
                f"{what} holds the character U+{ord(char):04X} at offset {index}; a signed note is UTF-8 "
                "with no control character but newline"
            )


def _check_text(text: str) -> str:
    if not isinstance(text, str) or not text:
        raise NoteError("a note's text must not be empty")
    if not text.endswith("\n"):
        raise NoteError("a note's text must end with a newline")
    _check_characters(text, "the note's text")
    return text


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise NoteError(f"{what} is not standard base64 (RFC 4648 §4, padded): {value!r:.80}") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def cosigned_message(text: str, timestamp: int) -> bytes:
    """What a cosignature/v1 signs: the header, the time line, then the checkpoint's note text."""
    return f"{COSIGNATURE_HEADER}time {timestamp}\n{text}".encode()


def _check_timestamp(timestamp: object) -> int:
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or not 0 <= timestamp <= MAX_UINT64:
        raise NoteError(f"a cosignature's timestamp is whole seconds from 0 to 2^64-1 (got {timestamp!r:.40})")
    return timestamp


@dataclass(frozen=True)
class Verifier:
    """A public key that checks signature lines, known by its name and key ID."""

    name: str
    key_id: bytes
    alg: int
    public_key: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if self.alg not in ALGORITHMS:
            raise NoteError(f"unknown signature algorithm 0x{self.alg:02x}; known: 0x01 (Ed25519), 0x04 (cosignature/v1)")
        if len(self.public_key) != PUBLIC_KEY_SIZE:
            raise NoteError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, not {len(self.public_key)}")
        if self.key_id != key_id(self.name, self.alg, self.public_key):
            raise NoteError(
                f"the key ID {self.key_id.hex()} is not the one of this name and key "
                f"({key_id(self.name, self.alg, self.public_key).hex()})"
            )

    @classmethod
    def of(cls, name: str, public_key: bytes, alg: int = ED25519) -> Verifier:
        """The verifier of a raw 32-byte Ed25519 public key under ``name``."""
        return cls(check_key_name(name), key_id(name, alg, public_key), alg, public_key)

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """A verifier key ``<name>+<8 hex digits key ID>+<base64(alg ‖ public key)>``, its key ID checked."""
        if not isinstance(vkey, str):
            raise NoteError("a verifier key is text: <name>+<8 hex digits key ID>+<base64(algorithm ‖ key)>")
        name, _, rest = vkey.partition("+")
        id_hex, _, key64 = rest.partition("+")
        if not _KEY_ID_HEX.fullmatch(id_hex) or not key64:
            raise NoteError(
                f"{vkey!r:.120} is not a verifier key <name>+<8 hex digits key ID>+<base64(algorithm ‖ key)>", "vkey"
            )
        check_key_name(name)
        raw = _b64decode(key64, "the verifier key's key part")
        if not raw:
            raise NoteError("the verifier key's key part is empty", "vkey")
        if int(id_hex, 16).to_bytes(KEY_ID_SIZE, "big") != key_id(name, raw[0], raw[1:]):
            raise NoteError(
                f"the verifier key's ID {id_hex} does not match its name and key; the key text was altered", "vkey"
            )
        return cls(name, bytes.fromhex(id_hex), raw[0], raw[1:])

    def __str__(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{_b64(bytes([self.alg]) + self.public_key)}"

    def verify(self, text: str, signature: bytes) -> bool:
        """Whether ``signature`` (a line's payload after the key ID) is this key's over note text ``text``.

        For a cosignature (0x04) the payload is the 8-byte timestamp and the 64-byte signature.
        """
        if self.alg == COSIGNATURE_V1:
            if len(signature) != TIMESTAMP_SIZE + ED25519_SIGNATURE_SIZE:
                return False
            message = cosigned_message(text, int.from_bytes(signature[:TIMESTAMP_SIZE], "big"))
            signature = signature[TIMESTAMP_SIZE:]
        else:
            if len(signature) != ED25519_SIGNATURE_SIZE:
                return False
            message = text.encode("utf-8", "surrogatepass")
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signature:
    """One signature line: the key's name, its 4-byte ID and the payload after the ID."""

    name: str
    key_id: bytes
    payload: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if len(self.key_id) != KEY_ID_SIZE:
            raise NoteError(f"a key ID is {KEY_ID_SIZE} bytes, not {len(self.key_id)}")
        if not self.payload:
            raise NoteError("a signature line's signature is empty")

    def line(self) -> str:
        """``— <name> <base64(key ID ‖ payload)>\\n``."""
        return f"{SIGNATURE_PREFIX}{self.name} {_b64(self.key_id + self.payload)}\n"

    @property
    def timestamp(self) -> int | None:
        """A cosignature's time (seconds since the epoch); None for a plain Ed25519 signature."""
        if len(self.payload) != TIMESTAMP_SIZE + ED25519_SIGNATURE_SIZE:
            return None
        return int.from_bytes(self.payload[:TIMESTAMP_SIZE], "big")

    @classmethod
    def parse_line(cls, line: str) -> Signature:
        """One signature line, with or without its final newline."""
        body = line[:-1] if line.endswith("\n") else line
        if not body.startswith(SIGNATURE_PREFIX):
            raise NoteError(
                f"the signature line {body!r:.80} does not start with an em dash (U+2014) and a space"
            )
        name, _, b64 = body[len(SIGNATURE_PREFIX):].partition(" ")
        check_key_name(name)
        if not b64:
            raise NoteError(f"the signature line of {name!r:.60} has no signature after the key name")
        raw = _b64decode(b64, f"the signature of {name!r:.60}")
        if len(raw) <= KEY_ID_SIZE:
            raise NoteError(f"the signature of {name!r:.60} is {len(raw)} bytes: a 4-byte key ID and more are needed")
        return cls(name, raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:])


@dataclass(frozen=True)
class Signer:
    """A private key that signs note texts under ``name`` (Ed25519, or cosignature/v1 for witnesses)."""

    name: str
    private_key: Ed25519PrivateKey = field(repr=False)
    alg: int = ED25519

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if self.alg not in ALGORITHMS:
            raise NoteError(f"unknown signature algorithm 0x{self.alg:02x}; known: 0x01 (Ed25519), 0x04 (cosignature/v1)")

    @property
    def verifier(self) -> Verifier:
        return Verifier.of(self.name, _public_bytes(self.private_key), self.alg)

    def sign(self, text: str, timestamp: int | None = None) -> Signature:
        """A signature of note text ``text``; a cosignature (0x04) needs its ``timestamp``."""
        _check_text(text)
        if self.alg == COSIGNATURE_V1:
            if timestamp is None:
                raise NoteError("a cosignature needs its timestamp (seconds since the epoch)")
            stamp = _check_timestamp(timestamp)
            payload = stamp.to_bytes(TIMESTAMP_SIZE, "big") + self.private_key.sign(cosigned_message(text, stamp))
        else:
            if timestamp is not None:
                raise NoteError("a plain Ed25519 note signature carries no timestamp")
            payload = self.private_key.sign(text.encode())
        return Signature(self.name, self.verifier.key_id, payload)


@dataclass(frozen=True)
class Note:
    """A signed note: its text (final newline included) and its signature lines in order."""

    text: str
    signatures: tuple[Signature, ...] = ()

    def __post_init__(self) -> None:
        _check_text(self.text)
        if len(self.signatures) > MAX_SIGNATURES:
            raise NoteError(f"a note carries at most {MAX_SIGNATURES} signatures, not {len(self.signatures)}")

    @classmethod
    def parse(cls, raw: str | bytes) -> Note:
        """A signed note as served: text, blank line, one to 100 signature lines, each ending in a newline."""
        if isinstance(raw, bytes | bytearray):
            try:
                message = bytes(raw).decode("utf-8")
            except UnicodeDecodeError as e:
                raise NoteError(f"a signed note is UTF-8; byte {e.start} is not") from None
        elif isinstance(raw, str):
            message = raw
        else:
            raise NoteError("a signed note is text")
        _check_characters(message, "the signed note")
        split = message.rfind("\n\n")
        if split < 0:
            raise NoteError("a signed note has a blank line between its text and its signatures; this one has none")
        text, lines = message[:split + 1], message[split + 2:]
        if not lines:
            raise NoteError("a signed note carries at least one signature line after the blank line; this one has none")
        if not lines.endswith("\n"):
            raise NoteError("a signed note's last signature line must end with a newline")
        parts = lines[:-1].split("\n")
        if len(parts) > MAX_SIGNATURES:
            raise NoteError(f"a signed note carries at most {MAX_SIGNATURES} signatures; this one has {len(parts)}")
        return cls(text, tuple(Signature.parse_line(line) for line in parts))

    def __str__(self) -> str:
        if not self.signatures:
            raise NoteError("a signed note needs at least one signature line")
        return self.text + "\n" + "".join(s.line() for s in self.signatures)

    def verified_by(self, verifiers: Iterable[Verifier]) -> list[Verifier]:
        """The verifiers (each once, in the order given) with a valid signature on this note.

        As in Go's reference, a key's first line decides (repeated lines are ignored) and
        lines of keys not among ``verifiers`` are ignored.
        """
        first: dict[tuple[str, bytes], Signature] = {}
        for signature in self.signatures:
            first.setdefault((signature.name, signature.key_id), signature)
        valid: list[Verifier] = []
        for verifier in verifiers:
            line = first.get((verifier.name, verifier.key_id))
            if line is not None and verifier not in valid and verifier.verify(self.text, line.payload):
                valid.append(verifier)
        return valid

    def open(self, verifiers: Iterable[Verifier]) -> list[Verifier]:
        """The verifiers with a valid signature, refusing the note as Go's ``note.Open`` does.

        A line of a known key (its name and key ID) that does not verify refuses the whole
        note, and so does a note that no known key signed.
        """
        known = list(dict.fromkeys(verifiers))
        valid = self.verified_by(known)
        for verifier in known:
            if verifier not in valid and self.signatures_by(verifier):
                raise NoteError(f"the signature of key {verifier.name}+{verifier.key_id.hex()} does not verify")
        if not valid:
            names = ", ".join(f"{v.name}+{v.key_id.hex()}" for v in known) or "none given"
            raise NoteError(f"the note carries no signature of a known key (known: {names})")
        return valid

    def signatures_by(self, verifier: Verifier) -> list[Signature]:
        """The lines carrying ``verifier``'s name and key ID (valid or not)."""
        return [s for s in self.signatures if (s.name, s.key_id) == (verifier.name, verifier.key_id)]

    def with_signatures(self, *sigs: Signature) -> Note:
        """This note with ``sigs`` added; a new line replaces an old one of the same name and key ID."""
        replaced = {(s.name, s.key_id) for s in sigs}
        kept = tuple(s for s in self.signatures if (s.name, s.key_id) not in replaced)
        return Note(self.text, kept + tuple(dict.fromkeys(sigs)))


@dataclass(frozen=True)
class Checkpoint:
    """A tlog checkpoint: the log's origin, its tree size and the RFC 9162 root hash, then extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin or "\n" in self.origin:
            raise NoteError("a checkpoint's origin is one non-empty line", "origin")
        _check_characters(self.origin, "the checkpoint's origin")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or not 0 <= self.size <= MAX_UINT64:
            raise NoteError(f"a checkpoint's tree size is a whole number from 0 to 2^64-1 (got {self.size!r:.40})", "size")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise NoteError(f"a checkpoint's root hash is {HASH_SIZE} bytes", "root_hash")
        for extension in self.extensions:
            if not isinstance(extension, str) or not extension or "\n" in extension:
                raise NoteError(f"a checkpoint's extension is one non-empty line (got {extension!r:.80})", "extensions")
            _check_characters(extension, "the checkpoint's extension line")

    def text(self) -> str:
        """The note text: origin, decimal size, base64 root, extension lines, each ending in a newline."""
        lines = [self.origin, str(self.size), _b64(self.root_hash), *self.extensions]
        return "".join(f"{line}\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """A checkpoint's note text, strictly: canonical decimal size, canonical base64 of a 32-byte root."""
        if not isinstance(text, str) or not text.endswith("\n"):
            raise NoteError("a checkpoint's text ends with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError(
                f"a checkpoint has at least three lines (origin, tree size, root hash); this one has {len(lines)}"
            )
        origin, size, root, *extensions = lines
        if not _DECIMAL.fullmatch(size) or int(size) > MAX_UINT64:
            raise NoteError(
                f"a checkpoint's second line is the tree size in decimal, without sign or leading zeros "
                f"(got {size!r:.40})", "size"
            )
        root_hash = _b64decode(root, "the checkpoint's root hash")
        if len(root_hash) != HASH_SIZE or _b64(root_hash) != root:
            raise NoteError(
                f"a checkpoint's third line is the base64 of a {HASH_SIZE}-byte root hash (got {root!r:.60})",
                "root_hash",
            )
        return cls(origin, int(size), root_hash, tuple(extensions))
