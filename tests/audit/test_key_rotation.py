"""Key rotation: during the stated overlap every checkpoint carries the old key's signature and
the new one's, so an auditor who pinned the old key follows to the new; after it, only the new
key signs and an auditor still on the old key is refused, told why.

The key files are real files; the end-to-end test runs `claims serve` and `claims audit-key
rotate` as processes, and `claims audit`'s own function as the auditors.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.remote import audit_ledger
from audit.signing import (
    CheckpointSigner,
    SigningKeyError,
    default_origin,
    load_keyring,
    load_or_create_key,
    previous_key_path,
    public_bytes,
    read_checkpoint_note,
    rotate_key,
    rotation_path,
)
from domain.errors import InvalidInput
from domain.note import Verifier
from store.settings import parse_duration, read_settings
from tests.audit.test_audit import seed
from tests.conftest import new_database_url
from tests.gocheck import GoCheck, go_check  # noqa: F401 - the session fixture
from tests.reliability.server import LedgerServer, make_token, wait_until

ROOT = hashlib.sha256(b"a tree").digest()
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "ledger-signing-key.pem"
    load_or_create_key(path)
    return path


# -- The key files -------------------------------------------------------------------------------


def test_a_rotation_keeps_the_old_key_private_for_the_overlap_and_the_origin_for_good(key_file: Path) -> None:
    first = load_keyring(key_file)
    origin = default_origin(public_bytes(first.current))
    assert first.origin == origin and first.previous is None
    rotated = rotate_key(key_file, timedelta(days=7), now=T0)
    for path in (key_file, previous_key_path(key_file), rotation_path(key_file)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert sorted(p.name for p in key_file.parent.iterdir()) == sorted(
        [key_file.name, previous_key_path(key_file).name, rotation_path(key_file).name])
    assert public_bytes(rotated.current) != public_bytes(first.current)
    assert rotated.previous is not None and public_bytes(rotated.previous) == public_bytes(first.current)
    assert rotated.origin == origin  # not the new key's default: the log keeps its name
    assert rotated.overlap_until == T0 + timedelta(days=7)
    during = rotated.signers(T0 + timedelta(days=6))
    assert [s.name for s in during] == [origin, origin]
    assert during[0].verifier.key_id != during[1].verifier.key_id
    assert [s.verifier for s in rotated.signers(T0 + timedelta(days=7))] == [rotated.verifier]
    assert load_keyring(key_file, "ledger.example.org/claims").origin == "ledger.example.org/claims"


def test_a_second_rotation_during_the_overlap_is_refused_unless_the_overlap_is_zero(key_file: Path) -> None:
    rotate_key(key_file, timedelta(hours=1), now=T0)
    with pytest.raises(SigningKeyError, match="overlap lasts until 2026-12-01T13:00:00Z"):
        rotate_key(key_file, timedelta(hours=1), now=T0 + timedelta(minutes=30))
    at_once = rotate_key(key_file, timedelta(0), now=T0 + timedelta(minutes=30))
    assert not previous_key_path(key_file).exists()
    assert at_once.signers(T0 + timedelta(minutes=31)) == [at_once.signer]
    later = rotate_key(key_file, timedelta(hours=1), now=T0 + timedelta(hours=2))
    assert later.previous is not None and public_bytes(later.previous) == public_bytes(at_once.current)


def test_a_rotation_needs_a_key_and_a_non_negative_overlap(tmp_path: Path, key_file: Path) -> None:
    with pytest.raises(SigningKeyError, match="no signing key at"):
        rotate_key(tmp_path / "absent.pem", timedelta(days=1))
    with pytest.raises(InvalidInput, match="must not be negative"):
        rotate_key(key_file, timedelta(seconds=-1))


def test_a_previous_key_file_that_is_not_the_recorded_one_is_refused(key_file: Path) -> None:
    rotate_key(key_file, timedelta(days=1), now=T0)
    stranger = Ed25519PrivateKey.generate()
    previous = previous_key_path(key_file)
    os.unlink(previous)
    load_or_create_key(previous)  # another key, written as safely
    assert public_bytes(load_or_create_key(previous)) != public_bytes(stranger)
    with pytest.raises(SigningKeyError, match="restore both from one backup"):
        load_keyring(key_file)


# -- The signer of checkpoints -------------------------------------------------------------------


def test_the_signer_signs_once_per_tree_head_and_follows_a_rotation_without_restart(key_file: Path) -> None:
    clock = Clock(T0)
    signer = CheckpointSigner(key_file, clock=clock)
    note = signer.note(5, ROOT)
    assert signer.note(5, ROOT) is note  # the same tree head: the note signed before
    assert signer.note(6, ROOT) is not note
    old = signer.keyring().verifier
    rotate_key(key_file, timedelta(hours=1), now=T0)
    both = signer.note(5, ROOT)
    new = signer.keyring().verifier
    assert new != old and both is not note
    assert both.verified_by([old, new]) == [old, new] and len(both.signatures) == 2
    assert read_checkpoint_note(str(both))[1].origin == old.name == new.name
    clock.now = T0 + timedelta(hours=1)  # the overlap is over: the new key alone
    alone = signer.note(5, ROOT)
    assert alone.verified_by([old, new]) == [new] and len(alone.signatures) == 1


# -- End to end ------------------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LedgerServer]:
    url = new_database_url("sqlite", tmp_path)
    seed(url)
    running = LedgerServer(url, tmp_path)
    running.start()
    yield running
    running.stop()


def test_auditors_follow_a_rotation_during_the_overlap_and_are_refused_on_the_old_key_after_it(
    server: LedgerServer, tmp_path: Path, go_check: GoCheck,  # noqa: F811
) -> None:
    token = make_token(server.database_url, "auditor")[1]
    server.wait_projected()

    def audit(kept: Path) -> list[str]:
        report = audit_ledger(server.base, kept, token=token)
        return [*report.notes, *(f"problem: {p}" for p in report.problems)] + (["saved"] if report.saved else [])

    def keys() -> dict[str, object]:
        return dict(httpx.get(server.base + "/v1/audit/public-key", timeout=5).json())

    following, lagging = tmp_path / "following.json", tmp_path / "lagging.json"
    assert audit(following)[-1] == "saved" and audit(lagging)[-1] == "saved"
    old = Verifier.parse(str(keys()["verifier_key"]))

    rotated = server.claims("audit-key", "rotate", "--overlap", "6s")
    assert rotated.returncode == 0, rotated.stderr
    assert "every checkpoint is signed by both keys" in rotated.stdout
    new = Verifier.parse(str(keys()["verifier_key"]))
    assert new.name == old.name and new.key_id != old.key_id
    assert keys()["previous"] == {"public_key": old.public_key.hex(), "verifier_key": str(old),
                                  "signs_until": keys()["previous"]["signs_until"]}  # type: ignore[index]
    served = httpx.get(server.base + "/checkpoint", timeout=5).content
    note, _ = read_checkpoint_note(served)
    assert note.verified_by([old, new]) == [old, new] and [s.name for s in note.signatures] == [old.name] * 2
    for vkey in (old, new):  # Go's note.Open takes the note with either key alone
        assert go_check.run("note-verify", str(vkey), stdin=served).returncode == 0

    followed = audit(following)
    assert followed == [
        f"the ledger rotated its signing key: this checkpoint is signed by the pinned key {old} and by the key the "
        f"ledger now announces, {new}; the pin moves to the new key, saved with the checkpoint",
        "saved",
    ]
    assert json.loads(following.read_text())["verifier_key"] == str(new)

    wait_until(lambda: keys()["previous"] is None, 15, "the overlap is over")
    note, _ = read_checkpoint_note(httpx.get(server.base + "/checkpoint", timeout=5).content)
    assert note.verified_by([old, new]) == [new] and len(note.signatures) == 1

    before = lagging.read_text()
    refused = audit(lagging)
    assert refused[0] == f"problem: the server presents the public key {new.public_key.hex()}, not the pinned " \
                         f"{old.public_key.hex()}"
    assert refused[1].startswith("problem: the server's checkpoint (tree_size 6) is not signed by the pinned key; "
                                 "nothing it serves can be trusted. It announces the key ")
    assert "the overlap in which its checkpoints carried the old key and the new is over" in refused[1]
    assert len(refused) == 2 and lagging.read_text() == before
    assert audit(following) == ["saved"]  # on the new key, nothing to say


# -- The overlap's length --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "length"), [
    ("0", timedelta(0)), ("90s", timedelta(seconds=90)), ("36h", timedelta(hours=36)),
    ("1d12h", timedelta(days=1, hours=12)), ("2w", timedelta(weeks=2)), (" 7d ", timedelta(days=7)),
])
def test_an_overlap_is_written_as_parts_of_a_duration(text: str, length: timedelta) -> None:
    assert parse_duration(text) == length


@pytest.mark.parametrize("text", ["", "7", "1.5d", "-1d", "7 d", "1y", "d", "7dd"])
def test_an_overlap_that_is_not_a_duration_is_refused_saying_how_to_write_one(
    text: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(InvalidInput, match="is not a duration: write <n> followed by s, m, h, d or w"):
        parse_duration(text, "--overlap")
    if text.strip():
        monkeypatch.setenv("LEDGER_KEY_ROTATION_OVERLAP", text)
        with pytest.raises(InvalidInput, match="LEDGER_KEY_ROTATION_OVERLAP is refused"):
            read_settings()
