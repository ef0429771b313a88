"""Work the benchmark runs in a process of its own, so its time and peak RSS are its alone.

    python -m bench.child rebuild URL          # the projections rebuilt from the log
    python -m bench.child scan URL             # the library reading the same log, raw
    python -m bench.child raw-writes URL SPEC  # the raw library's concurrent and batched writes

Prints one JSON line: {"events": n, "seconds": s, "peak_rss_mib": m} (raw-writes: its runs).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.baseline import RawApp, batched_writes, concurrent_writes, scan_notifications
from bench.harness import peak_rss_mib
from service.runtime import Runtime
from store.event_store import open_ledger
from store.settings import Database


def rebuild(url: str) -> dict[str, Any]:
    runtime = Runtime.open(url)
    try:
        started = time.perf_counter()
        applied = runtime.engine.rebuild()
        seconds = time.perf_counter() - started
        return {"events": applied, "seconds": seconds, "helper_peak_rss_mib": runtime.engine.helper_peak_rss_mib}
    finally:
        runtime.close()


def scan(url: str) -> dict[str, Any]:
    ledger = open_ledger(Database.from_url(url))
    try:
        started = time.perf_counter()
        count = scan_notifications(ledger.recorder)
        return {"events": count, "seconds": time.perf_counter() - started}
    finally:
        ledger.close()


def raw_writes(url: str, spec_text: str) -> dict[str, Any]:
    """The baselines of the HTTP writes (bench/rows_writes.py). SPEC, JSON: {"notes", "history"
    (acts each note starts with), "warm_up" (seconds, at "warm_up_writers" threads), "seconds"
    (each run), "runs": [{"writers": n} (n threads, one note per transaction) or {"batch": n}
    (one writer, n notes per transaction)]}; answers each run's RawWrites."""
    # Imported here: the command line's modules would add to the other tasks' peak RSS.
    from cli.serve import tune_gc

    spec = json.loads(spec_text)
    app = RawApp(url)
    try:
        ids = app.open_notes(spec["notes"], spec["history"])
        # As `claims serve` does once its app is built: the baseline process runs with the
        # same collector thresholds and switch interval as the server it is compared with.
        tune_gc()
        # Steady state, as the server is measured after its warm-up: the notes in the cache.
        warm_up = concurrent_writes(app, ids, spec["warm_up_writers"], spec["warm_up"], "warm")
        runs = []
        for n, run in enumerate(spec["runs"]):
            if "batch" in run:
                runs.append(batched_writes(app, ids, run["batch"], spec["seconds"], f"b{n}"))
            else:
                runs.append(concurrent_writes(app, ids, run["writers"], spec["seconds"], f"c{n}"))
        return {"warm_up": dataclasses.asdict(warm_up), "runs": [dataclasses.asdict(r) for r in runs]}
    finally:
        app.close()


TASKS: dict[str, Callable[..., dict[str, Any]]] = {"rebuild": rebuild, "scan": scan, "raw-writes": raw_writes}
ARGS = {"rebuild": 1, "scan": 1, "raw-writes": 2}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in TASKS or len(argv) != 1 + ARGS[argv[0]]:
        print(f"usage: python -m bench.child {{{','.join(TASKS)}}} URL [SPEC]", file=sys.stderr)
        return 2
    print(json.dumps({**TASKS[argv[0]](*argv[1:]), "peak_rss_mib": peak_rss_mib()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
