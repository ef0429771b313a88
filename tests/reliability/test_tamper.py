"""Tampering with the database under a running server is caught by `claims verify` and `claims audit`.

tests/audit/test_verify.py checks `verify_store` in-process and tests/audit/test_audit.py
audits a SQLite server in-process; here both commands run as their own processes against a
server that keeps serving (and being written to) while its database is changed behind
its back, on both backends.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from service.runtime import Runtime
from tests.api import story
from tests.audit.test_audit import forget_signed_trees
from tests.audit.test_verify import rehash, rewrite_state
from tests.reliability.conftest import StartServer
from tests.reliability.server import LedgerServer, make_token

K = story.KEY
DENIAL_VERSION = 3  # registered, Elton John asserts, Peskov denies, Elton John retracts


def seed(server: LedgerServer) -> httpx.Client:
    """The seed story over HTTP, and an editor's client to go on writing with."""
    _, token = make_token(server.database_url, "editor")
    http = httpx.Client(base_url=server.base, timeout=30, headers={"Authorization": f"Bearer {token}"})
    for path, body in (("/v1/claims", story.registration()), (f"/v1/claims/{K}/assertions", story.elton_asserts()),
                       (f"/v1/claims/{K}/denials", story.peskov_denies()),
                       (f"/v1/claims/{K}/retractions", {"retracts": "elton-instagram", "party": story.ELTON,
                                                         "act_id": "elton-retracts"})):
        assert http.post(path, json=body).status_code == 201
    return http


def more(http: httpx.Client, n: int, prefix: str) -> None:
    for i in range(n):
        body = {"statement": f"Dmitry Peskov commented on the call, part {i}", "key": f"{prefix}-{i}"}
        assert http.post("/v1/claims", json=body).status_code == 201


def peskov_said_yes(fields: dict[str, Any]) -> None:
    fields["data_json"] = fields["data_json"].replace("did not have any telephone conversation",
                                                      "had a telephone conversation")


def with_runtime(database_url: str, change: Callable[[Runtime], None]) -> None:
    runtime = Runtime.open(database_url, pool_size=1)
    try:
        change(runtime)
    finally:
        runtime.close()


def forge_history(runtime: Runtime) -> None:
    """What a thorough forger with database access does: change Peskov's denial, give it and
    every later event of the claim hashes that fit, and rebuild the projections from that."""
    claim_id = str(runtime.ledger.resolve(K))
    types = [e["type"] for e in runtime.read.history(K)["events"]]  # type: ignore[index]
    previous: list[str] = []

    def forged(version: int) -> Callable[[dict[str, Any]], None]:
        def change(fields: dict[str, Any]) -> None:
            if version == DENIAL_VERSION:
                peskov_said_yes(fields)
            else:
                fields["prev_hash"] = previous[-1]
            rehash(fields, claim_id, version, types[version - 1])
            previous.append(fields["hash"])
        return change

    for version in range(DENIAL_VERSION, len(types) + 1):
        rewrite_state(runtime, K, version, forged(version))
    runtime.engine.rebuild()


def test_an_event_edited_under_a_running_server_makes_claims_verify_exit_1_naming_it(
    database_url: str, start_server: StartServer
) -> None:
    server = start_server(database_url)
    http = seed(server)
    server.wait_projected()
    healthy = server.claims("verify")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "all checks hold" in healthy.stdout

    with_runtime(database_url, lambda rt: rewrite_state(rt, K, DENIAL_VERSION, peskov_said_yes))
    more(http, 3, "after-the-edit")  # the server goes on serving and recording
    server.wait_projected()
    found = server.claims("verify")
    http.close()
    assert found.returncode == 1, found.stdout + found.stderr
    assert f"[event-hash] claim {K}" in found.stdout and f"version {DENIAL_VERSION}" in found.stdout
    assert "problem(s) found" in found.stdout


def test_a_history_forged_under_a_running_server_fails_claims_audit_against_an_older_checkpoint(
    database_url: str, start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(database_url)
    http = seed(server)
    _, auditor = make_token(database_url, "auditor")
    kept = tmp_path / "checkpoint.json"
    server.wait_projected()

    def audit() -> Any:
        server.wait_projected()
        return server.claims("audit", "--url", server.base, "--checkpoint", str(kept), "--token", auditor)

    first = audit()
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads(kept.read_text())["tree_size"] == 4
    more(http, 3, "before-the-forgery")
    assert audit().returncode == 0  # the ledger only grew: the kept checkpoint moves on
    before = kept.read_text()

    with_runtime(database_url, forge_history)
    more(http, 2, "after-the-forgery")
    # The ledger itself refuses to sign the rewritten log: it does not extend the largest tree
    # it signed, kept beside its key (audit/rollback.py).
    refused = audit()
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "answered 503" in refused.stdout and "does not extend" in refused.stdout, refused.stdout
    assert kept.read_text() == before
    # A forger who also controls the key's directory wipes that record: the auditor's own
    # consistency check from its kept checkpoint must still catch the rewrite.
    forget_signed_trees(server.workdir)
    forged = audit()
    http.close()
    assert forged.returncode == 1, forged.stdout + forged.stderr
    assert "consistency proof from 7 to 9 events does not verify" in forged.stdout, forged.stdout
    assert kept.read_text() == before  # a failed audit keeps the old checkpoint


def test_a_projection_row_edited_under_a_running_server_fails_both_verify_and_audit(
    database_url: str, start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(database_url)
    http = seed(server)
    _, auditor = make_token(database_url, "auditor")
    kept = tmp_path / "checkpoint.json"
    server.wait_projected()
    args = ("audit", "--url", server.base, "--checkpoint", str(kept), "--token", auditor)
    assert server.claims(*args).returncode == 0

    def edit_history_row(runtime: Runtime) -> None:
        with runtime.store.transaction() as cur:
            (body,) = cur.execute("SELECT body FROM rm_history WHERE position = ?", (DENIAL_VERSION,)).fetchone()  # type: ignore[misc]
            cur.execute("UPDATE rm_history SET body = ? WHERE position = ?",
                        (body.replace("did not have any", "had a"), DENIAL_VERSION))

    with_runtime(database_url, edit_history_row)
    more(http, 1, "after-the-edit")
    server.wait_projected()
    served = http.get(f"/v1/claims/{K}/history").json()["events"][DENIAL_VERSION - 1]
    http.close()
    assert served["quote"].startswith("I can safely say that President Putin had a")  # what clients now read

    audited = server.claims(*args)
    assert audited.returncode == 1, audited.stdout + audited.stderr
    assert f"position {DENIAL_VERSION}" in audited.stdout and "the event was changed after it was recorded" in audited.stdout
    verified = server.claims("verify")
    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert "[projection]" in verified.stdout and "rm_history" in verified.stdout
