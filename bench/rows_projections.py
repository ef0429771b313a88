"""Rows 4-5: projection rebuild (speed and peak memory) and catch-up lag under steady writes."""

from __future__ import annotations

import contextlib
import threading
import time

from bench.context import Context, LedgerService
from bench.data import Dataset, size_label
from bench.harness import (
    CouldNotRun,
    Figure,
    could_not_run,
    ledger_server,
    number,
    percentile,
    reason,
    run_child_task,
    served,
    start_ledger_server,
)
from bench.load import closed_loop, python_load
from projections.queries import ReadModels
from store.db import ReadStore
from store.event_store import open_ledger
from store.settings import Database

REBUILD_GOALS = {"sqlite": 30_000, "postgres": 15_000}
FLAT = 1.5  # peak RSS may grow at most this much from the small to the large dataset


# Row 4.
def rebuild(ctx: Context) -> list[Figure]:
    """Rebuild speed on both backends at the main size; its peak RSS is kept for the large stage."""
    figures = []
    for backend in ("sqlite", "postgres"):
        try:
            figures.append(_rebuild_figure(ctx, backend, ctx.data.dataset(backend, ctx.sizes.data_events)))
        except Exception as e:
            figures.append(could_not_run(4, f"projection rebuild, {backend}", reason(e),
                                         goal=f">= {REBUILD_GOALS[backend]:,}/s"))
    return figures


def rebuild_large(ctx: Context) -> list[Figure]:
    """The rebuild of the large SQLite dataset, and how its peak RSS compares with the small one's."""
    small = ctx.sizes.data_events
    name = "rebuild peak RSS, small -> large, sqlite"
    goal = f"ratio <= {FLAT} (flat)"
    try:
        large = ctx.large_size()
        figure = _rebuild_figure(ctx, "sqlite", ctx.data.dataset("sqlite", large), large=True)
    except Exception as e:
        why = reason(e)
        return [could_not_run(4, "projection rebuild, sqlite, large", why, goal=f">= {REBUILD_GOALS['sqlite']:,}/s"),
                could_not_run(4, name, why, goal=goal)]
    figures = [figure]
    if "small" not in ctx.peak_rss:
        return [*figures, could_not_run(4, name, "the rebuild at the main size did not run", goal=goal)]
    growth = ctx.peak_rss["large"] / ctx.peak_rss["small"]
    small_events = ctx.data.dataset("sqlite", small).events
    large_events = ctx.data.dataset("sqlite", large).events
    figures.append(Figure(
        4, name, data=f"{small_events:,} -> {large_events:,} events", ours=ctx.peak_rss["large"], unit="MiB",
        baseline=ctx.peak_rss["small"], baseline_name=f"the same rebuild at {size_label(small)}",
        goal=goal if not ctx.quick else f"{goal}: judged by the full run", met=None if ctx.quick else growth <= FLAT,
        notes=f"{_quick_note(ctx)}{ctx.large_note}VmHWM of the rebuild process plus its claim-folding process (ru_maxrss would include "
        "the benchmark's own, inherited across fork)",
    ))
    return figures


def _quick_note(ctx: Context) -> str:
    return ("quick: smaller sizes than the full run's 100k and 1M (too small to judge flatness, which caches "
            "reached only at larger sizes decide); " if ctx.quick else "")


def _rebuild_figure(ctx: Context, backend: str, dataset: Dataset, large: bool = False) -> Figure:
    rate, scan_rate, peak, scan_peak = _rebuild(ctx, dataset)
    if backend == "sqlite":
        ctx.peak_rss["large" if large else "small"] = peak
        if not large:
            ctx.rates["rebuild"] = rate
    return Figure(
        4, f"projection rebuild, {backend}" + (", large" if large else ""), data=dataset.describe(), ours=rate,
        unit="events/s", baseline=scan_rate, baseline_name="raw scan of the notification log",
        goal=f">= {REBUILD_GOALS[backend]:,}/s", met=rate >= REBUILD_GOALS[backend],
        notes=f"{_quick_note(ctx)}{ctx.large_note if large else ''}`ProjectionEngine.rebuild` in a subprocess; "
        f"peak RSS {peak:.0f} MiB, both processes' peaks added (raw scan {scan_peak:.0f} MiB)",
    )


def _rebuild(ctx: Context, dataset: Dataset) -> tuple[float, float, float, float]:
    scan, scan_proc = run_child_task("scan", dataset.url, cwd=ctx.stores.dir)
    built, built_proc = run_child_task("rebuild", dataset.url, cwd=ctx.stores.dir)
    if built["events"] != dataset.events or scan["events"] != dataset.events:
        raise CouldNotRun(
            f"the rebuild applied {built['events']:,} and the scan read {scan['events']:,} of "
            f"{dataset.events:,} events"
        )
    scan_rate = scan["events"] / scan["seconds"]
    ctx.scans[dataset.url] = scan_rate
    # A big log's claims are folded by a second process (two cores): its memory counts too.
    peak = built_proc.max_rss_mib + float(built.get("helper_peak_rss_mib", 0))
    return built["events"] / built["seconds"], scan_rate, peak, scan_proc.max_rss_mib


# Row 5.
class LagObserver:
    """Polls the log's head and the projections' position; when each position appeared in each."""

    def __init__(self, url: str, interval: float = 0.002) -> None:
        database = Database.from_url(url)
        # One connection each: the servers under test need the database's connections.
        self.ledger = open_ledger(database, env={"POSTGRES_POOL_SIZE": "1", "POSTGRES_MAX_OVERFLOW": "0"})
        self.store = ReadStore(database, pool_size=1)
        self.read = ReadModels(self.store)
        self.interval = interval
        self.committed: dict[int, float] = {}
        self.visible: dict[int, float] = {}
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-observer", daemon=True)

    def start(self) -> None:
        self._head = self.ledger.max_position()
        self._position = self.read.position()
        self.started = time.perf_counter()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            head = self.ledger.max_position()
            t1 = time.perf_counter()
            position = self.read.position()
            t2 = time.perf_counter()
            for p in range(self._head + 1, head + 1):
                self.committed[p] = (t0 + t1) / 2
            for p in range(self._position + 1, position + 1):
                self.visible[p] = (t1 + t2) / 2
            self._head, self._position = max(self._head, head), max(self._position, position)
            self.polls += 1
            self._stop.wait(self.interval)

    def settle(self, timeout: float) -> None:
        """Wait (bounded) until the projections have reached the last position seen committed."""
        deadline = time.monotonic() + timeout
        while self._position < self._head and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> float:
        """Stop polling; returns the mean time between polls (the measurement's resolution)."""
        self._stop.set()
        self._thread.join()
        period = (time.perf_counter() - self.started) / max(1, self.polls)
        self.store.close()
        self.ledger.close()
        return period

    def lags_ms(self, after: float) -> list[float]:
        return [
            max(0.0, (self.visible[p] - t) * 1000) for p, t in self.committed.items()
            if t >= after and p in self.visible
        ]


def catch_up_lag(ctx: Context) -> list[Figure]:
    """Lag at the goal's steady rate, served as `claims serve` starts by default (one process);
    when that cannot take the rate, also with `--workers 2` (the deployment for more writes
    than one process takes); when neither can, also at 60% of what the last one took, so the
    projections' own lag shows apart from the queue in front of the writer."""
    figures = []
    goal = "p99 < 100 ms"
    rate = ctx.sizes.lag_rate
    for backend in ("postgres", "sqlite"):
        name = _lag_name(backend, 1)
        try:
            service = ctx.service(backend)
            figure, taken = _catch_up_lag(ctx, service, backend, rate, workers=1)
            figures.append(figure)
            workers = 1
            if taken < 0.9 * rate:
                workers = 2
                name = _lag_name(backend, 2)
                figure, taken = _catch_up_lag(ctx, service, backend, rate, workers=2)
                figures.append(figure)
            if taken < 0.9 * rate:
                name = f"catch-up lag p99 at a rate the server takes, {backend}, {served(workers)}"
                figure, _ = _catch_up_lag(ctx, service, backend, round(0.6 * taken), workers=workers)
                figure.name, figure.goal, figure.met, figure.baseline_name = name, "", None, "-"
                figure.notes += f"; the goal applies at {rate:g}/s (above)"
                figures.append(figure)
        except Exception as e:
            figures.append(could_not_run(5, name, reason(e), goal=goal))
    return figures


def _lag_name(backend: str, workers: int) -> str:
    return f"catch-up lag p99, {backend}, {served(workers)}"


def _catch_up_lag(
    ctx: Context, service: LedgerService, backend: str, rate: float, workers: int,
) -> tuple[Figure, float]:
    """The lag figure at a steady `rate` of writes, and the rate the server actually took:
    `service`'s own server for one process, else a `--workers` server on its dataset."""
    if workers == 1:
        return _lag_figure(ctx, service, backend, rate, service.server.port, workers)
    ctx.stop_service(backend)  # the two would share the cores
    server = ledger_server(service.dataset.url, ctx.stores.dir, workers=workers)
    try:
        start_ledger_server(server, timeout=600)
        # As warm as the one process left by the rows before: each writer caches the claims it writes.
        with contextlib.suppress(Exception):  # a failing server fails the measured run, which says why
            closed_loop(server.port, "assert", service.dataset.fixture.keys, 32, 3.0,
                        token=service.token, prefix=f"lagwarm-{backend[:2]}-{ctx.stores.run_id}")
        return _lag_figure(ctx, service, backend, rate, server.port, workers)
    finally:
        server.stop()


def _lag_figure(
    ctx: Context, service: LedgerService, backend: str, rate: float, port: int, workers: int,
) -> tuple[Figure, float]:
    sizes = ctx.sizes
    name = _lag_name(backend, workers)
    observer = LagObserver(service.dataset.url)
    observer.start()
    try:
        load = python_load(
            port, "assert", service.dataset.fixture.keys, 32, sizes.lag_seconds,
            token=service.token, prefix=f"lag{rate:g}-{backend[:2]}-{workers}w-{ctx.stores.run_id}", rate=rate,
        )
        result = load.wait()
        observer.settle(timeout=30.0)  # every committed write gets its time of becoming visible
    finally:
        resolution = observer.stop()
    result.check(name)
    warm = observer.started + 1.5  # skip the first second and a half: connections, caches
    lags = observer.lags_ms(after=warm)
    unseen = sum(1 for p, t in observer.committed.items() if t >= warm and p not in observer.visible)
    if len(lags) < 50:
        raise CouldNotRun(f"only {len(lags)} positions were seen committed and then visible")
    p50, p99 = percentile(lags, 50), percentile(lags, 99)
    sustained = result.rate >= 0.9 * rate
    shortfall = "" if sustained else (
        f"; NOT STEADY: the server took only {result.rate:,.0f} of the {rate:g} writes/s asked "
        "(requests queued behind each other)"
    )
    return Figure(
        5, name,
        data=f"{result.requests:,} assertions POSTed at {result.rate:,.0f}/s for {result.seconds:.0f} s; "
        f"store: {service.dataset.describe()}",
        ours=p99, unit="ms", baseline_name="- (absolute goal)", goal="p99 < 100 ms",
        met=p99 < 100 and unseen == 0 and sustained, lower_is_better=True,
        notes=f"p50 {number(p50)} ms over {len(lags):,} positions; commit = first seen in the log, visible = "
        f"projection position reached it, polled every {resolution * 1000:.1f} ms; steady {rate:g}/s "
        f"open-loop (python load generator), write p99 {number(result.p99_ms or 0)} ms"
        + (f"; {unseen} not visible 30 s after the load ended" if unseen else "") + shortfall,
    ), result.rate
