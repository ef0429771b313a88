"""service/witnessing.py's submissions, one at a time, to a real witness process: what it
keeps when the witness cosigns, and the reason it reports for each way a witness refuses.

The log is an in-memory one (tests/witness/conftest.py), so each case is built exactly; the
ledger's own log and threads are tested end to end in test_ledger.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry, generate_latest

from domain.note import COSIGNATURE_V1, Note, Signer, Verifier
from service.witnessing import BACKOFF_CAP_SECONDS, KEPT_TREES, CosignatureTable, Witnessing
from store.db import ReadStore
from store.settings import Database, WitnessEndpoint
from tests.witness.conftest import MemoryLog, WitnessProcess, run_witness


@pytest.fixture(scope="module")
def logs() -> list[MemoryLog]:
    return [MemoryLog.new(f"submissions.test/{i}", 40) for i in range(4)]


@pytest.fixture(scope="module")
def witness(tmp_path_factory: pytest.TempPathFactory, logs: list[MemoryLog]) -> Iterator[WitnessProcess]:
    yield from run_witness(tmp_path_factory.mktemp("witness"), logs, name="witness.test/s")


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def witnessing(log: MemoryLog, verifier: Verifier, url: str, signer: Signer | None = None) -> Witnessing:
    """A ledger side for `log` submitting to the witness at `url`, known by `verifier`."""
    return Witnessing(
        [WitnessEndpoint(verifier, url)], lambda size, root: log.note(size, signer),
        lambda: (len(log.leaves), log.root(len(log.leaves))), log.proof, interval=0.1, timeout=2,
    )


def test_cosignatures_are_kept_per_tree_and_come_back_after_a_restart(
    witness: WitnessProcess, logs: list[MemoryLog], http: httpx.Client
) -> None:
    log = logs[0]
    side = witnessing(log, witness.verifier, witness.url)
    view = side.views[0]
    assert side.health() == [{"name": "witness.test/s", "url": witness.url, "status": "pending",
                              "cosigned_size": None, "problem": None}]
    for size in (10, 25):
        assert side.submit(view, (size, log.root(size)), http)
    for size in (10, 25):
        [cosignature] = side.cosignatures(size, log.root(size))
        assert Note(log.note(size).text, (cosignature,)).verified_by([witness.verifier]) == [witness.verifier]
    assert side.cosignatures(25, log.root(10)) == [] and side.cosignatures(11, log.root(11)) == []
    assert side.health()[0]["status"] == "ok" and side.health()[0]["cosigned_size"] == 25

    restarted = witnessing(log, witness.verifier, witness.url)  # knows nothing: learns 25 from the 409
    assert restarted.submit(restarted.views[0], (25, log.root(25)), http)
    assert len(restarted.cosignatures(25, log.root(25))) == 1
    assert restarted.submit(restarted.views[0], (40, log.root(40)), http)


def test_each_refusal_is_reported_with_its_reason(
    witness: WitnessProcess, logs: list[MemoryLog], http: httpx.Client, tmp_path: Path
) -> None:
    log = logs[1]
    honest = witnessing(log, witness.verifier, witness.url)
    assert honest.submit(honest.views[0], (30, log.root(30)), http)

    cases: list[tuple[Witnessing, tuple[int, bytes], str, str]] = []
    impostor = Signer(log.origin, Ed25519PrivateKey.generate())
    cases.append((witnessing(log, witness.verifier, witness.url, impostor), (31, log.root(31)), "refused-key",
                  "refuses the ledger's signing key"))
    stranger = MemoryLog.new("stranger.test/log", 5)
    cases.append((witnessing(stranger, witness.verifier, witness.url), (5, stranger.root(5)), "unknown-log",
                  "does not follow this ledger's log"))
    rolled_back = MemoryLog(log.signer, log.leaves[:20])
    cases.append((witnessing(rolled_back, witness.verifier, witness.url), (20, log.root(20)), "ahead",
                  "the witness has cosigned a tree of 30 events and the ledger's has 20"))
    rewritten = log.fork(at=12, size=36)
    cases.append((witnessing(rewritten, witness.verifier, witness.url), (36, rewritten.root(36)), "inconsistent",
                  "refuses the consistency proof from 30 to 36 events"))
    forked = log.fork(at=12, size=30)
    cases.append((witnessing(forked, witness.verifier, witness.url), (30, forked.root(30)), "fork",
                  "has cosigned another tree of 30 events"))
    other_key = Signer("witness.test/s", Ed25519PrivateKey.generate(), COSIGNATURE_V1).verifier
    cases.append((witnessing(log, other_key, witness.url), (32, log.root(32)), "bad-cosignature",
                  "answered no valid cosignature of its configured key"))
    down = f"http://127.0.0.1:{WitnessProcess(tmp_path, []).port}"
    cases.append((witnessing(log, witness.verifier, down), (33, log.root(33)), "unreachable", f"unreachable at {down}"))

    for side, tree, reason, said in cases:
        view = side.views[0]
        assert not side.submit(view, tree, http), reason
        assert (view.reason, said in (view.problem or "")) == (reason, True), (reason, view.problem)
        assert side.cosignatures(*tree) == []
        assert side.health()[0]["status"] == "failing"
        assert side.health()[0]["problem"] == view.problem
        registry = CollectorRegistry()
        registry.register(side.collector())
        metrics = generate_latest(registry).decode()
        assert f'claims_witness_problem{{reason="{reason}",witness="witness.test/s"}} 1.0' in metrics
        assert 'claims_witness_ok{witness="witness.test/s"} 0.0' in metrics
    # None of them moved the witness: the honest log goes on from 30.
    assert honest.submit(honest.views[0], (40, log.root(40)), http)


def test_a_failing_witness_is_asked_less_and_less_often_up_to_a_cap() -> None:
    side = Witnessing([], lambda size, root: MemoryLog.new("x").note(0), lambda: (0, b""), lambda a, b: [],
                      interval=0.5)
    assert [side.pause(n) for n in (0, 1, 2, 3)] == [0.5, 1.0, 2.0, 4.0]
    assert side.pause(50) == BACKOFF_CAP_SECONDS


def test_kept_cosignatures_come_back_checked_on_both_backends(
    witness: WitnessProcess, logs: list[MemoryLog], http: httpx.Client, database_url: str
) -> None:
    store = ReadStore(Database.from_url(database_url), pool_size=1)
    try:
        table = CosignatureTable(store)
        table.ensure_table()
        log = logs[2 if database_url.startswith("sqlite") else 3]  # a log of this backend's own
        log.grow(KEPT_TREES + 6 - len(log.leaves))
        side = witnessing(log, witness.verifier, witness.url)
        side.table = table
        for size in range(1, KEPT_TREES + 6):  # more than are kept
            assert side.submit(side.views[0], (size, log.root(size)), http)
        newest = KEPT_TREES + 5
        # A row changed in the database: another tree's cosignature filed under this one.
        forged = side.cosignatures(newest - 1, log.root(newest - 1))[0]
        table.keep(str(witness.verifier), (newest - 2, log.root(newest - 2)), forged)

        restarted = witnessing(log, witness.verifier, witness.url)
        restarted.table = table
        restarted.restore()
        assert restarted.cosignatures(newest, log.root(newest)) == side.cosignatures(newest, log.root(newest))
        assert restarted.cosignatures(newest - 2, log.root(newest - 2)) == []  # did not verify: dropped
        assert restarted.cosignatures(2, log.root(2)) == []  # older than the kept ones
        assert restarted.health()[0]["cosigned_size"] == newest
        kept = table.load(str(witness.verifier))
        assert len(kept) == KEPT_TREES and kept[-1][0] == (newest, log.root(newest))
    finally:
        store.close()
