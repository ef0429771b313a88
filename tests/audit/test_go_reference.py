"""The ledger checked by Go's reference transparency-log code (golang.org/x/mod/sumdb/tlog and
sumdb/note), over real HTTP against `claims serve`: code the ledger's authors did not write.

`note.Open` must accept the signed checkpoint at `/checkpoint` with the verifier key the ledger
publishes, and refuse it changed. With 700-odd events the log has full level-0 tiles, a
partial level-0 tile and a partial level-1 tile. `tlog.TileHashReader` reads the C2SP tiles
for the verified checkpoint's tree and its `TreeHash` must equal the root; every entry bundle
must hash to the level-0 tiles; `ProveRecord` / `CheckRecord` and `ProveTree` / `CheckTree`
must hold; and the ledger's own RFC 9162 proofs must pass `tlog.CheckRecord` /
`tlog.CheckTree` and equal tlog's proofs hash for hash.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from fixtures.generator import generate
from fixtures.replay import import_fixture
from service.runtime import Runtime
from tests.audit.proxy import TamperingProxy
from tests.conftest import drop_schema, new_database_url
from tests.gocheck import GoCheck, go_check  # noqa: F401 - the session fixture
from tests.reliability.server import LedgerServer, make_token


@dataclass
class Served:
    server: LedgerServer
    events: int
    token: str
    verifier_key: str


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`claims serve` on a ledger of 700-odd generated events, one per module and backend."""
    workdir = tmp_path_factory.mktemp("go-reference")
    url = new_database_url(str(request.param), workdir)
    lines = [json.dumps(line) for line in generate(130, seed=19)][:720]
    runtime = Runtime.open(url, pool_size=1)
    try:
        events = import_fixture(runtime.ledger, lines).events
    finally:
        runtime.close()
    assert 700 <= events < 768, events  # two full level-0 tiles, a partial third, a level-1 partial
    server = LedgerServer(url, workdir)
    try:
        server.start()
        server.wait_projected()
        key = httpx.get(f"{server.base}/v1/audit/public-key", timeout=10).json()
        yield Served(server, events, make_token(url, "auditor")[1], key["verifier_key"])
    finally:
        server.stop()
        drop_schema(url)


def tlog_check(go: GoCheck, base: str, served: Served) -> tuple[int, str]:
    n = served.events
    result = go.run(
        "tlog-check", "--url", base, "--token", served.token, "--vkey", served.verifier_key,
        "--records", f"0,1,255,256,511,512,{n - 1}", "--old", f"1,2,255,256,257,511,512,{n - 1},{n}",
    )
    return result.returncode, result.stdout + result.stderr


def test_gos_tlog_reads_our_tiles_and_proves_and_checks_records_and_trees(
    go_check: GoCheck, served: Served,  # noqa: F811
) -> None:
    n = served.events
    status, output = tlog_check(go_check, served.server.base, served)
    assert status == 0, output
    origin = served.verifier_key.split("+")[0]
    assert f"checkpoint: signed note of {origin}: {n} leaves" in output
    assert f"TreeHash({n}) over the tiles equals the checkpoint's root" in output
    assert f"entry bundles: all {n} entries hash to the level-0 tiles' leaves" in output
    assert f"TreeHash({n}) recomputed from the entries alone equals the checkpoint's root" in output
    assert output.count("ProveRecord/CheckRecord hold; the ledger's inclusion proof checks and equals tlog's") == 7
    assert output.count("ProveTree/CheckTree hold; the ledger's consistency proof checks and equals tlog's") == 9
    read = {line.removeprefix("tile read: ") for line in output.splitlines() if line.startswith("tile read: ")}
    assert {"/tile/0/000", "/tile/0/001", f"/tile/0/002.p/{n - 512}", "/tile/1/000.p/2"} <= read, output
    assert output.rstrip().endswith("all checks hold")


@pytest.mark.parametrize("changed", ["/tile/0/001", "/tile/1/000.p/2", "/tile/entries/001"])
def test_gos_tlog_rejects_a_tile_changed_on_the_way(
    go_check: GoCheck, served: Served, changed: str,  # noqa: F811
) -> None:
    """The check is not vacuous: one flipped bit in a full level-0 tile, in the level-1 tile the
    root is made from, or in an entry bundle fails it."""

    def flip(path: str, body: bytes) -> bytes:
        return body[:40] + bytes([body[40] ^ 1]) + body[41:] if path == changed else body

    proxy = TamperingProxy(served.server.base, flip)
    try:
        status, output = tlog_check(go_check, proxy.base, served)
    finally:
        proxy.close()
    assert proxy.changed >= 1
    assert status == 1, output
    assert "FAIL:" in output and "all checks hold" not in output, output


def test_gos_note_open_accepts_the_served_checkpoint_and_refuses_it_changed(
    go_check: GoCheck, served: Served,  # noqa: F811
) -> None:
    note = httpx.get(f"{served.server.base}/checkpoint", timeout=10).text
    text = note.split("\n\n")[0] + "\n"
    assert text.split("\n")[1] == str(served.events)
    opened = go_check.run("note-verify", served.verifier_key, stdin=note.encode())
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout == text
    lines = text.split("\n")
    forged = note.replace(text, "\n".join([lines[0], str(served.events + 1), *lines[2:]]), 1)
    refused = go_check.run("note-verify", served.verifier_key, stdin=forged.encode())
    assert refused.returncode == 1 and "note.Open" in refused.stderr, refused.stderr
