"""Auditing a running ledger over HTTP: signed checkpoints, RFC 9162 proofs, and `claims audit`.

Every test runs the real server (`claims serve` in a subprocess) on its own database and
audits it with a token made by `claims token create --role auditor`. The tampering a test
does is what someone with write access to the database could do: change the stored events,
rebuild the projections from them, and keep serving.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.remote import AuditReport, audit_ledger
from audit.rollback import kept_path
from audit.signing import public_key_hex, read_checkpoint_note
from domain.merkle import event_leaf_hash, verify_consistency, verify_inclusion
from domain.note import Verifier
from projections.merkle import MerkleLog
from service.runtime import Runtime
from store.event_store import open_ledger
from store.settings import Database
from tests.conftest import drop_schema, new_database_url
from tests.story import CLAIM_KEY, ELTON, PESKOV, STATEMENT, elton_asserts, peskov_denies

SECOND_KEY = "elton-john-met-putin"
CLAIMS = [str(Path(sys.executable).with_name("claims"))] if Path(sys.executable).with_name("claims").exists() \
    else [sys.executable, "-c", "from cli.main import main; main()"]
START_TIMEOUT = 30.0


@dataclass
class Server:
    """`claims serve` on a free port, and an auditor's token for it."""

    database_url: str
    base: str
    token: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str, *, token: str | None = "auditor", **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token if token == 'auditor' else token}"} if token else {}
        return httpx.get(self.base + path, params=params, headers=headers, timeout=10)

    def audit(self, checkpoint: Path, public_key: Path | None = None) -> AuditReport:
        self.wait_projected()
        return audit_ledger(self.base, checkpoint, public_key_file=public_key, token=self.token)

    def claims(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLAIMS, *args], env=self.env, capture_output=True, text=True, timeout=60)

    def wait_projected(self) -> None:
        """Until the server's projections have every event in the store."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            projections = httpx.get(self.base + "/healthz", timeout=5).json()["projections"]
            if projections["lag"] == 0:
                return
            time.sleep(0.05)
        raise AssertionError(f"the server's projections did not catch up: {projections}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(database_url: str, workdir: Path) -> Server:
    env = {**os.environ, "LEDGER_DATABASE_URL": database_url,
           "LEDGER_SIGNING_KEY_FILE": str(workdir / "ledger-signing-key.pem")}
    made = subprocess.run([*CLAIMS, "token", "create", "--role", "auditor"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    port = free_port()
    log = workdir / f"serve-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*CLAIMS, "serve", "--port", str(port), "--log-level", "warning"],
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(database_url, f"http://127.0.0.1:{port}", made.stdout.strip(), env, process, log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"claims serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(server.base + "/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    server.stop()
    raise AssertionError(f"claims serve did not answer within {START_TIMEOUT} s:\n{log.read_text()}")


def seed(database_url: str) -> None:
    """Six events: the seed story on one claim, interleaved with a second claim."""
    ledger = open_ledger(Database.from_url(database_url))
    try:
        ledger.register_claim(STATEMENT, key=CLAIM_KEY, subjects=["Vladimir Putin", "Elton John"])
        ledger.assert_claim(CLAIM_KEY, **elton_asserts())
        ledger.register_claim("Elton John met Vladimir Putin in Moscow", key=SECOND_KEY)
        ledger.deny_claim(CLAIM_KEY, **peskov_denies())
        ledger.assert_claim(SECOND_KEY, act_id="elton-bbc", party=ELTON, said_at="2015-09-12")
        ledger.retract_act(CLAIM_KEY, act_id="elton-retracts", retracts="elton-instagram", party=ELTON)
    finally:
        ledger.close()


def record_more(database_url: str, count: int, prefix: str = "more") -> None:
    """`count` new events: claims registered later, as the ledger goes on growing."""
    ledger = open_ledger(Database.from_url(database_url))
    try:
        for i in range(count):
            ledger.register_claim(f"Dmitry Peskov commented on the call, part {i}", key=f"{prefix}-{i}")
    finally:
        ledger.close()


def rebuild_projections(database_url: str) -> None:
    """What an operator does after rewriting the store: rebuild, online, while the server serves."""
    rt = Runtime.open(database_url)
    try:
        rt.engine.rebuild()
    finally:
        rt.close()


def forget_signed_trees(workdir: Path) -> None:
    """What a tamperer with the machine also does: wipe the largest tree the ledger signed, kept
    beside its key (audit/rollback.py), without which the ledger itself refuses to sign the
    rewritten log. The auditor must catch it on its own."""
    kept_path(workdir / "ledger-signing-key.pem").unlink()


def sqlite_events(database_url: str, sql: str, params: tuple[Any, ...] = ()) -> None:
    with sqlite3.connect(Database.from_url(database_url).path) as conn:
        conn.execute(sql, params)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A seeded SQLite ledger served by its own process (for tests that tamper with it)."""
    url = new_database_url("sqlite", tmp_path)
    seed(url)
    running = start_server(url, tmp_path)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One seeded server for the tests that only read."""
    workdir = tmp_path_factory.mktemp("audit")
    url = new_database_url("sqlite", workdir)
    seed(url)
    running = start_server(url, workdir)
    running.wait_projected()
    yield running
    running.stop()


def problems_of(report: AuditReport) -> str:
    return "\n".join(report.problems)


# -- The endpoints -------------------------------------------------------------------------------


def test_the_public_key_and_checkpoints_are_open_to_all_and_proofs_need_role_auditor(shared: Server) -> None:
    key = shared.get("/v1/audit/public-key", token=None)
    assert key.status_code == 200
    assert key.json()["algorithm"] == "ed25519" and len(key.json()["public_key"]) == 64
    for path in ["/checkpoint", "/v1/audit/checkpoint"]:
        assert shared.get(path, token=None).status_code == 200
    for path, params in [("/v1/audit/proofs/inclusion", {"position": 1}),
                         ("/v1/audit/proofs/consistency", {"from_size": 1, "to_size": 2})]:
        anonymous = shared.get(path, token=None, **params)
        assert anonymous.status_code == 401
        assert anonymous.headers["content-type"] == "application/problem+json"
    recorder = shared.claims("token", "create", "--role", "recorder").stdout.strip()
    assert shared.get("/v1/audit/proofs/inclusion", token=recorder, position=1).status_code == 403


def test_claims_audit_key_prints_the_key_the_server_publishes(shared: Server) -> None:
    printed = shared.claims("audit-key")
    assert printed.returncode == 0, printed.stderr
    published = shared.get("/v1/audit/public-key", token=None).json()
    assert printed.stdout.splitlines()[:2] == [f"verifier key: {published['verifier_key']}",
                                               f"public key:   {published['public_key']}"]


def test_every_event_has_an_inclusion_proof_that_verifies_against_the_signed_checkpoint(shared: Server) -> None:
    note, checkpoint = read_checkpoint_note(shared.get("/checkpoint", token=None).text)
    key = Verifier.parse(shared.get("/v1/audit/public-key", token=None).json()["verifier_key"])
    assert checkpoint.size == 6 and note.verified_by([key]) == [key]
    feed = shared.get("/v1/events", limit=100).json()["items"]
    root = checkpoint.root_hash
    for item in feed:
        proof = shared.get("/v1/audit/proofs/inclusion", position=item["position"], tree_size=6).json()
        assert proof["position"] == item["position"] and proof["tree_size"] == 6
        path = [bytes.fromhex(h) for h in proof["audit_path"]]
        assert verify_inclusion(event_leaf_hash(item["hash"]), proof["leaf_index"], 6, path, root)
    older = shared.get("/v1/audit/proofs/inclusion", position=feed[2]["position"], tree_size=3).json()
    assert (older["leaf_index"], older["tree_size"], len(older["audit_path"])) == (2, 3, 1)


@pytest.mark.parametrize(("path", "params", "status", "field"), [
    ("/v1/audit/proofs/inclusion", {"position": 99}, 404, None),
    ("/v1/audit/proofs/inclusion", {"position": 1, "tree_size": 7}, 422, "tree_size"),
    ("/v1/audit/proofs/inclusion", {"position": 5, "tree_size": 3}, 422, "tree_size"),
    ("/v1/audit/proofs/inclusion", {"position": 0}, 422, None),
    ("/v1/audit/proofs/consistency", {"from_size": 4, "to_size": 3}, 422, "from_size"),
    ("/v1/audit/proofs/consistency", {"from_size": 0, "to_size": 3}, 422, "from_size"),
    ("/v1/audit/proofs/consistency", {"from_size": 2, "to_size": 9}, 422, "to_size"),
    ("/v1/audit/proofs/consistency", {"from_size": "two"}, 422, None),
])
def test_bad_sizes_and_unknown_positions_are_answered_as_problem_documents(
    shared: Server, path: str, params: dict[str, Any], status: int, field: str | None
) -> None:
    response = shared.get(path, **params)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status and problem["detail"]
    if field is not None:
        assert problem["errors"][0]["loc"] == [field]


def test_consistency_proofs_between_any_two_sizes_verify(shared: Server) -> None:
    rt = Runtime.open(shared.database_url)
    try:
        with rt.store.reading() as cur:
            roots = {n: MerkleLog("rm_").root(cur, n) for n in range(1, 7)}
    finally:
        rt.close()
    for m in range(1, 7):
        for n in range(m, 7):
            proof = shared.get("/v1/audit/proofs/consistency", from_size=m, to_size=n).json()
            path = [bytes.fromhex(h) for h in proof["proof"]]
            assert verify_consistency(m, n, roots[m], roots[n], path), (m, n)


# -- Auditing a healthy ledger -------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_audit_of_a_healthy_ledger_passes_and_saves_the_checkpoint(backend: str, tmp_path: Path) -> None:
    url = new_database_url(backend, tmp_path)
    seed(url)
    served = start_server(url, tmp_path)
    kept = tmp_path / "kept" / "checkpoint.json"
    try:
        served.wait_projected()
        env_token = {**served.env, "LEDGER_TOKEN": served.token}
        first = subprocess.run([*CLAIMS, "audit", "--url", served.base, "--checkpoint", str(kept)],
                               env=env_token, capture_output=True, text=True, timeout=60)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "trusting the server's public key on first use" in first.stdout
        assert "all checks hold; the new checkpoint is saved" in first.stdout
        saved = json.loads(kept.read_text())
        assert saved["tree_size"] == 6
        assert saved["verifier_key"] == served.get("/v1/audit/public-key", token=None).json()["verifier_key"]

        record_more(url, 5)
        later = served.audit(kept)
        assert later.ok, later.lines()
        assert later.notes == []  # the key saved with the checkpoint is pinned now
        assert (later.events, later.claims) == (11, 7)
        assert json.loads(kept.read_text())["tree_size"] == 11
    finally:
        served.stop()
        drop_schema(url)


# -- Auditing a tampered ledger ------------------------------------------------------------------


def test_deleting_the_newest_events_is_caught_by_audit_against_an_older_checkpoint(
    server: Server, tmp_path: Path
) -> None:
    kept = tmp_path / "checkpoint.json"
    assert server.audit(kept).ok
    before = kept.read_text()
    sqlite_events(server.database_url, "DELETE FROM stored_events WHERE rowid > 4")
    rebuild_projections(server.database_url)
    forget_signed_trees(tmp_path)

    shrunk = server.audit(kept)
    assert not shrunk.ok
    assert "the ledger shrank: the kept checkpoint covers 6 events, the server's now 4" in problems_of(shrunk)

    record_more(server.database_url, 3)  # the history grows past the kept size again
    regrown = server.audit(kept)
    assert not regrown.ok
    assert "the consistency proof from 6 to 7 events does not verify" in problems_of(regrown)
    assert kept.read_text() == before


def test_reordering_the_newest_events_is_caught_by_audit_against_an_older_checkpoint(
    server: Server, tmp_path: Path
) -> None:
    kept = tmp_path / "checkpoint.json"
    assert server.audit(kept).ok
    before = kept.read_text()
    # Peskov's denial (position 4) and Elton John's assertion on the second claim (position 5)
    # change places: each claim's chain still holds, only the log order differs.
    for sql in ("UPDATE stored_events SET rowid = 100 WHERE rowid = 4",
                "UPDATE stored_events SET rowid = 4 WHERE rowid = 5",
                "UPDATE stored_events SET rowid = 5 WHERE rowid = 100"):
        sqlite_events(server.database_url, sql)
    rebuild_projections(server.database_url)
    forget_signed_trees(tmp_path)

    same_size = server.audit(kept)
    assert "the tree of 6 events has the root" in problems_of(same_size)
    record_more(server.database_url, 2)
    grown = server.audit(kept)
    assert "the consistency proof from 6 to 8 events does not verify" in problems_of(grown)
    assert kept.read_text() == before


def test_a_forged_consistency_proof_is_rejected(server: Server, tmp_path: Path) -> None:
    sqlite_events(server.database_url, "DELETE FROM stored_events WHERE rowid > 3")
    rebuild_projections(server.database_url)
    kept = tmp_path / "checkpoint.json"
    assert server.audit(kept).ok  # 3 events
    record_more(server.database_url, 5)
    server.wait_projected()
    # The proof from 3 to 8 events carries leaf 2's hash; the root of 8 comes from the stored
    # subtree of all 8, and the feed is untouched, so only the proof is forged.
    rt = Runtime.open(server.database_url)
    try:
        with rt.store.transaction() as cur:
            cur.execute("UPDATE rm_merkle_leaves SET hash = ? WHERE leaf_index = 2", (b"\x07" * 32,))
    finally:
        rt.close()
    forged = server.audit(kept)
    assert problems_of(forged).startswith("the consistency proof from 3 to 8 events does not verify")
    assert json.loads(kept.read_text())["tree_size"] == 3


def test_a_checkpoint_not_signed_by_the_pinned_key_is_rejected(shared: Server, tmp_path: Path) -> None:
    impostor = tmp_path / "pinned.pub"
    impostor.write_text(public_key_hex(Ed25519PrivateKey.generate()) + "\n")
    kept = tmp_path / "checkpoint.json"
    report = shared.audit(kept, public_key=impostor)
    assert not report.ok
    assert "the server presents the public key" in problems_of(report)
    assert "is not signed by the pinned key; nothing it serves can be trusted" in problems_of(report)
    assert not kept.exists()


def test_a_kept_checkpoint_altered_on_disk_is_rejected(shared: Server, tmp_path: Path) -> None:
    kept = tmp_path / "checkpoint.json"
    assert shared.audit(kept).ok
    altered = json.loads(kept.read_text())
    altered["note"] = altered["note"].replace("\n6\n", "\n5\n", 1)  # the signed text itself
    kept.write_text(json.dumps(altered))
    report = shared.audit(kept)
    assert problems_of(report) == (
        "the kept checkpoint's signature does not verify with the pinned key: the file was altered"
    )
    assert json.loads(kept.read_text())["note"] == altered["note"]
    altered = json.loads(kept.read_text())
    altered["note"] = altered["note"].replace("\n5\n", "\n6\n", 1)
    altered["tree_size"] = 5  # the readable copy beside the note
    kept.write_text(json.dumps(altered))
    report = shared.audit(kept)
    assert problems_of(report).endswith("the file was altered") and "'tree_size': 5" in problems_of(report)


def test_served_claims_and_feed_items_that_differ_from_the_fold_of_the_feed_are_caught(
    server: Server, tmp_path: Path
) -> None:
    server.wait_projected()
    rt = Runtime.open(server.database_url)
    try:
        with rt.store.transaction() as cur:
            view = json.loads(cur.execute("SELECT view FROM rm_claims WHERE key = ?", (CLAIM_KEY,)).fetchone()[0])
            view["status"] = "asserted"
            cur.execute("UPDATE rm_claims SET view = ? WHERE key = ?", (json.dumps(view), CLAIM_KEY))
            body = json.loads(cur.execute("SELECT body FROM rm_history WHERE position = 5").fetchone()[0])
            body["data"]["party"] = PESKOV
            cur.execute("UPDATE rm_history SET body = ? WHERE position = 5", (json.dumps(body),))
        first, second = str(rt.ledger.resolve(CLAIM_KEY)), str(rt.ledger.resolve(SECOND_KEY))
    finally:
        rt.close()
    report = server.audit(tmp_path / "checkpoint.json")
    found = problems_of(report)
    assert f'claim {first} ({CLAIM_KEY}): the server serves status = "asserted", the feed folds to "denied"' in found
    assert f"position 5 (claim {second} version 2): the event was changed after it was recorded" in found
    assert not (tmp_path / "checkpoint.json").exists()


def test_claims_audit_exits_2_on_a_checkpoint_file_without_a_pinned_key(shared: Server, tmp_path: Path) -> None:
    kept = tmp_path / "checkpoint.json"
    kept.write_text(json.dumps(shared.get("/v1/audit/checkpoint").json()))
    refused = shared.claims("audit", "--url", shared.base, "--checkpoint", str(kept), "--token", shared.token)
    assert refused.returncode == 2
    assert "pin the ledger's key with --public-key FILE" in refused.stderr
