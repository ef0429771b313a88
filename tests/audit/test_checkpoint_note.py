"""Checkpoints as C2SP signed notes, served by a real `claims serve` on both backends, checked
by our note module and by Go's reference `note.Open`; and the auditor's move from a checkpoint
kept in the former JSON format to a kept note.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.remote import audit_ledger
from audit.signing import PinnedKey, default_origin, load_or_create_key, read_checkpoint_note
from domain.errors import InvalidInput
from domain.merkle import event_leaf_hash, root_of
from domain.note import Verifier
from store.settings import read_settings
from tests.audit.proxy import TamperingProxy
from tests.audit.test_audit import record_more, seed
from tests.audit.test_signing import former_checkpoint
from tests.conftest import drop_schema, new_database_url
from tests.gocheck import GoCheck, go_check  # noqa: F401 - the session fixture
from tests.reliability.server import LedgerServer, make_token

WHEN = "2026-11-30T12:00:00Z"


@dataclass
class Served:
    server: LedgerServer
    token: str
    http: httpx.Client

    def get(self, path: str, *, token: bool = False, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if token else {}
        response = self.http.get(path, params=params, headers=headers)
        assert response.status_code == 200, response.text
        return response

    def keys(self) -> dict[str, Any]:
        return dict(self.get("/v1/audit/public-key").json())

    def leaves(self) -> list[bytes]:
        items = self.get("/v1/events", token=True, limit=10_000).json()["items"]
        return [event_leaf_hash(item["hash"]) for item in items]

    def audit(self, kept: Path, base: str | None = None) -> Any:
        self.server.wait_projected()
        return audit_ledger(base or self.server.base, kept, token=self.token)

    @property
    def key_file(self) -> Path:
        return self.server.workdir / "ledger-signing-key.pem"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("checkpoint-note")
    url = new_database_url(str(request.param), workdir)
    seed(url)
    server = LedgerServer(url, workdir)
    http = httpx.Client(base_url=server.base, timeout=10)
    try:
        server.start()
        server.wait_projected()
        yield Served(server, make_token(url, "auditor")[1], http)
    finally:
        http.close()
        server.stop()
        drop_schema(url)


# -- The endpoints -------------------------------------------------------------------------------


def test_get_checkpoint_is_the_signed_note_of_the_current_tree_open_to_all(served: Served) -> None:
    response = served.get("/checkpoint")
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["cache-control"] == "public, max-age=5"
    note, checkpoint = read_checkpoint_note(response.content)
    keys = served.keys()
    verifier = Verifier.parse(keys["verifier_key"])
    assert note.open([verifier]) == [verifier] and len(note.signatures) == 1
    assert verifier.public_key.hex() == keys["public_key"] and keys["previous"] is None
    # The key name is the origin, by default made from the key.
    assert checkpoint.origin == verifier.name == keys["origin"] == default_origin(verifier.public_key)
    assert checkpoint.extensions == ()
    leaves = served.leaves()
    assert checkpoint.size == len(leaves) >= 6 and checkpoint.root_hash == root_of(leaves)
    assert response.text == note.text + "\n" + note.signatures[0].line()


def test_the_json_checkpoint_carries_the_same_note_and_says_what_it_says(served: Served) -> None:
    answer = served.get("/v1/audit/checkpoint").json()
    note, checkpoint = read_checkpoint_note(answer["note"])
    assert answer == {
        "origin": checkpoint.origin, "tree_size": checkpoint.size, "root_hash": checkpoint.root_hash.hex(),
        "note": served.get("/checkpoint").text, "cosignatures": [],
    }
    assert note.open([Verifier.parse(served.keys()["verifier_key"])])


def test_the_same_tree_gives_the_same_note_and_a_longer_tree_a_new_one(served: Served) -> None:
    first = served.get("/checkpoint").text
    assert served.get("/checkpoint").text == first
    record_more(served.server.database_url, 1, prefix="note-growth")
    served.server.wait_projected()
    _, grown = read_checkpoint_note(served.get("/checkpoint").text)
    _, before = read_checkpoint_note(first)
    assert grown.size == before.size + 1 and grown.root_hash == root_of(served.leaves())


def test_gos_note_open_accepts_the_served_checkpoint_and_refuses_another_key(
    go_check: GoCheck, served: Served,  # noqa: F811
) -> None:
    served_note = served.get("/checkpoint").content
    vkey = served.keys()["verifier_key"]
    opened = go_check.run("note-verify", vkey, stdin=served_note)
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout == read_checkpoint_note(served_note)[0].text
    impostor = Verifier.of(Verifier.parse(vkey).name, Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    refused = go_check.run("note-verify", str(impostor), stdin=served_note)
    assert refused.returncode == 1 and "note has no verifiable signatures" in refused.stderr


def test_claims_audit_key_json_is_what_the_public_key_endpoint_serves(served: Served) -> None:
    printed = served.server.claims("audit-key", "--json")  # its text form: tests/audit/test_audit.py
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == served.keys()


# -- The origin ----------------------------------------------------------------------------------


def test_ledger_log_origin_names_the_log_and_its_key(tmp_path: Path) -> None:
    server = LedgerServer(f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path,
                          extra_env={"LEDGER_LOG_ORIGIN": "ledger.example.org/claims"})
    keys = json.loads(server.claims("audit-key", "--json").stdout)
    assert keys["origin"] == "ledger.example.org/claims"
    assert keys["verifier_key"].startswith("ledger.example.org/claims+")
    assert Verifier.parse(keys["verifier_key"]).public_key.hex() == keys["public_key"]


@pytest.mark.parametrize("bad", ["ledger example", "ledger+claims", "ledger\u2003x"])
def test_an_origin_that_cannot_name_a_key_is_refused_saying_why(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_LOG_ORIGIN", bad)
    with pytest.raises(InvalidInput, match=r"LEDGER_LOG_ORIGIN is refused: .* holds whitespace or '\+'"):
        read_settings()


# -- The auditor -----------------------------------------------------------------------------------


def test_the_auditor_keeps_the_note_and_the_verifier_key(served: Served, tmp_path: Path) -> None:
    kept = tmp_path / "checkpoint.json"
    report = served.audit(kept)
    assert report.ok, report.lines()
    saved = json.loads(kept.read_text())
    note, checkpoint = read_checkpoint_note(saved["note"])
    assert saved["verifier_key"] == served.keys()["verifier_key"]
    assert (saved["origin"], saved["tree_size"], saved["root_hash"]) == (
        checkpoint.origin, checkpoint.size, checkpoint.root_hash.hex())
    assert note.open([Verifier.parse(saved["verifier_key"])])
    assert f"origin {checkpoint.origin}" in report.lines()[1]


def former_kept(served: Served, size: int, root: bytes, **changes: Any) -> dict[str, Any]:
    """A checkpoint kept in the former JSON format, signed by the ledger's own key, as `claims
    audit` saved it (with the pinned key beside it)."""
    key = load_or_create_key(served.key_file)
    kept = former_checkpoint(key, size, root.hex(), WHEN)
    return {**kept, **changes, "public_key": served.keys()["public_key"]}


def test_a_kept_checkpoint_in_the_former_json_format_is_accepted_once_and_a_note_kept_instead(
    served: Served, tmp_path: Path,
) -> None:
    leaves = served.leaves()
    kept = tmp_path / "checkpoint.json"
    kept.write_text(json.dumps(former_kept(served, 3, root_of(leaves[:3]))))
    report = served.audit(kept)
    assert report.ok, report.lines()
    assert report.notes == [
        "the kept checkpoint (3 events) is in the former JSON format: its signature holds under the pinned key, "
        "and it is replaced by the new checkpoint, a signed note, when all checks hold"
    ]
    saved = json.loads(kept.read_text())
    assert set(saved) == {"origin", "tree_size", "root_hash", "note", "verifier_key"}
    assert saved["tree_size"] >= len(leaves)
    again = served.audit(kept)
    assert again.ok and again.notes == [], again.lines()


@pytest.mark.parametrize(("change", "found"), [
    ("tree_size", "the kept checkpoint's signature does not verify with the pinned key: the file was altered"),
    ("root", "the consistency proof from 3 to "),
])
def test_a_former_json_checkpoint_altered_or_of_another_tree_is_refused_and_left_as_it_was(
    served: Served, tmp_path: Path, change: str, found: str,
) -> None:
    leaves = served.leaves()
    if change == "tree_size":  # signed, then changed on disk
        former = former_kept(served, 3, root_of(leaves[:3]), tree_size=2)
    else:  # signed by the ledger's key, but of a tree the log never had
        former = former_kept(served, 3, hashlib.sha256(b"another history").digest())
    kept = tmp_path / "checkpoint.json"
    kept.write_text(json.dumps(former))
    report = served.audit(kept)
    assert not report.ok and not report.saved
    assert len(report.problems) == 1 and report.problems[0].startswith(found), report.lines()
    assert json.loads(kept.read_text()) == former


def test_a_note_altered_in_flight_or_fields_that_differ_from_it_are_refused(served: Served, tmp_path: Path) -> None:
    kept = tmp_path / "checkpoint.json"
    assert served.audit(kept).ok
    before = kept.read_text()
    size = json.loads(before)["tree_size"]

    def resize(path: str, body: bytes) -> bytes:  # the note's size line, signature left as it was
        if path != "/v1/audit/checkpoint":
            return body
        answer = json.loads(body)
        answer["note"] = answer["note"].replace(f"\n{size}\n", f"\n{size + 1}\n", 1)
        return json.dumps(answer).encode()

    def misstate(path: str, body: bytes) -> bytes:  # the JSON's readable copy only
        return body.replace(b'"tree_size":', b'"tree_size":1', 1) if path == "/v1/audit/checkpoint" else body

    proxy = TamperingProxy(served.server.base, resize)
    try:
        forged = served.audit(kept, proxy.base)
        assert forged.problems == [f"the server's checkpoint (tree_size {size + 1}) is not signed by the pinned key; "
                                   "nothing it serves can be trusted"]
        proxy.rewrite = misstate
        misstated = served.audit(kept, proxy.base)
        assert len(misstated.problems) == 1, misstated.lines()
        assert misstated.problems[0].startswith(f"the server's checkpoint says {{'origin': '{json.loads(before)['origin']}'")
    finally:
        proxy.close()
    assert proxy.changed >= 2 and kept.read_text() == before


# -- The verifier in docs/auditing.md ----------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "auditing.md"


def doc_code(heading: str) -> str:
    """The first Python block after `heading` in docs/auditing.md."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index(f"\n{heading}\n"):]
    start = section.index("```python\n") + len("```python\n")
    return section[start:section.index("\n```", start)]


def test_the_verifier_in_the_docs_checks_a_served_checkpoint_and_refuses_a_changed_one(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = doc_code("### Verifying a checkpoint in your own code")
    assert len(code.splitlines()) <= 32 and "import base64, hashlib" in code
    scope: dict[str, Any] = {}
    exec(compile(code, str(DOC), "exec"), scope)
    verify = scope["verify_checkpoint"]
    note, vkey = served.get("/checkpoint").text, str(served.keys()["verifier_key"])
    _, checkpoint = read_checkpoint_note(note)
    assert verify(note, vkey) == (checkpoint.origin, checkpoint.size, checkpoint.root_hash)
    witness = Verifier.of("witness.example/w", Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    foreign = f"— {witness.name} {base64.b64encode(witness.key_id + bytes(72)).decode()}\n"
    assert verify(note + foreign, vkey)[1] == checkpoint.size  # another key's line is ignored
    with pytest.raises(InvalidSignature):
        verify(note.replace(f"\n{checkpoint.size}\n", f"\n{checkpoint.size + 1}\n", 1), vkey)
    with pytest.raises(ValueError, match="no signature by"):
        verify(note, str(Verifier.of(checkpoint.origin, witness.public_key)))
    with pytest.raises(ValueError, match="ID does not match"):
        verify(note, vkey.replace(vkey.split("+")[1], "00000000"))

    # The complete check of a saved feed against the note, as the docs run it.
    monkeypatch.chdir(tmp_path)
    feed = served.http.get("/v1/events", headers={"Accept": "application/x-ndjson",
                                                  "Authorization": f"Bearer {served.token}"})
    (tmp_path / "feed.ndjson").write_bytes(feed.content)
    (tmp_path / "checkpoint.note").write_text(note, encoding="utf-8")
    (tmp_path / "ledger.vkey").write_text(vkey + "\n")
    exec(compile(doc_code("## Checking it in your own code"), str(DOC), "exec"), scope)  # raises if a check fails
    (tmp_path / "feed.ndjson").write_bytes(feed.content.replace(b'"version":2', b'"version":3', 1))
    with pytest.raises(AssertionError):
        exec(compile(doc_code("## Checking it in your own code"), str(DOC), "exec"), scope)


# -- The pinned key ----------------------------------------------------------------------------------


def test_a_key_pinned_as_a_verifier_key_hex_or_the_endpoints_json_is_the_same_key(
    served: Served, tmp_path: Path,
) -> None:
    keys = served.keys()
    verifier = Verifier.parse(keys["verifier_key"])
    for text in (keys["verifier_key"], keys["public_key"].upper() + "\n", json.dumps(keys)):
        pinned = PinnedKey.parse(text)
        assert pinned.public_key == verifier.public_key and pinned.verifier(keys["origin"]) == verifier
    for bad, says in [("00" * 31, "64 hex digits"), (keys["verifier_key"][:-4], "not a verifier key"),
                      ('{"algorithm": "ed25519"}', "neither verifier_key nor public_key")]:
        with pytest.raises(InvalidInput, match=says):
            PinnedKey.parse(bad)
    pin = tmp_path / "ledger.vkey"
    pin.write_text(keys["verifier_key"] + "\n")
    kept = tmp_path / "checkpoint.json"
    report = audit_ledger(served.server.base, kept, public_key_file=pin, token=served.token)
    assert report.ok and report.notes == [], report.lines()  # pinned beforehand: no trust on first use
    assert json.loads(kept.read_text())["verifier_key"] == keys["verifier_key"]
