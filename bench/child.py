"""Work the benchmark runs in a process of its own, so its time and peak RSS are its alone.

    python -m bench.child rebuild URL   # the projections rebuilt from the log
    python -m bench.child scan URL      # the library reading the same log, raw

Prints one JSON line: {"events": n, "seconds": s, "peak_rss_mib": m}.
"""

from __future__ import annotations

import json
import sys
import time

from bench.baseline import scan_notifications
from bench.harness import peak_rss_mib
from service.runtime import Runtime
from store.event_store import open_ledger
from store.settings import Database


def rebuild(url: str) -> dict[str, float]:
    runtime = Runtime.open(url)
    try:
        started = time.perf_counter()
        applied = runtime.engine.rebuild()
        seconds = time.perf_counter() - started
        return {"events": applied, "seconds": seconds, "helper_peak_rss_mib": runtime.engine.helper_peak_rss_mib}
    finally:
        runtime.close()


def scan(url: str) -> dict[str, float]:
    ledger = open_ledger(Database.from_url(url))
    try:
        started = time.perf_counter()
        count = scan_notifications(ledger.recorder)
        return {"events": count, "seconds": time.perf_counter() - started}
    finally:
        ledger.close()


TASKS = {"rebuild": rebuild, "scan": scan}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in TASKS:
        print(f"usage: python -m bench.child {{{','.join(TASKS)}}} URL", file=sys.stderr)
        return 2
    print(json.dumps({**TASKS[argv[0]](argv[1]), "peak_rss_mib": peak_rss_mib()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
