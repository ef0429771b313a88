"""domain/note.py: signed notes, checkpoints and cosignatures, against Go's reference vectors."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.note import (
    COSIGNATURE_V1,
    ED25519,
    Checkpoint,
    Note,
    NoteError,
    Signature,
    Signer,
    Verifier,
    key_id,
)

# The keys and notes of golang.org/x/mod/sumdb/note's note_test.go.
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)


def peter_signer() -> Signer:
    """Go's PRIVATE+KEY+<name>+<id>+<base64(0x01 ‖ seed)> test key as a Signer."""
    seed = base64.b64decode(PETER_SKEY.split("+", 4)[4])
    assert seed[0] == ED25519
    return Signer("PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed[1:]))


PETER = Verifier.parse(PETER_VKEY)
ENOCH = Verifier.parse(ENOCH_VKEY)


# --- keys ---------------------------------------------------------------------------------

def test_the_key_id_is_the_head_of_sha256_of_name_newline_algorithm_and_key() -> None:
    raw = base64.b64decode(PETER_VKEY.split("+", 2)[2])
    assert key_id("PeterNeumann", raw[0], raw[1:]) == bytes.fromhex("c74f20a3")
    assert key_id("PeterNeumann", raw[0], raw[1:]) == hashlib.sha256(b"PeterNeumann\n" + raw).digest()[:4]
    assert PETER.key_id == bytes.fromhex("c74f20a3") and PETER.alg == ED25519 and len(PETER.public_key) == 32


def test_a_verifier_key_round_trips_and_the_signer_matches_it() -> None:
    assert str(PETER) == PETER_VKEY and str(ENOCH) == ENOCH_VKEY
    assert peter_signer().verifier == PETER
    assert str(Verifier.of("PeterNeumann", PETER.public_key)) == PETER_VKEY


def test_every_mangling_of_a_verifier_key_is_refused() -> None:
    """As Go's TestNewVerifier: every proper substring, and every byte changed by one."""
    b = PETER_VKEY
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if (i, j) != (0, len(b)):
                with pytest.raises(NoteError):
                    Verifier.parse(b[i:j])
    for i in range(len(b)):
        with pytest.raises(NoteError):
            Verifier.parse(b[:i] + chr(ord(b[i]) + 1) + b[i + 1:])


@pytest.mark.parametrize(("vkey", "says"), [
    # Go's two: a wrong-length key and an unknown algorithm, each with a matching key hash.
    ("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==", "32 bytes"),
    ("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "unknown signature algorithm"),
    ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
    ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "whitespace"),
    ("+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "empty"),
    ("PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "not a verifier key"),
    ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T", "base64"),
    ("PeterNeumann+c74f20a3", "not a verifier key"),
])
def test_a_bad_verifier_key_says_what_is_wrong(vkey: str, says: str) -> None:
    with pytest.raises(NoteError, match=says):
        Verifier.parse(vkey)


def test_key_names_have_no_whitespace_and_no_plus() -> None:
    key = Ed25519PrivateKey.generate()
    for bad in ["", "a b", "a+b", "tab\there", "nbsp\u00a0x"]:
        with pytest.raises(NoteError):
            Signer(bad, key)
    assert Signer("example.com/log", key).name == "example.com/log"


# --- signing and opening, Go's TestSign and TestOpen ---------------------------------------

def test_signing_gives_gos_note_byte_for_byte() -> None:
    signature = peter_signer().sign(TEXT)
    assert signature.line() == PETER_SIG
    assert str(Note(TEXT, (signature,))) == TEXT + "\n" + PETER_SIG
    # A new line of the same key replaces the old one, as Go's Sign does.
    stale = Signature("PeterNeumann", bytes.fromhex("c74f20a3"), b"BADSIGN")
    assert str(Note(TEXT, (stale,)).with_signatures(signature)) == TEXT + "\n" + PETER_SIG


def test_signing_refuses_a_text_without_its_final_newline() -> None:
    with pytest.raises(NoteError, match="newline"):
        peter_signer().sign("abc")


def test_one_signature_verified_and_one_from_an_unknown_key_ignored() -> None:
    note = Note.parse(TEXT + "\n" + PETER_SIG + ENOCH_SIG)
    assert note.text == TEXT
    assert [s.line() for s in note.signatures] == [PETER_SIG, ENOCH_SIG]
    assert note.verified_by([PETER]) == [PETER]
    assert note.verified_by([PETER, ENOCH]) == [PETER, ENOCH]
    assert note.verified_by([]) == []
    assert str(note) == TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert Note.parse((TEXT + "\n" + PETER_SIG).encode()) == Note(TEXT, (Signature.parse_line(PETER_SIG),))


def test_an_altered_signature_or_text_is_not_verified() -> None:
    assert Note.parse(TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]).verified_by([PETER]) == []
    assert Note.parse(TEXT.replace("think", "th\u0131nk") + "\n" + PETER_SIG).verified_by([PETER]) == []
    # Another key's line under Peter's name and ID does not verify either.
    misnamed = PETER_SIG.replace("PeterNeumann", "CarmenSandiego")
    assert Note.parse(TEXT + "\n" + misnamed).verified_by([PETER]) == []


def test_repeated_lines_count_once_and_the_first_line_of_a_key_decides() -> None:
    note = Note.parse(TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG)
    assert note.verified_by([PETER, PETER, ENOCH]) == [PETER, ENOCH]
    bad_first = Note.parse(TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:] + PETER_SIG)
    assert bad_first.verified_by([PETER]) == []


def test_at_most_a_hundred_signatures() -> None:
    assert len(Note.parse(TEXT + "\n" + PETER_SIG * 100).signatures) == 100
    with pytest.raises(NoteError, match="at most 100"):
        Note.parse(TEXT + "\n" + PETER_SIG * 101)


@pytest.mark.parametrize(("message", "says"), [
    # Go's badMsgs, in order.
    (TEXT, "blank line"),
    (TEXT + "\n", "at least one signature"),
    (TEXT + "\n" + PETER_SIG[:-1], "end with a newline"),
    ("\x01" + TEXT + "\n" + PETER_SIG, r"U\+0001"),
    (b"\xff" + (TEXT + "\n" + PETER_SIG).encode(), "UTF-8"),
    (TEXT + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
     "newline"),
    (TEXT + "\n" + PETER_SIG + "Unexpected line.\n", "em dash"),
    # And the other ways a line can be wrong.
    (TEXT + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n",
     "base64"),
    (TEXT + "\n" + "— a+b x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n",
     "'\\+'"),
    (TEXT + "\n" + "— PeterNeumann\n", "no signature"),
    (TEXT + "\n" + "— PeterNeumann x08go/Z\n", "base64"),
    (TEXT + "\n" + "— PeterNeumann x08g\n", "4-byte key ID and more"),
    (TEXT + "\n" + "- PeterNeumann x08go/ZJ\n", "em dash"),
    (TEXT + "\n" + "—PeterNeumann x08go/ZJ\n", "em dash"),
    (TEXT + "\r\n" + PETER_SIG, r"U\+000D"),
    ("a\ud800\n\n" + PETER_SIG, r"U\+D800"),
    (42, "is text"),
])
def test_every_malformed_note_is_refused_saying_why(message: str | bytes, says: str) -> None:
    with pytest.raises(NoteError, match=says):
        Note.parse(message)


def test_a_note_text_may_hold_blank_lines_the_last_blank_line_separates() -> None:
    text = "first\n\nsecond\n"
    signer = peter_signer()
    note = Note(text, (signer.sign(text),))
    assert Note.parse(str(note)) == note and note.verified_by([PETER]) == [PETER]


def test_a_note_without_signatures_has_no_text_form() -> None:
    with pytest.raises(NoteError, match="at least one signature"):
        str(Note(TEXT))


def test_two_keys_of_one_name_sign_side_by_side_and_each_verifies() -> None:
    old, new = Signer("example.com/log", Ed25519PrivateKey.generate()), Signer("example.com/log", Ed25519PrivateKey.generate())
    note = Note(TEXT).with_signatures(old.sign(TEXT), new.sign(TEXT))
    assert old.verifier.key_id != new.verifier.key_id
    parsed = Note.parse(str(note))
    assert parsed.verified_by([new.verifier]) == [new.verifier]
    assert parsed.verified_by([old.verifier, new.verifier]) == [old.verifier, new.verifier]
    assert parsed.signatures_by(new.verifier) == [note.signatures[1]]


# --- cosignatures ---------------------------------------------------------------------------

def witness() -> Signer:
    return Signer("witness.example/w1", Ed25519PrivateKey.from_private_bytes(bytes(range(32))), COSIGNATURE_V1)


def test_a_cosignature_signs_header_time_and_checkpoint_and_round_trips() -> None:
    checkpoint = Checkpoint("example.com/log", 5, bytes(32)).text()
    signer = witness()
    cosignature = signer.sign(checkpoint, timestamp=1_700_000_000)
    assert cosignature.timestamp == 1_700_000_000
    assert len(cosignature.payload) == 72 and cosignature.payload[:8] == (1_700_000_000).to_bytes(8, "big")
    message = f"cosignature/v1\ntime 1700000000\n{checkpoint}".encode()
    signer.private_key.public_key().verify(cosignature.payload[8:], message)  # raises if not this message
    vkey = str(signer.verifier)
    assert vkey.startswith("witness.example/w1+") and base64.b64decode(vkey.split("+", 2)[2])[0] == 0x04
    assert signer.verifier.key_id == hashlib.sha256(
        b"witness.example/w1\n\x04" + signer.verifier.public_key).digest()[:4]
    assert Verifier.parse(vkey) == signer.verifier
    log = Signer("example.com/log", Ed25519PrivateKey.generate())
    note = Note.parse(str(Note(checkpoint, (log.sign(checkpoint), cosignature))))
    assert note.verified_by([log.verifier, Verifier.parse(vkey)]) == [log.verifier, signer.verifier]
    assert note.signatures[0].timestamp is None and note.signatures[1].timestamp == 1_700_000_000


def test_a_cosignature_with_another_time_or_checkpoint_does_not_verify() -> None:
    checkpoint = Checkpoint("example.com/log", 5, bytes(32)).text()
    signer = witness()
    cosignature = signer.sign(checkpoint, timestamp=10)
    retimed = (11).to_bytes(8, "big") + cosignature.payload[8:]
    assert signer.verifier.verify(checkpoint, cosignature.payload)
    assert not signer.verifier.verify(checkpoint, retimed)
    assert not signer.verifier.verify(Checkpoint("example.com/log", 6, bytes(32)).text(), cosignature.payload)
    assert not signer.verifier.verify(checkpoint, cosignature.payload[8:])  # too short for 0x04
    # The same key under algorithm 0x01 is another verifier, with another key ID.
    plain = Verifier.of(signer.name, signer.verifier.public_key)
    assert plain.key_id != signer.verifier.key_id and not plain.verify(checkpoint, cosignature.payload)


def test_a_cosignature_needs_its_timestamp_and_a_plain_signature_has_none() -> None:
    with pytest.raises(NoteError, match="timestamp"):
        witness().sign(TEXT)
    with pytest.raises(NoteError, match="timestamp"):
        witness().sign(TEXT, timestamp=-1)
    with pytest.raises(NoteError, match="no timestamp"):
        peter_signer().sign(TEXT, timestamp=1)


# --- checkpoints -----------------------------------------------------------------------------

def test_a_checkpoint_text_round_trips_with_extensions() -> None:
    root = hashlib.sha256(b"root").digest()
    checkpoint = Checkpoint("example.com/log/abc", 1234, root, ("ext one", "ext-two"))
    text = checkpoint.text()
    assert text == f"example.com/log/abc\n1234\n{base64.b64encode(root).decode()}\next one\next-two\n"
    assert Checkpoint.parse(text) == checkpoint
    assert Checkpoint.parse("o\n0\n" + base64.b64encode(bytes(32)).decode() + "\n") == Checkpoint("o", 0, bytes(32))
    assert Checkpoint.parse(f"o\n{2**64 - 1}\n{base64.b64encode(root).decode()}\n").size == 2**64 - 1


ROOT64 = base64.b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize(("text", "says"), [
    (f"o\n1\n{ROOT64}", "ends with a newline"),
    ("o\n1\n", "at least three lines"),
    (f"o\n01\n{ROOT64}\n", "leading zeros"),
    (f"o\n+1\n{ROOT64}\n", "without sign"),
    (f"o\n-1\n{ROOT64}\n", "without sign"),
    (f"o\n1.0\n{ROOT64}\n", "decimal"),
    (f"o\n\n{ROOT64}\n", "decimal"),
    (f"o\n{2**64}\n{ROOT64}\n", "decimal"),
    (f"o\n\uff11\n{ROOT64}\n", "decimal"),
    (f"\n1\n{ROOT64}\n", "origin"),
    (f"o\n1\n{ROOT64[:-4]}\n", "32-byte root"),
    (f"o\n1\n{base64.b64encode(bytes(33)).decode()}\n", "32-byte root"),
    (f"o\n1\n{ROOT64.rstrip('=')}\n", "base64"),
    (f"o\n1\n{base64.urlsafe_b64encode(bytes([251]) * 32).decode()}\n", "base64"),
    (f"o\n1\n{ROOT64[:-2]}9=\n", "32-byte root"),  # non-canonical trailing bits
    (f"o\n1\n{ROOT64}\n\n", "extension"),
    (f"o\n1\n{ROOT64}\nbell\x07\n", r"U\+0007"),
])
def test_every_malformed_checkpoint_is_refused_saying_why(text: str, says: str) -> None:
    with pytest.raises(NoteError, match=says):
        Checkpoint.parse(text)


def test_a_checkpoint_cannot_be_made_out_of_range() -> None:
    for bad in [
        lambda: Checkpoint("o", -1, bytes(32)),
        lambda: Checkpoint("o", 1, bytes(31)),
        lambda: Checkpoint("", 1, bytes(32)),
        lambda: Checkpoint("o\nx", 1, bytes(32)),
        lambda: Checkpoint("o", 1, bytes(32), ("",)),
        lambda: Checkpoint("o", True, bytes(32)),
    ]:
        with pytest.raises(NoteError):
            bad()


def test_a_signed_checkpoint_is_what_gos_note_open_would_accept() -> None:
    signer = Signer("example.com/log", Ed25519PrivateKey.generate())
    text = Checkpoint("example.com/log", 3, hashlib.sha256(b"x").digest()).text()
    served = str(Note(text, (signer.sign(text),)))
    note = Note.parse(served)
    assert note.verified_by([Verifier.parse(str(signer.verifier))]) == [signer.verifier]
    assert Checkpoint.parse(note.text).size == 3


def test_open_refuses_as_go_does_a_bad_line_of_a_known_key_or_no_known_signature() -> None:
    assert Note.parse(TEXT + "\n" + PETER_SIG + ENOCH_SIG).open([PETER]) == [PETER]
    with pytest.raises(NoteError, match="PeterNeumann\\+c74f20a3 does not verify"):
        Note.parse(TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]).open([PETER])
    with pytest.raises(NoteError, match="no signature of a known key"):
        Note.parse(TEXT + "\n" + PETER_SIG + ENOCH_SIG).open([])
    with pytest.raises(NoteError, match="no signature of a known key"):
        Note.parse(TEXT + "\n" + ENOCH_SIG).open([PETER])
