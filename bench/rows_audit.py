"""Row 7: `claims verify` over a whole store, and Merkle proofs at the large dataset's size."""

from __future__ import annotations

import random
import subprocess
import time

from bench.context import Context
from bench.data import Dataset, size_label
from bench.harness import (
    CouldNotRun,
    Figure,
    bare_server,
    child_env,
    claims_command,
    could_not_run,
    http_json,
    ledger_server,
    make_token,
    number,
    percentile,
    reason,
    run_child_task,
    run_measured,
    start_ledger_server,
    tail,
)
from bench.load import closed_loop
from domain.merkle import consistency_path, inclusion_path, verify_consistency, verify_inclusion
from projections.merkle import MerkleLog
from projections.tables import LIVE
from store.db import ReadStore
from store.settings import Database


def audit(ctx: Context) -> list[Figure]:
    """`claims verify` at the main size on both backends."""
    figures = []
    for backend in ("sqlite", "postgres"):
        name = f"claims verify, {backend}"
        try:
            figure = _verify(ctx, name, ctx.data.dataset(backend, ctx.sizes.data_events))
        except Exception as e:
            figures.append(could_not_run(7, name, reason(e)))
            continue
        if backend == "sqlite" and figure.ours:
            ctx.rates["verify"] = figure.ours
        figures.append(figure)
    return figures


def audit_large(ctx: Context) -> list[Figure]:
    """Proofs at the large dataset's size, in process and over HTTP; `claims verify` on it when it
    fits in the time left (it rarely does: it runs last)."""
    figures = []
    name = "claims verify, sqlite, large"
    try:
        dataset = ctx.data.dataset("sqlite", ctx.large_size())
    except Exception as e:
        why = reason(e)
        return [could_not_run(7, "Merkle proofs, large", why), could_not_run(7, name, why)]
    try:
        figures += _proofs(ctx, dataset)
    except Exception as e:
        figures.append(could_not_run(7, f"Merkle proofs at {size_label(dataset.events)} leaves", reason(e)))
    try:
        figures += _http_proofs(ctx, dataset)
    except Exception as e:
        figures.append(could_not_run(7, f"Merkle proofs over HTTP at {size_label(dataset.events)} leaves", reason(e)))
    try:
        needed = dataset.events / ctx.rates.get("verify", 5_000) * 1.15
        if needed > ctx.remaining():
            raise CouldNotRun(
                f"at this run's verify rate it would take about {needed:.0f} s; {max(0.0, ctx.remaining()):.0f} s "
                f"of the {ctx.sizes.budget_seconds:.0f} s budget are left"
            )
        figure = _verify(ctx, name, dataset)
        figure.notes = ctx.large_note + figure.notes
        figures.append(figure)
    except Exception as e:
        figures.append(could_not_run(7, name, reason(e), data=dataset.describe()))
    return figures


def _http_proofs(ctx: Context, dataset: Dataset) -> list[Figure]:
    """Proof requests to `claims serve` on the large dataset, beside the bare FastAPI endpoint."""
    c, seconds = ctx.sizes.read_connections, ctx.sizes.read_seconds
    needed = 3 * seconds + 30
    if ctx.remaining() < needed:
        raise CouldNotRun(f"about {needed:.0f} s needed, {max(0.0, ctx.remaining()):.0f} s of the budget left")
    n = dataset.events
    rng = random.Random(2021)
    mixes = {
        "inclusion": [f"/v1/audit/proofs/inclusion?position={rng.randint(1, n)}&tree_size={n}" for _ in range(1000)],
        "consistency": [f"/v1/audit/proofs/consistency?from_size={rng.randint(1, n - 1)}&to_size={n}"
                        for _ in range(1000)],
    }
    token = make_token(dataset.url, "auditor", ctx.stores.dir)
    with ledger_server(dataset.url, ctx.stores.dir) as server, bare_server(ctx.stores.dir) as bare:
        start_ledger_server(server, timeout=300)
        bare.start("/healthz")
        baseline = closed_loop(bare.port, "get", ["/async"], c, seconds)
        baseline.check("bare FastAPI")
        figures = []
        for what, paths in mixes.items():
            status, body = http_json(server.base + paths[0], token=token)
            if status != 200:
                raise CouldNotRun(f"GET {paths[0]} answered {status}: {str(body)[:200]}")
            result = closed_loop(server.port, "get", paths, c, seconds, token=token)
            result.check(f"{what} proofs over HTTP")
            figures.append(Figure(
                7, f"{what} proofs over HTTP, {size_label(n) if n % 1000 == 0 else f'{n:,}'} leaves, sqlite",
                data=f"{result.requests:,} GETs of {len(paths):,} random proofs in {result.seconds:.0f} s, "
                f"{c} connections; store: {dataset.describe()}",
                ours=result.rate, unit="req/s", baseline=baseline.rate,
                baseline_name="bare FastAPI async def endpoint",
                notes=f"{ctx.large_note}auditor token; p50 {number(result.p50_ms or 0)} ms, "
                f"p99 {number(result.p99_ms or 0)} ms (bare p99 {number(baseline.p99_ms or 0)} ms); "
                f"load: {result.tool}",
            ))
    return figures


def _verify(ctx: Context, name: str, dataset: Dataset) -> Figure:
    command = [*claims_command(), "verify"]
    env = child_env(LEDGER_DATABASE_URL=dataset.url)
    probe = subprocess.run([*command, "--help"], env=env, cwd=ctx.stores.dir, capture_output=True, text=True,
                           timeout=60, check=False)
    if probe.returncode != 0:
        raise CouldNotRun(f"`claims verify` is not available yet: {tail(probe.stderr or probe.stdout, 1)}")
    _projected(ctx, dataset)
    result = run_measured(command, env, ctx.stores.dir, timeout=1800)
    if result.returncode not in (0, 1):
        raise CouldNotRun(f"`claims verify` exited {result.returncode}: {tail(result.stderr or result.stdout)}")
    scan = ctx.scans.get(dataset.url)
    if scan is None:
        found, _ = run_child_task("scan", dataset.url, cwd=ctx.stores.dir)
        scan = ctx.scans[dataset.url] = found["events"] / found["seconds"]
    rate = dataset.events / result.seconds
    problems = "" if result.returncode == 0 else f"; FOUND PROBLEMS (exit 1): {tail(result.stdout + result.stderr)}"
    return Figure(
        7, name, data=dataset.describe(), ours=rate, unit="events/s", baseline=scan,
        baseline_name="raw scan of the notification log",
        notes=f"whole command ({result.seconds:.1f} s wall, process start included): hash chains, Merkle root, "
        f"projections vs a fresh rebuild; peak RSS {result.max_rss_mib:.0f} MiB{problems}",
    )


def _projected(ctx: Context, dataset: Dataset) -> MerkleLog:
    """The dataset's projections (and Merkle log) complete: rebuilt now unless row 4 did it."""
    store = ReadStore(Database.from_url(dataset.url), pool_size=1)
    merkle = MerkleLog(LIVE)
    try:
        try:
            with store.reading() as cur:
                size = merkle.size(cur)
        except Exception:
            size = 0
    finally:
        store.close()
    if size != dataset.events:
        run_child_task("rebuild", dataset.url, cwd=ctx.stores.dir)
    return merkle


def _proofs(ctx: Context, dataset: Dataset) -> list[Figure]:
    merkle = _projected(ctx, dataset)
    store = ReadStore(Database.from_url(dataset.url), pool_size=1)
    rng = random.Random(9162)
    count = ctx.sizes.proofs
    try:
        with store.reading() as cur:
            n = merkle.size(cur)
            root = merkle.root(cur, n)
            leaves = [bytes(h) for (h,) in cur.execute(
                f"SELECT hash FROM {merkle.leaves} ORDER BY leaf_index").fetchall()]
        if n < 2 or len(leaves) != n:
            raise CouldNotRun(f"the Merkle log holds {n} leaves ({len(leaves)} read)")
        inclusion_ms, consistency_ms = [], []
        for _ in range(count):
            index = rng.randrange(n)
            started = time.perf_counter()
            with store.reading() as cur:
                path = merkle.inclusion(cur, index, n)
            inclusion_ms.append((time.perf_counter() - started) * 1000)
            if not verify_inclusion(leaves[index], index, n, path, root):
                raise CouldNotRun(f"the inclusion proof of leaf {index} in {n} did not verify")
        for _ in range(count):
            first = rng.randrange(1, n)
            started = time.perf_counter()
            with store.reading() as cur:
                proof = merkle.consistency(cur, first, n)
                first_root = merkle.root(cur, first)
            consistency_ms.append((time.perf_counter() - started) * 1000)
            if not verify_consistency(first, n, first_root, root, proof):
                raise CouldNotRun(f"the consistency proof {first} -> {n} did not verify")
    finally:
        store.close()
    # The baseline: the RFC's recursive definitions over every leaf hash, held in memory.
    reference_inclusion, reference_consistency = [], []
    for _ in range(ctx.sizes.reference_proofs):
        index = rng.randrange(n)
        started = time.perf_counter()
        inclusion_path(leaves, index)
        reference_inclusion.append((time.perf_counter() - started) * 1000)
        first = rng.randrange(1, n)
        started = time.perf_counter()
        consistency_path(leaves, first)
        reference_consistency.append((time.perf_counter() - started) * 1000)
    quick_note = f"quick: {n:,} leaves instead of 1M; " if ctx.quick else ctx.large_note
    figures = []
    for what, ours, reference, unit_note in (
        ("inclusion", inclusion_ms, reference_inclusion, "one proof"),
        ("consistency", consistency_ms, reference_consistency, "one proof and the old root"),
    ):
        figures.append(Figure(
            7, f"{what} proof at {size_label(n) if n % 1000 == 0 else f'{n:,}'} leaves, sqlite",
            data=f"{n:,} leaves, {len(ours)} random proofs", ours=percentile(ours, 50), unit="ms",
            baseline=sum(reference) / len(reference),
            baseline_name=f"RFC 9162 recursion over all leaves in memory, {len(reference)} run(s)",
            lower_is_better=True,
            notes=f"{quick_note}p50 of {unit_note} from the stored log in its own read transaction, "
            f"p99 {number(percentile(ours, 99))} ms; every proof verified",
        ))
    return figures
