"""Row 13: `claims audit --mirror`: the first audit (rate, peak RSS), an incremental audit of
1,000 new events beside a full audit of the same ledger, and `claims audit show` from the mirror
beside the server's time-travel GET."""

from __future__ import annotations

import random
import sqlite3
import time
import urllib.parse
from pathlib import Path

from audit.mirror import Mirror
from bench.context import Context
from bench.data import size_label
from bench.harness import (
    CouldNotRun,
    Figure,
    child_env,
    claims_command,
    could_not_run,
    http_json,
    ledger_server,
    make_token,
    reason,
    run_measured,
    start_ledger_server,
    tail,
)
from store.event_store import open_ledger
from store.settings import Database

NEW_EVENTS = 1_000
SHOW_READS = 300


def mirror_audit(ctx: Context, events: int | None = None) -> list[Figure]:
    """The mirror's figures on a copy of the SQLite dataset (the copy grows; the dataset does not)."""
    n = events or ctx.sizes.data_events
    try:
        return _mirror(ctx, n)
    except Exception as e:
        return [could_not_run(13, f"claims audit --mirror, {size_label(n)} events", reason(e))]


def mirror_audit_large(ctx: Context) -> list[Figure]:
    """At the large size, on a copy of the dataset: the first audit into an empty mirror (is its
    peak RSS as flat as the goal says?), then, when the budget allows, the incremental audit of
    1,000 new events beside a full audit of the same ledger."""
    name = "claims audit --mirror, first audit, sqlite, large"
    try:
        dataset = ctx.data.dataset("sqlite", ctx.large_size())
        needed = dataset.events / ctx.rates.get("mirror", 5_000) * 1.3 + 60
        if needed > ctx.remaining():
            raise CouldNotRun(f"about {needed:.0f} s needed, {max(0.0, ctx.remaining()):.0f} s of the budget left")
        label = size_label(dataset.events)
        url = _copy(dataset.url, ctx.stores.dir / f"mirror_large_{label}.db")
        token = make_token(url, "auditor", ctx.stores.dir)
        with ledger_server(url, ctx.stores.dir) as server:
            start_ledger_server(server, timeout=900)
            directory = ctx.stores.dir / f"mirror_large_{label}"
            audit = [*claims_command(), "audit", "--url", server.base, "--token", token]
            seconds, rss = _audit([*audit, "--mirror", str(directory)], ctx, "the first audit with a mirror")
            rate = dataset.events / seconds
            figures = [Figure(
                13, f"claims audit --mirror, first audit, {label} events, sqlite, large",
                data=f"{dataset.events:,} events verified into an empty mirror in {seconds:.1f} s; store: "
                f"{dataset.describe()}",
                ours=rate, unit="events/s", goal=">= 30,000 events/s, RSS < 300 MiB", met=rate >= 30_000 and rss < 300,
                notes=f"{ctx.large_note}peak RSS {rss:.0f} MiB (beside the main size's in this row: flat?)",
            )]
            incremental = f"claims audit --mirror, {NEW_EVENTS:,} new events on {label}, sqlite, large"
            needed = (dataset.events + NEW_EVENTS) / ctx.rates.get("full_audit", 5_000) * 1.3 + 30
            if needed > ctx.remaining():
                figures.append(could_not_run(13, incremental, f"the full audit beside it needs about {needed:.0f} s, "
                                             f"{max(0.0, ctx.remaining()):.0f} s of the budget left"))
            else:
                figures.append(_incremental(ctx, server.base, url, audit, directory, dataset.events, incremental))
    except Exception as e:
        return [could_not_run(13, name, reason(e))]
    return figures


def _incremental(ctx: Context, base: str, url: str, audit: list[str], directory: Path, events: int,
                 name: str) -> Figure:
    """NEW_EVENTS claims registered after the mirror's first audit; the full audit (no mirror) of
    the grown ledger, then the incremental audit into the mirror."""
    ledger = open_ledger(Database.from_url(url))
    try:
        for i in range(NEW_EVENTS):
            ledger.register_claim(f"A claim recorded after the mirror was made, number {i}", key=f"after-mirror-{i}")
    finally:
        ledger.close()
    _caught_up(base)
    full_s, full_rss = _audit([*audit, "--checkpoint", str(directory / "full-audit-checkpoint.json")], ctx,
                              "the full audit")
    ctx.rates["full_audit"] = (events + NEW_EVENTS) / full_s
    next_s, next_rss = _audit([*audit, "--mirror", str(directory)], ctx, "the incremental audit")
    return Figure(
        13, name,
        data=f"{NEW_EVENTS:,} events after the mirror's {events:,}; the default sample of untouched claims",
        ours=next_s, unit="s", baseline=full_s, baseline_name="the full audit (no mirror) of the same ledger",
        goal="< 3 s", met=next_s < 3, lower_is_better=True,
        notes=f"peak RSS {next_rss:.0f} MiB (full audit {full_rss:.0f} MiB); wall time of the whole command",
    )


def _copy(source: str, target: Path) -> str:
    target.unlink(missing_ok=True)
    with sqlite3.connect(Database.from_url(source).path) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return f"sqlite:///{target}"


def _audit(command: list[str], ctx: Context, what: str) -> tuple[float, float]:
    result = run_measured(command, child_env(), ctx.stores.dir, timeout=1800)
    if result.returncode != 0:
        raise CouldNotRun(f"{what} exited {result.returncode}: {tail(result.stdout + result.stderr)}")
    return result.seconds, result.max_rss_mib


def _caught_up(base: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, body = http_json(base + "/healthz")
        if status == 200 and body["projections"]["lag"] == 0:
            return
        time.sleep(0.05)
    raise CouldNotRun("the server's projections did not catch up within 120 s")


def _mirror(ctx: Context, n: int) -> list[Figure]:
    dataset = ctx.data.dataset("sqlite", n)
    url = _copy(dataset.url, ctx.stores.dir / f"mirror_{size_label(n)}.db")
    token = make_token(url, "auditor", ctx.stores.dir)
    directory = ctx.stores.dir / f"mirror_{size_label(n)}"
    figures = []
    with ledger_server(url, ctx.stores.dir) as server:
        start_ledger_server(server, timeout=600)
        audit = [*claims_command(), "audit", "--url", server.base, "--token", token]
        first_s, first_rss = _audit([*audit, "--mirror", str(directory)], ctx, "the first audit with a mirror")
        rate = ctx.rates["mirror"] = dataset.events / first_s
        figures.append(Figure(
            13, f"claims audit --mirror, first audit, {size_label(n)} events, sqlite",
            data=f"{dataset.events:,} events verified into an empty mirror in {first_s:.1f} s; store: "
            f"{dataset.describe()}",
            ours=rate, unit="events/s", goal=">= 30,000 events/s, RSS < 300 MiB", met=rate >= 30_000 and first_rss < 300,
            notes=f"peak RSS {first_rss:.0f} MiB; every claim folded from the mirror and compared with the server",
        ))

        figures.append(_incremental(ctx, server.base, url, audit, directory, dataset.events,
                                    f"claims audit --mirror, {NEW_EVENTS:,} new events on {size_label(n)}, sqlite"))

        local = Mirror(directory, create=False)
        try:
            keys = [k for (k,) in local.db.execute("SELECT key FROM claims WHERE key IS NOT NULL")]
            picks = random.Random(13).choices(keys, k=SHOW_READS)
            started = time.perf_counter()
            for key in picks:
                if local.claim_at(key, version=1) is None:
                    raise CouldNotRun(f"the mirror has no version 1 of {key}")
            ours = SHOW_READS / (time.perf_counter() - started)
        finally:
            local.close()
        started = time.perf_counter()
        for key in picks:
            status, _ = http_json(f"{server.base}/v1/claims/{urllib.parse.quote(key)}?version=1", token=token)
            if status != 200:
                raise CouldNotRun(f"GET /v1/claims/{key}?version=1 answered {status}")
        served = SHOW_READS / (time.perf_counter() - started)
        figures.append(Figure(
            13, f"claims audit show --version 1 from the mirror, {size_label(n)}, sqlite",
            data=f"{SHOW_READS} random claims at version 1, one at a time",
            ours=ours, unit="reads/s", baseline=served, baseline_name="GET /v1/claims/{key}?version=1 (one connection)",
            goal="faster than the server", met=ours > served,
            notes="the mirror's claim_at in process (what `claims audit show` runs after it starts)",
        ))
    return figures
