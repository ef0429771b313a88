"""The C2SP tlog-tiles read API (api/routes/tiles.py): paths, bytes, caching and errors.

The bytes of every tile are checked against domain/merkle.py's RFC 9162 definitions over the
feed's event hashes, on both backends, with 700-odd events: two full level-0 tiles, a partial
one, and a partial level-1 tile.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.routes.deps import ApiSettings
from api.routes.tiles import IMMUTABLE, TileRef, parse_tile_path, tile_path
from domain.merkle import event_leaf_hash, root_of
from fixtures.generator import generate
from fixtures.replay import import_fixture
from tests.api.conftest import Api, open_api
from tests.conftest import drop_schema, new_database_url

TILE = 256


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def logged(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fast_lane: bool,
) -> Iterator[tuple[Api, list[bytes]]]:
    """An app on a ledger of 700-odd generated events, and the events' hashes in log order."""
    url = new_database_url(str(request.param), tmp_path_factory.mktemp("tiles"))
    try:
        for api in open_api(url, fast_lane=fast_lane):
            runtime = api.services.runtime
            lines = [json.dumps(line) for line in generate(130, seed=19)][:720]
            report = import_fixture(runtime.ledger, lines)
            assert report.last_position is not None and 700 <= report.events < 768
            assert runtime.read.wait_for(report.last_position, 30)
            feed = api.get("/v1/events", role="auditor", limit=10_000).json()["items"]
            assert len(feed) == report.events
            yield api, [bytes.fromhex(item["hash"]) for item in feed]
    finally:
        drop_schema(url)


# -- Paths --------------------------------------------------------------------------------

@pytest.mark.parametrize(("tile", "path"), [
    (TileRef(0, 0), "/tile/0/000"),
    (TileRef(0, 7, 5), "/tile/0/007.p/5"),
    (TileRef(1, 999), "/tile/1/999"),
    (TileRef(2, 1000), "/tile/2/x001/000"),
    (TileRef(3, 1234067, 1), "/tile/3/x001/x234/067.p/1"),
    (TileRef(63, 1234067), "/tile/63/x001/x234/067"),
    (TileRef(None, 0, 255), "/tile/entries/000.p/255"),
    (TileRef(None, 123456789), "/tile/entries/x123/x456/789"),
])
def test_tile_paths_are_written_and_read_as_tlog_writes_them(tile: TileRef, path: str) -> None:
    assert tile_path(tile) == path
    assert parse_tile_path(path.removeprefix("/tile/")) == tile


@pytest.mark.parametrize(("path", "says"), [
    ("", "needs a level"),
    ("0", "needs a level"),
    ("/000", "needs a level"),
    ("00/000", "decimal 0..63 without leading zeros"),
    ("01/000", "decimal 0..63 without leading zeros"),
    ("-1/000", "decimal 0..63"),
    ("data/000", "'entries' or a decimal"),
    ("64/000", "above 63"),
    ("0/1", "did you mean /tile/0/001?"),
    ("0/1234067", "did you mean /tile/0/x001/x234/067?"),
    ("0/001/234/067", "did you mean /tile/0/x001/x234/067?"),
    ("0/x000/001", "leading group of zeros (did you mean /tile/0/001?)"),
    ("0/x001", "3-digit groups"),
    ("0/0000", "3-digit groups"),
    ("0/00a", "3-digit groups"),
    ("0/", "3-digit groups"),
    ("0/000/", "3-digit groups"),
    ("8/0/000", "3-digit groups"),
    ("0/000.p/0", "width W of a partial tile is 1..255"),
    ("0/000.p/256", "a full tile has no .p/ suffix"),
    ("0/000.p/01", "without leading zeros"),
    ("0/000.p/", "width W"),
    ("entries/000.p/1000", "width W"),
    ("0/000.p/5/", "3-digit groups"),
])
def test_a_path_that_is_not_a_canonical_tile_is_a_400_saying_how_to_write_it(
    logged: tuple[Api, list[bytes]], path: str, says: str,
) -> None:
    api, _ = logged
    response = api.get(f"/tile/{path}")
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:claims-ledger:problem:invalid-tile-path"
    assert says in problem["detail"] and "/tile/<L>/<N>[.p/<W>]" in problem["detail"]


# -- Contents -----------------------------------------------------------------------------

def test_full_and_partial_hash_tiles_are_the_rfc_9162_subtree_hashes(logged: tuple[Api, list[bytes]]) -> None:
    api, events = logged
    n = len(events)
    leaves = [event_leaf_hash(h.hex()) for h in events]
    level1 = [root_of(leaves[i * TILE:(i + 1) * TILE]) for i in range(n // TILE)]  # 2 complete subtrees
    expected = {
        "/tile/0/000": leaves[:TILE],
        "/tile/0/001": leaves[TILE:2 * TILE],
        f"/tile/0/002.p/{n - 2 * TILE}": leaves[2 * TILE:],
        "/tile/0/002.p/1": leaves[2 * TILE:2 * TILE + 1],  # a width the tree has passed: still its bytes
        "/tile/0/000.p/17": leaves[:17],  # a prefix of a full tile
        "/tile/1/000.p/2": level1,
        "/tile/1/000.p/1": level1[:1],
    }
    lane = getattr(api.app, "fast_lane", None)  # None with --fast-lane=off
    answered = 0 if lane is None else lane.answered
    for path, hashes in expected.items():
        response = api.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["cache-control"] == IMMUTABLE
        assert response.content == b"".join(hashes), path
    if lane is not None:  # the fast lane read every one of them on the event loop
        assert lane.answered - answered == len(expected)
    # The root the checkpoint signs is made of the tiles' hashes.
    checkpoint = api.get("/v1/audit/checkpoint", role="auditor").json()
    assert checkpoint["tree_size"] == n
    assert root_of(leaves).hex() == checkpoint["root_hash"]


def test_entry_bundles_hold_each_events_hash_framed_and_hashing_to_the_level_0_tile(
    logged: tuple[Api, list[bytes]],
) -> None:
    api, events = logged
    n = len(events)
    for path, first, width in (("/tile/entries/000", 0, TILE), ("/tile/entries/001", TILE, TILE),
                               (f"/tile/entries/002.p/{n - 2 * TILE}", 2 * TILE, n - 2 * TILE),
                               ("/tile/entries/001.p/3", TILE, 3)):
        response = api.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["cache-control"] == IMMUTABLE
        body, entries = response.content, []
        while body:
            size = int.from_bytes(body[:2], "big")
            entries.append(body[2:2 + size])
            body = body[2 + size:]
        assert entries == events[first:first + width], path
        tile = api.get(path.replace("/entries/", "/0/")).content
        assert b"".join(hashlib.sha256(b"\x00" + e).digest() for e in entries) == tile


def test_a_path_longer_than_any_tile_is_refused_as_a_malformed_request(logged: tuple[Api, list[bytes]]) -> None:
    api, _ = logged
    response = api.get("/tile/0/" + "x000/" * 20 + "000")
    assert response.status_code == 422
    assert response.json()["type"] == "urn:claims-ledger:problem:invalid-request"
    assert "64 characters" in response.json()["detail"]


def test_a_tile_the_log_has_not_reached_is_a_404_that_is_not_cached(logged: tuple[Api, list[bytes]]) -> None:
    api, events = logged
    n = len(events)
    for path in ("/tile/0/002", f"/tile/0/002.p/{n - 2 * TILE + 1}", "/tile/0/003.p/1", "/tile/1/000",
                 "/tile/1/000.p/3", "/tile/2/000.p/1", "/tile/entries/002", "/tile/entries/003.p/1",
                 "/tile/63/x999/x999/x999/x999/x999/x999/x999/999",
                 "/tile/entries/x999/x999/x999/x999/x999/x999/x999/999"):
        response = api.get(path)
        assert response.status_code == 404, (path, response.text)
        assert response.headers["cache-control"] == "no-store"
        problem = response.json()
        assert problem["type"] == "urn:claims-ledger:problem:tile-not-found"
        assert f"the log holds {n} leaves" in problem["detail"]


def test_tiles_are_open_to_all_even_when_reads_need_a_token(tmp_path: Path, fast_lane: bool) -> None:
    url = new_database_url("sqlite", tmp_path)
    for api in open_api(url, fast_lane=fast_lane, settings=ApiSettings(read_tokens_required=True)):
        _, _, denial = api.seed()
        assert api.services.runtime.read.wait_for(denial["position"], 10)
        assert api.get("/v1/claims/putin-phoned-elton-john").status_code == 401
        tile = api.get("/tile/0/000.p/3")
        assert tile.status_code == 200 and len(tile.content) == 3 * 32
        assert api.get("/tile/entries/000.p/3").status_code == 200
