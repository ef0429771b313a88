"""`claims serve` submitting its checkpoints to two real witness processes, serving them with
both cosignatures, and carrying on when one is down (`claims audit --witness --quorum` is in
test_split_view.py).

Everything is a real process over real HTTP: the ledger (tests/reliability/server.py), two
`claims witness serve`, and `claims audit` as an auditor runs it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from audit.signing import load_keyring
from cli.witness import witness_signer
from domain.note import Note, Verifier
from tests.api import story
from tests.conftest import drop_schema, new_database_url
from tests.reliability.server import LedgerServer, make_token, wait_until
from tests.witness.conftest import WitnessProcess

WAIT = 20.0


@dataclass
class Witnessed:
    """A ledger with two witnesses, both following it."""

    ledger: LedgerServer
    witnesses: list[WitnessProcess]
    verifiers: list[Verifier]
    token: str
    http: httpx.Client

    def write(self, count: int = 1) -> int:
        """Register `count` new claims; the ledger's tree size after them, once projected."""
        headers = {"Authorization": f"Bearer {self.token}"}
        for _ in range(count):
            key = f"witnessed-{uuid.uuid4().hex[:10]}"
            body = story.registration(key=key, statement=f"A claim witnesses saw ({key}).")
            response = self.http.post(f"{self.ledger.base}/v1/claims", json=body, headers=headers)
            assert response.status_code == 201, response.text
        self.ledger.wait_projected()
        return int(self.checkpoint()["tree_size"])

    def checkpoint(self) -> dict[str, Any]:
        answer = self.http.get(f"{self.ledger.base}/v1/audit/checkpoint")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert isinstance(body, dict)
        return body

    def cosigned_by(self, size: int, count: int) -> dict[str, Any]:
        """The checkpoint once it is of `size` and carries `count` cosignatures."""
        found: dict[str, Any] = {}

        def cosigned() -> bool:
            found.update(self.checkpoint())
            return bool(found["tree_size"] == size and len(found["cosignatures"]) == count)

        wait_until(cosigned, WAIT, f"the checkpoint of {size} events carries {count} cosignature(s)", 0.05)
        return found

    def health(self) -> dict[str, Any]:
        return self.ledger.health()

    def audit(self, tmp_path: Path, *witness_keys: Verifier, quorum: int | None = None) -> tuple[int, str]:
        args = ["audit", "--url", self.ledger.base, "--checkpoint", str(tmp_path / f"kept-{uuid.uuid4().hex}.json"),
                "--token", self.token]
        for key in witness_keys:
            args += ["--witness", str(key)]
        if quorum is not None:
            args += ["--quorum", str(quorum)]
        done = self.ledger.claims(*args)
        return done.returncode, done.stdout + done.stderr


def start_witnessed(workdir: Path, database_url: str) -> Witnessed:
    """Two witnesses following the ledger's key (made here, where `claims serve` will find it),
    then the ledger submitting to them."""
    ledger = LedgerServer(database_url, workdir)
    log_key = str(load_keyring(Path(ledger.env["LEDGER_SIGNING_KEY_FILE"])).verifier)
    witnesses = [WitnessProcess(workdir / f"w{i}", [log_key], name=f"witness.test/w{i}") for i in (1, 2)]
    for witness in witnesses:
        witness.workdir.mkdir()
        witness.launch()
    verifiers = [witness_signer(w.key, w.name).verifier for w in witnesses]
    ledger.extra_env.update({
        "LEDGER_WITNESSES": ",".join(f"{v} {w.url}" for v, w in zip(verifiers, witnesses, strict=True)),
        "LEDGER_WITNESS_INTERVAL": "0.05", "LEDGER_WITNESS_TIMEOUT": "2",
    })
    for witness in witnesses:
        witness.wait_up()
    ledger.start()
    _, token = make_token(database_url, "auditor")
    return Witnessed(ledger, witnesses, verifiers, token, httpx.Client(timeout=10))


def stop_witnessed(witnessed: Witnessed) -> None:
    witnessed.ledger.stop()
    for witness in witnessed.witnesses:
        witness.stop()
    witnessed.http.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def witnessed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Witnessed]:
    workdir = tmp_path_factory.mktemp("witnessed")
    url = new_database_url(str(request.param), workdir)
    found = start_witnessed(workdir, url)
    try:
        yield found
    finally:
        stop_witnessed(found)
        drop_schema(url)


def test_the_ledger_serves_its_checkpoint_with_both_cosignatures(witnessed: Witnessed) -> None:
    size = witnessed.write(3)
    checkpoint = witnessed.cosigned_by(size, 2)
    note = Note.parse(checkpoint["note"])
    assert note.verified_by(witnessed.verifiers) == witnessed.verifiers
    assert sorted(c["name"] for c in checkpoint["cosignatures"]) == ["witness.test/w1", "witness.test/w2"]
    served = witnessed.http.get(f"{witnessed.ledger.base}/checkpoint").text  # the tlog-tiles checkpoint too
    assert Note.parse(served).verified_by(witnessed.verifiers) == witnessed.verifiers

    health = witnessed.health()
    assert health["status"] == "ok", health
    assert [(w["name"], w["status"], w["cosigned_size"]) for w in health["witnesses"]] == [
        ("witness.test/w1", "ok", size), ("witness.test/w2", "ok", size)]
    metrics = witnessed.http.get(f"{witnessed.ledger.base}/metrics").text
    assert 'claims_witness_ok{witness="witness.test/w1"} 1.0' in metrics
    assert f'claims_witness_cosigned_size{{witness="witness.test/w2"}} {float(size)}' in metrics


def test_a_witness_down_leaves_the_ledger_serving_and_health_degraded_naming_it(witnessed: Witnessed) -> None:
    down = witnessed.witnesses[1]
    down.kill()
    try:
        size = witnessed.write(2)  # writes go on
        checkpoint = witnessed.cosigned_by(size, 1)
        assert Note.parse(checkpoint["note"]).verified_by(witnessed.verifiers) == witnessed.verifiers[:1]

        def degraded() -> bool:
            return bool(witnessed.health()["status"] == "degraded")

        wait_until(degraded, WAIT, "/healthz says degraded")
        response = witnessed.http.get(f"{witnessed.ledger.base}/healthz")
        assert response.status_code == 200
        failing = [w for w in response.json()["witnesses"] if w["status"] == "failing"]
        assert [w["name"] for w in failing] == ["witness.test/w2"]
        assert failing[0]["problem"].startswith(f"unreachable at {down.url}")
        metrics = witnessed.http.get(f"{witnessed.ledger.base}/metrics").text
        assert 'claims_witness_problem{reason="unreachable",witness="witness.test/w2"} 1.0' in metrics
        assert re.search(r'claims_witness_submissions_total\{outcome="unreachable",witness="witness.test/w2"\} [1-9]',
                         metrics), metrics
    finally:
        down.start()
    # Back: it is asked again, cosigns the newest tree, and the ledger is healthy again.
    witnessed.cosigned_by(size, 2)
    wait_until(lambda: witnessed.health()["status"] == "ok", WAIT, "/healthz says ok again")


def test_cosignatures_survive_a_restart_with_the_witnesses_down(witnessed: Witnessed) -> None:
    size = witnessed.write(1)
    before = witnessed.cosigned_by(size, 2)
    for witness in witnessed.witnesses:
        witness.kill()
    witnessed.ledger.stop()
    witnessed.ledger.start()
    after = witnessed.checkpoint()  # served from the kept cosignatures: no witness answers now
    assert (after["tree_size"], after["cosignatures"]) == (size, before["cosignatures"])
    assert Note.parse(after["note"]).verified_by(witnessed.verifiers) == witnessed.verifiers
    health = witnessed.health()
    assert [(w["status"], w["cosigned_size"]) for w in health["witnesses"]] == [("pending", size)] * 2

    grown = witnessed.write(1)  # a tree they have not seen: asked, down, and the ledger says so
    wait_until(lambda: witnessed.health()["status"] == "degraded", WAIT, "/healthz says degraded")
    assert witnessed.checkpoint()["tree_size"] == grown
    for witness in witnessed.witnesses:
        witness.launch()
    for witness in witnessed.witnesses:
        witness.wait_up()
    witnessed.cosigned_by(grown, 2)
