"""Rows 1-3: single writes in process, HTTP writes under concurrency, bulk import."""

from __future__ import annotations

import contextlib
import json
import time

from bench.baseline import RawApp
from bench.context import Context, LedgerService
from bench.data import size_label
from bench.harness import (
    Figure,
    could_not_run,
    ledger_server,
    number,
    reason,
    served,
    start_ledger_server,
)
from bench.load import closed_loop
from bench.loadgen import assertion_fields
from domain.commands import RegisterClaim
from fixtures.replay import FLUSH_EVERY
from store.event_store import open_ledger
from store.settings import Database

BACKENDS = ("sqlite", "postgres")
IMPORT_GOALS = {"sqlite": 20_000, "postgres": 10_000}


# Row 1.
def single_writes(ctx: Context) -> list[Figure]:
    """One command, one transaction, through the Ledger vs the raw library's load+trigger+save."""
    figures = []
    for backend in BACKENDS:
        name = f"single writes, Ledger, {backend}"
        try:
            figures.append(_single_writes(ctx, backend, name))
        except Exception as e:
            figures.append(could_not_run(1, name, reason(e), goal=">= 0.9x raw"))
    return figures


def _single_writes(ctx: Context, backend: str, name: str) -> Figure:
    sizes = ctx.sizes
    claims, rounds = sizes.single_claims, sizes.single_write_rounds
    ledger = open_ledger(Database.from_url(ctx.stores.url(backend, "single_ours")))
    raw = RawApp(ctx.stores.url(backend, "single_raw"))
    try:
        keys = [f"bench-claim-{i}" for i in range(claims)]
        ledger.execute([
            RegisterClaim.build({"statement": f"Proposition number {i}", "key": key}) for i, key in enumerate(keys)
        ])
        ids = raw.open_notes(claims)

        def run_ours(r: int, writes: int) -> float:
            started = time.perf_counter()
            for i in range(writes):
                ledger.assert_claim(keys[i % claims], **assertion_fields(f"s{r}-{i}"))
            return time.perf_counter() - started

        def run_raw(r: int, writes: int) -> float:
            started = time.perf_counter()
            for i in range(writes):
                raw.add_note(ids[i % claims], assertion_fields(f"s{r}-{i}"))
            return time.perf_counter() - started

        # Warm-up (connections, caches, the first pages), which also sizes the rounds so each
        # side of each takes about round_seconds; both sides then do exactly the same writes.
        slowest = max(run_ours(0, claims), run_raw(0, claims)) / claims
        per_round = max(claims // 2, min(20 * claims, int(sizes.round_seconds / slowest)))
        ours_seconds = raw_seconds = 0.0
        # Alternate which goes first, so drift in the machine's load hits both sides alike.
        for r in range(1, rounds + 1):
            if r % 2:
                ours_seconds += run_ours(r, per_round)
                raw_seconds += run_raw(r, per_round)
            else:
                raw_seconds += run_raw(r, per_round)
                ours_seconds += run_ours(r, per_round)
    finally:
        ledger.close()
        raw.close()
    writes = per_round * rounds
    ours, baseline = writes / ours_seconds, writes / raw_seconds
    ctx.raw_single_writer[backend] = baseline
    return Figure(
        1, name, data=f"{writes:,} writes/side over {claims} claims, {rounds} alternating rounds",
        ours=ours, unit="writes/s", baseline=baseline, baseline_name="raw eventsourcing load+trigger+save",
        goal=">= 0.9x raw", met=ours / baseline >= 0.9,
        notes="in process, one command per transaction, after a warm-up write per claim; claims grow to "
        f"{2 + writes // claims} events",
    )


def raw_single_writer(ctx: Context, backend: str) -> float:
    """Row 1's raw rate when it ran, else measured now the same way."""
    if backend not in ctx.raw_single_writer:
        _single_writes(ctx, backend, "raw single writer")
    return ctx.raw_single_writer[backend]


# Row 2.
def http_writes(ctx: Context) -> list[Figure]:
    """POSTed assertions at 1, 8 and 32 concurrent clients on PostgreSQL (group commit): served by
    `claims serve` as it starts by default (one process), then with `--workers 2` (two API
    processes, each with its group-commit writer, and the projection process)."""
    goal = ">= 3x raw single writer and >= 1,500/s at 32 clients"
    try:
        baseline = raw_single_writer(ctx, "postgres")
        service = ctx.service("postgres")
    except Exception as e:
        why = reason(e)
        return [could_not_run(2, _http_name(c, w), why, goal=goal if c == 32 else "")
                for w in HTTP_WORKERS for c in ctx.sizes.http_clients]
    figures = _http_figures(ctx, service.server.port, service, 1, baseline, goal)
    ctx.stop_service("postgres")  # the two would share the cores
    server = ledger_server(service.dataset.url, ctx.stores.dir, workers=2)
    try:
        start_ledger_server(server, timeout=600)
    except Exception as e:
        server.stop()
        return [*figures, *(could_not_run(2, _http_name(c, 2), reason(e), goal=goal if c == 32 else "")
                            for c in ctx.sizes.http_clients)]
    try:
        figures += _http_figures(ctx, server.port, service, 2, baseline, goal)
    finally:
        server.stop()
    return figures


HTTP_WORKERS = (1, 2)


def _http_name(clients: int, workers: int) -> str:
    return f"HTTP writes, {clients} client{'s' if clients > 1 else ''}, postgres, {served(workers)}"


def _http_figures(
    ctx: Context, port: int, service: LedgerService, workers: int, baseline: float, goal: str,
) -> list[Figure]:
    figures = []
    keys = service.dataset.fixture.keys
    # Steady state, not a cold start: each writer process caches the claims it writes, and
    # a fresh one first reads each claim whole from the store.
    warm_up = max(2.0, ctx.sizes.http_seconds / 2)
    with contextlib.suppress(Exception):  # a failing server fails the measured runs below, which say why
        closed_loop(port, "assert", keys, max(ctx.sizes.http_clients), warm_up,
                    token=service.token, prefix=f"h{workers}w-{ctx.stores.run_id}")
    for clients in ctx.sizes.http_clients:
        name = _http_name(clients, workers)
        at_goal = clients == max(ctx.sizes.http_clients)
        try:
            result = closed_loop(
                port, "assert", keys, clients, ctx.sizes.http_seconds,
                token=service.token, prefix=f"h{workers}x{clients}-{ctx.stores.run_id}",
            )
            result.check(name)
        except Exception as e:
            figures.append(could_not_run(2, name, reason(e), goal=goal if at_goal else ""))
            continue
        rate = result.rate
        figures.append(Figure(
            2, name,
            data=f"{result.requests:,} assertions POSTed to {len(keys):,} claims in {result.seconds:.0f} s; "
            f"store: {service.dataset.describe()}",
            ours=rate, unit="writes/s", baseline=baseline, baseline_name="raw library, 1 writer, row 1",
            goal=goal if at_goal else "", met=(rate >= 3 * baseline and rate >= 1500) if at_goal else None,
            notes=f"p50 {number(result.p50_ms or 0)} ms, p99 {number(result.p99_ms or 0)} ms; after a "
            f"{warm_up:.0f} s warm-up at {max(ctx.sizes.http_clients)} clients; load: {result.tool}",
        ))
    return figures


# Row 3.
def bulk_import(ctx: Context) -> list[Figure]:
    """import_fixture acts/s vs the raw library saving the same lines as events in batches."""
    figures = []
    goals = IMPORT_GOALS
    events = ctx.sizes.data_events
    for backend in BACKENDS:
        name = f"bulk import, {backend}"
        goal = f">= 1.0x raw and >= {goals[backend]:,}/s"
        try:
            dataset = ctx.data.dataset(backend, events)
            raw = RawApp(ctx.stores.url(backend, f"import_raw_{size_label(events)}"))
            try:
                started = time.perf_counter()
                with open(dataset.fixture.path, encoding="utf-8") as f:
                    saved = raw.save_lines_in_batches((json.loads(line) for line in f), FLUSH_EVERY)
                raw_seconds = time.perf_counter() - started
            finally:
                raw.close()
        except Exception as e:
            figures.append(could_not_run(3, name, reason(e), goal=goal))
            continue
        ours = dataset.report.acts_per_second
        baseline = saved / raw_seconds
        figures.append(Figure(
            3, name, data=dataset.describe(), ours=ours, unit="acts/s", baseline=baseline,
            baseline_name=f"raw eventsourcing, batches of {FLUSH_EVERY:,}",
            goal=goal, met=ours >= baseline and ours >= goals[backend],
            notes="ours: import_fixture, one transaction, validated and hashed; raw: the same file's lines "
            "parsed and saved as events of a rule-free aggregate",
        ))
    return figures


def bulk_import_large(ctx: Context) -> list[Figure]:
    """The large SQLite dataset's import (the fixture for the large rebuild, verify and proofs)."""
    name = "bulk import, large, sqlite"
    goal = f">= {IMPORT_GOALS['sqlite']:,}/s"
    try:
        large = ctx.data.dataset("sqlite", ctx.large_size())
    except Exception as e:
        return [could_not_run(3, name, reason(e), goal=goal)]
    return [Figure(
        3, name, data=large.describe(), ours=large.report.acts_per_second, unit="acts/s",
        baseline_name="- (raw compared at the smaller size above)",
        goal=goal, met=large.report.acts_per_second >= IMPORT_GOALS["sqlite"],
        notes=f"{ctx.large_note}{large.report.seconds:.0f} s for the whole file in one transaction",
    )]
