"""Row 8: the C2SP tlog-tiles read API at the large dataset's size, beside the bare FastAPI endpoint.

Full level-0 hash tiles (8,192 bytes, 256 leaf hashes: one range read of the stored log) and
full entry bundles (8,704 bytes: the same leaves' event hashes, joined with the history), in
random order, at the read rows' connection count, after a second of both to warm the server;
the baseline is row 6's bare FastAPI `async def` endpoint returning a constant, under the same
uvicorn settings and load tool.
"""

from __future__ import annotations

import random

from api.routes.tiles import TileRef, tile_path
from bench.context import Context
from bench.data import Dataset, size_label
from bench.harness import (
    CouldNotRun,
    Figure,
    bare_server,
    could_not_run,
    ledger_server,
    number,
    reason,
    start_ledger_server,
)
from bench.load import closed_loop
from bench.rows_audit import _projected
from projections.merkle import TILE_WIDTH

GOAL = 0.6


def tiles_large(ctx: Context) -> list[Figure]:
    name = "full hash tiles over HTTP, large"
    try:
        dataset = ctx.data.dataset("sqlite", ctx.large_size())
    except Exception as e:
        return [could_not_run(8, name, reason(e))]
    try:
        return _tiles(ctx, dataset)
    except Exception as e:
        return [could_not_run(8, name, reason(e), data=dataset.describe())]


def _tiles(ctx: Context, dataset: Dataset) -> list[Figure]:
    c, seconds = ctx.sizes.read_connections, ctx.sizes.read_seconds
    needed = 3 * seconds + 30
    if ctx.remaining() < needed:
        raise CouldNotRun(f"about {needed:.0f} s needed, {max(0.0, ctx.remaining()):.0f} s of the budget left")
    _projected(ctx, dataset)
    n = dataset.events
    full = n // TILE_WIDTH
    if full < 1:
        raise CouldNotRun(f"{n} events make no full tile")
    rng = random.Random(8)
    indexes = [rng.randrange(full) for _ in range(1000)]
    mixes = {
        "full hash tiles": [tile_path(TileRef(0, i)) for i in indexes],
        "full entry bundles": [tile_path(TileRef(None, i)) for i in indexes],
    }
    label = size_label(n) if n % 1000 == 0 else f"{n:,}"
    with ledger_server(dataset.url, ctx.stores.dir) as server, bare_server(ctx.stores.dir) as bare:
        start_ledger_server(server, timeout=300)
        bare.start("/healthz")
        # A server runs warm: its first reads of the file's pages are not what it serves at.
        closed_loop(server.port, "get", mixes["full hash tiles"] + mixes["full entry bundles"], c, 1.0)
        baseline = closed_loop(bare.port, "get", ["/async"], c, seconds)
        baseline.check("bare FastAPI")
        figures = []
        for what, paths in mixes.items():
            result = closed_loop(server.port, "get", paths, c, seconds)
            result.check(f"{what} over HTTP")
            ratio = result.rate / baseline.rate if baseline.rate else 0.0
            figures.append(Figure(
                8, f"{what} over HTTP, {label} leaves, sqlite",
                data=f"{result.requests:,} GETs of {len(paths):,} random full tiles ({full:,} exist) in "
                f"{result.seconds:.0f} s, {c} connections; store: {dataset.describe()}",
                ours=result.rate, unit="req/s", baseline=baseline.rate,
                baseline_name="bare FastAPI async def endpoint",
                goal=f">= {GOAL}x" if what == "full hash tiles" else "",  # bundles: measured beside them
                met=ratio >= GOAL if what == "full hash tiles" else None,
                notes=f"{ctx.large_note}no token (tiles are open); p50 {number(result.p50_ms or 0)} ms, "
                f"p99 {number(result.p99_ms or 0)} ms (bare p99 {number(baseline.p99_ms or 0)} ms); "
                f"load: {result.tool}",
            ))
    return figures
