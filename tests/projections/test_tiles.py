"""The stored Merkle log as C2SP tlog-tiles (projections/merkle.py): every full hash tile stored
whole as it completes, in whatever batches the leaves arrive, equal to the RFC 9162 subtree
hashes of domain/merkle.py, and entry bundles beside them; logs made before tiles were stored
still serve them; a rebuild stores the same tiles as the incremental projection."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from domain.merkle import event_leaf_hash, root_of
from fixtures.generator import generate
from fixtures.replay import import_fixture
from projections.merkle import MerkleLog, MerkleLogDamaged
from projections.tables import Tables
from service.runtime import Runtime
from store.db import ReadStore
from store.settings import Database

TILE = 256
PREFIX = "tt_"


@pytest.fixture
def store(database_url: str) -> Iterator[ReadStore]:
    rs = ReadStore(Database.from_url(database_url), pool_size=2)
    with rs.transaction() as cur:
        Tables(PREFIX).create(cur, generation=0)
        MerkleLog(PREFIX).create_tables(cur)
    yield rs
    rs.close()


def event_hashes(count: int) -> list[str]:
    return [hashlib.sha256(i.to_bytes(8, "big")).hexdigest() for i in range(count)]


def append(store: ReadStore, log: MerkleLog, hashes: list[str], start: int, batches: list[int]) -> None:
    """Append hashes[start:] in batches of these sizes, with history rows for the entries; every
    other batch passes the tip the last one returned, the rest make the log read it back."""
    tip = None
    at = start
    for n, size in enumerate(batches):
        items = [(i + 1, hashes[i]) for i in range(at, min(at + size, len(hashes)))]
        with store.transaction() as cur:
            cur.copy_rows(f"{PREFIX}history", ("position", "claim_id", "version", "type", "hash", "body"),
                          [(p, f"c{p}", 1, "ClaimRegistered", h, "{}") for p, h in items])
            tip = log.append(cur, items, tip if n % 2 else None)
        at += len(items)


def stored_tiles(store: ReadStore, table: str) -> list[tuple[Any, ...]]:
    with store.reading() as cur:
        return [(int(level), int(idx), bytes(data)) for level, idx, data in
                cur.execute(f"SELECT level, idx, data FROM {table} ORDER BY level, idx").fetchall()]


def test_full_tiles_are_stored_as_they_complete_and_equal_the_rfc_9162_subtrees(
    store: ReadStore,
) -> None:
    """65,836 leaves in uneven batches: 257 full level-0 tiles, a full level-1 tile."""
    hashes = event_hashes(TILE * TILE + 300)
    log = MerkleLog(PREFIX)
    append(store, log, hashes, 0, [1, 254, 2, 700, 9000, 255, 256, 30_000, 25_368])
    leaves = [event_leaf_hash(h) for h in hashes]
    level1 = [root_of(leaves[i * TILE:(i + 1) * TILE]) for i in range(len(leaves) // TILE)]
    stored = {(level, idx): data for level, idx, data in stored_tiles(store, log.tiles)}
    assert sorted(stored) == [(0, i) for i in range(257)] + [(1, 0)]
    with store.reading() as cur:
        for i in range(257):
            tile = b"".join(leaves[i * TILE:(i + 1) * TILE])
            assert stored[(0, i)] == tile == log.tile(cur, 0, i)
            bundle = b"".join(b"\x00\x20" + bytes.fromhex(h) for h in hashes[i * TILE:(i + 1) * TILE])
            assert bundle == log.entries(cur, i)
        assert stored[(1, 0)] == b"".join(level1[:TILE]) == log.tile(cur, 1, 0)
        assert log.tile(cur, 1, 1, 1) == level1[TILE]  # the partial level-1 tile, from the nodes
        assert log.tile(cur, 0, 257, 44) == b"".join(leaves[257 * TILE:])
        assert log.entries(cur, 257, 44) == b"".join(b"\x00\x20" + bytes.fromhex(h) for h in hashes[257 * TILE:])
        assert log.tile(cur, 2, 0, 1) == root_of(leaves[:TILE * TILE])
        assert log.tile(cur, 0, 257) is None and log.tile(cur, 1, 1, 2) is None and log.entries(cur, 258, 1) is None


def test_a_log_made_before_tiles_were_stored_gets_them_when_first_opened(store: ReadStore) -> None:
    hashes = event_hashes(TILE * TILE + 3 * TILE + 10)
    log = MerkleLog(PREFIX)
    append(store, log, hashes, 0, [TILE * TILE + 2 * TILE + 100])
    with store.transaction() as cur:  # as the previous version left it: no tiles table
        cur.execute(f"DROP TABLE {log.tiles}")
    with store.transaction() as cur:
        log.create_tables(cur)  # what opening the ledger does
    leaves = [event_leaf_hash(h) for h in hashes]
    stored = {(level, idx): data for level, idx, data in stored_tiles(store, log.tiles)}
    assert sorted(stored) == [(0, i) for i in range(TILE + 2)] + [(1, 0)]
    assert stored[(0, TILE + 1)] == b"".join(leaves[(TILE + 1) * TILE:(TILE + 2) * TILE])
    assert stored[(1, 0)] == b"".join(root_of(leaves[i * TILE:(i + 1) * TILE]) for i in range(TILE))
    append(store, log, hashes, TILE * TILE + 2 * TILE + 100, [50, 116])  # tile 258 completes: its start read back
    with store.reading() as cur:
        assert log.tile(cur, 0, TILE + 2) == b"".join(leaves[(TILE + 2) * TILE:(TILE + 3) * TILE])
    assert len(stored_tiles(store, log.tiles)) == TILE + 4


def test_missing_rows_of_a_tile_the_log_holds_are_damage_not_absence(store: ReadStore) -> None:
    hashes = event_hashes(2 * TILE + 20)
    log = MerkleLog(PREFIX)
    append(store, log, hashes, 0, [TILE + 20])
    with store.transaction() as cur:
        cur.execute(f"DELETE FROM {log.leaves} WHERE leaf_index = 260")
    with store.reading() as cur, pytest.raises(MerkleLogDamaged, match="rebuild the log"):
        log.tile(cur, 0, 1, 10)
    with store.reading() as cur:
        assert log.tile(cur, 0, 0) == b"".join(event_leaf_hash(h) for h in hashes[:TILE])  # stored whole
    # Tile 1 completes in a later process, which reads back the start it did not see appended.
    with pytest.raises(MerkleLogDamaged, match="lacks stored hashes of tile 0/1"):
        append(store, log, hashes, TILE + 20, [TILE])


@pytest.fixture
def runtime(database_url: str) -> Iterator[Runtime]:
    rt = Runtime.open(database_url)
    yield rt
    rt.close()


def test_a_rebuild_stores_the_same_tiles_as_the_incremental_projection(runtime: Runtime) -> None:
    lines = [json.dumps(line) for line in generate(130, seed=19)][:720]
    events = import_fixture(runtime.ledger, lines).events
    assert runtime.engine.catch_up() == events
    table = runtime.engine.merkle.tiles
    incremental = stored_tiles(runtime.store, table)
    assert [(level, idx) for level, idx, _ in incremental] == [(0, 0), (0, 1)]
    runtime.engine.batch_size = 300  # pages that cut tiles in two
    assert runtime.engine.rebuild() == events
    assert stored_tiles(runtime.store, table) == incremental
