"""Rows 1-3: single writes in process, HTTP writes under concurrency, bulk import."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field

from bench.baseline import RawApp, RawWrites
from bench.context import Context, LedgerService
from bench.data import Dataset, size_label
from bench.harness import (
    Figure,
    could_not_run,
    ledger_server,
    number,
    reason,
    run_child_task,
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
        ours=ours, unit="writes/s", baseline=baseline,
        baseline_name="raw eventsourcing load+trigger+save, the Ledger's library settings and aggregate cache",
        goal=">= 0.9x raw", met=ours / baseline >= 0.9,
        notes="in process, one command per transaction, after a warm-up write per claim; claims grow to "
        f"{2 + writes // claims} events; the raw app's settings are read from a Ledger opened on its store",
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
    processes, each with its group-commit writer, and the projection process).

    Each figure stands beside row 1's raw single writer (the goal's baseline) and, as rows of
    their own, beside what a user would write with the library instead: as many writer threads
    as there are clients, and at the most clients one writer saving that many notes per
    transaction (`raw_writers`)."""
    goal = ">= 3x raw single writer and >= 1,500/s at 32 clients"
    most = max(ctx.sizes.http_clients)
    try:
        baseline = raw_single_writer(ctx, "postgres")
        dataset = ctx.data.dataset("postgres", ctx.sizes.data_events)
    except Exception as e:
        why = reason(e)
        return [could_not_run(2, _http_name(c, w), why, goal=goal if c == most else "")
                for w in HTTP_WORKERS for c in ctx.sizes.http_clients]
    # Before the server is started for the figures below (when row 6 has not already done so),
    # so the baseline shares the cores with nothing of this row's.
    raw = raw_writers(ctx, dataset)
    try:
        service = ctx.service("postgres")
    except Exception as e:
        why = reason(e)
        return [could_not_run(2, _http_name(c, w), why, goal=goal if c == most else "")
                for w in HTTP_WORKERS for c in ctx.sizes.http_clients]
    figures = _http_figures(ctx, service.server.port, service, 1, baseline, raw, goal)
    ctx.stop_service("postgres")  # the two would share the cores
    server = ledger_server(service.dataset.url, ctx.stores.dir, workers=2)
    try:
        start_ledger_server(server, timeout=600)
    except Exception as e:
        server.stop()
        why = reason(e)
        return [*figures, *(could_not_run(2, _http_name(c, 2), why, goal=goal if c == most else "")
                            for c in ctx.sizes.http_clients)]
    try:
        figures += _http_figures(ctx, server.port, service, 2, baseline, raw, goal)
    finally:
        server.stop()
    return figures


HTTP_WORKERS = (1, 2)


@dataclass
class RawWriters:
    """The raw library's HTTP-write baselines: writes/s by writer threads, and in batches."""

    notes: int
    history: int  # acts each note starts with, after the one that opens it
    warm_up_writers: int
    threads: dict[int, RawWrites] = field(default_factory=dict)  # by writer threads
    batched: dict[int, RawWrites] = field(default_factory=dict)  # by notes per transaction
    error: str = ""  # why none could be measured


def raw_writers(ctx: Context, dataset: Dataset) -> RawWriters:
    """The raw library on PostgreSQL, with row 1's baseline settings (the Ledger's library
    settings and aggregate cache), in a process of its own tuned as `claims serve` is
    (bench/child.py raw-writes): threads each doing load+trigger+save, one per client count
    above 1, and one writer saving as many notes per transaction as the most clients (the most
    the group writer can gather from them), for as long as each HTTP run, after a warm-up as
    long as the server's. As many notes as the HTTP runs have claims, each starting with the
    dataset's mean history."""
    sizes = ctx.sizes
    notes = len(dataset.fixture.keys)
    history = max(0, round(dataset.events / max(1, dataset.fixture.claims)) - 1)  # the register is one
    most = max(sizes.http_clients)
    raw = RawWriters(notes=notes, history=history, warm_up_writers=most)
    runs: list[dict[str, int]] = [{"writers": c} for c in sizes.http_clients if c > 1] + [{"batch": most}]
    warm_up = _warm_up_seconds(ctx)
    spec = {"notes": notes, "history": history, "warm_up": warm_up, "warm_up_writers": most,
            "seconds": sizes.http_seconds, "runs": runs}
    try:
        answer, _ = run_child_task(
            "raw-writes", ctx.stores.url("postgres", "http_raw"), json.dumps(spec), cwd=ctx.stores.dir,
            timeout=300 + warm_up + sizes.http_seconds * len(runs),
        )
    except Exception as e:
        raw.error = f"raw baseline: {reason(e)}"
        return raw
    for run, found in zip(runs, answer["runs"], strict=True):
        result = RawWrites(**found)
        if "batch" in run:
            raw.batched[run["batch"]] = result
        else:
            raw.threads[run["writers"]] = result
    return raw


def _warm_up_seconds(ctx: Context) -> float:
    return max(2.0, ctx.sizes.http_seconds / 2)


def _http_name(clients: int, workers: int) -> str:
    return f"HTTP writes, {clients} client{'s' if clients > 1 else ''}, postgres, {served(workers)}"


def _http_figures(
    ctx: Context, port: int, service: LedgerService, workers: int, baseline: float, raw: RawWriters, goal: str,
) -> list[Figure]:
    figures = []
    keys = service.dataset.fixture.keys
    most = max(ctx.sizes.http_clients)
    # Steady state, not a cold start: each writer process caches the claims it writes, and
    # a fresh one first reads each claim whole from the store.
    warm_up = _warm_up_seconds(ctx)
    with contextlib.suppress(Exception):  # a failing server fails the measured runs below, which say why
        closed_loop(port, "assert", keys, most, warm_up,
                    token=service.token, prefix=f"h{workers}w-{ctx.stores.run_id}")
    for clients in ctx.sizes.http_clients:
        name = _http_name(clients, workers)
        at_goal = clients == most
        extra = [(f"{name}, vs raw {clients} threads", raw.threads.get(clients),
                  f"raw library, {clients} writer threads, load+trigger+save each")] if clients > 1 else []
        if at_goal:
            extra.append((f"{name}, vs raw batches of {clients}", raw.batched.get(clients),
                          f"raw library, 1 writer, {clients} notes per transaction"))
        try:
            result = closed_loop(
                port, "assert", keys, clients, ctx.sizes.http_seconds,
                token=service.token, prefix=f"h{workers}x{clients}-{ctx.stores.run_id}",
            )
            result.check(name)
        except Exception as e:
            why = reason(e)
            figures.append(could_not_run(2, name, why, goal=goal if at_goal else ""))
            figures += [could_not_run(2, extra_name, why) for extra_name, _, _ in extra]
            continue
        rate = result.rate
        figures.append(Figure(
            2, name,
            data=f"{result.requests:,} assertions POSTed to {len(keys):,} claims in {result.seconds:.0f} s; "
            f"store: {service.dataset.describe()}",
            ours=rate, unit="writes/s", baseline=baseline, baseline_name="raw library, 1 writer, row 1",
            goal=goal if at_goal else "", met=(rate >= 3 * baseline and rate >= 1500) if at_goal else None,
            notes=f"p50 {number(result.p50_ms or 0)} ms, p99 {number(result.p99_ms or 0)} ms; after a "
            f"{warm_up:.0f} s warm-up at {most} clients; load: {result.tool}",
        ))
        figures += [_vs_raw(extra_name, clients, rate, run, raw, baseline_name)
                    for extra_name, run, baseline_name in extra]
    return figures


def _vs_raw(name: str, clients: int, rate: float, run: RawWrites | None, raw: RawWriters,
            baseline_name: str) -> Figure:
    """The HTTP rate at `clients` beside a raw-library run (`raw_writers`)."""
    if raw.error or run is None:
        return could_not_run(2, name, raw.error or "the raw baseline did not report this run")
    failed = run.failed()
    if failed is not None:
        return could_not_run(2, name, f"raw baseline: {failed}")
    conflicts = f", {run.conflicts:,} version conflicts retried" if run.batch == 1 else ""
    return Figure(
        2, name,
        data=f"the {clients}-client run above; raw: {run.writes:,} writes to {raw.notes:,} notes "
        f"({1 + raw.history} events each at the start) in {run.seconds:.0f} s",
        ours=rate, unit="writes/s", baseline=run.rate, baseline_name=baseline_name,
        notes="raw: row 1's baseline settings (the Ledger's library settings and aggregate cache), in its own "
        f"process tuned as claims serve (tune_gc), after a warm-up at {raw.warm_up_writers} threads{conflicts}",
    )


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
