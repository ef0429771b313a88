"""Several nodes of one PostgreSQL ledger, one witness: only the holder of the witnessing lease
(store/lease.py) submits checkpoints; the other serves the cosignatures it keeps in the
shared table, and takes the submissions over when the holder stops."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.witnessing import CosignatureTable, Witnessing
from store.db import ReadStore
from store.lease import Lease
from store.settings import Database, WitnessEndpoint
from tests.conftest import drop_schema, new_database_url
from tests.reliability.server import wait_until
from tests.witness.conftest import MemoryLog, WitnessProcess, run_witness


@pytest.fixture(scope="module")
def log() -> MemoryLog:
    return MemoryLog.new("lease.test/log", 40)


@pytest.fixture(scope="module")
def witness(tmp_path_factory: pytest.TempPathFactory, log: MemoryLog) -> Iterator[WitnessProcess]:
    yield from run_witness(tmp_path_factory.mktemp("witness"), [log], name="witness.test/lease")


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    url = new_database_url("postgres", tmp_path)
    yield Database.from_url(url)
    drop_schema(url)


def test_one_node_submits_the_other_serves_what_it_kept_and_takes_over(
    witness: WitnessProcess, log: MemoryLog, database: Database,
) -> None:
    head = {"size": 20}
    stores = [ReadStore(database, pool_size=2) for _ in range(2)]
    CosignatureTable(stores[0]).ensure_table()
    nodes = [
        Witnessing(
            [WitnessEndpoint(witness.verifier, witness.url)], lambda size, root: log.note(size),
            lambda: (head["size"], log.root(head["size"])), log.proof, interval=0.05, timeout=2,
            table=CosignatureTable(store), lease=Lease(database, "witnessing"), lease_retry=0.1,
        )
        for store in stores
    ]
    try:
        nodes[0].start()
        wait_until(lambda: bool(nodes[0].cosignatures(20, log.root(20))), 10, "the first node has it cosigned")
        nodes[1].start()
        # The second node never submits, and serves the first one's cosignature from the table.
        wait_until(lambda: bool(nodes[1].cosignatures(20, log.root(20))), 10, "the second node serves it")
        assert nodes[1].cosignatures(20, log.root(20)) == nodes[0].cosignatures(20, log.root(20))
        assert sum(nodes[1].views[0].outcomes.values()) == 0
        head["size"] = 30
        wait_until(lambda: bool(nodes[1].cosignatures(30, log.root(30))), 10, "the second node serves 30 too")
        assert sum(nodes[1].views[0].outcomes.values()) == 0
        assert nodes[0].lease is not None and nodes[0].lease.held

        nodes[0].stop()  # gives its lease up
        head["size"] = 40
        wait_until(lambda: bool(nodes[1].cosignatures(40, log.root(40))), 10, "the second node takes over")
        assert nodes[1].views[0].outcomes["cosigned"] >= 1
        assert nodes[1].lease is not None and nodes[1].lease.held
    finally:
        for node in nodes:
            node.stop()
        for store in stores:
            store.close()
