"""`python -m bench [--quick] [--rows 1,2,...] [--out FILE]`: the benchmark table.

Rows (each beside its baseline, measured in this run on this machine):
 1. single writes through the Ledger vs the raw library's load+trigger+save, with the Ledger's
    library settings and aggregate cache (SQLite, PostgreSQL)
 2. HTTP writes at 1/8/32 clients on PostgreSQL vs the raw single-writer rate; also vs the raw
    library behind as many writer threads, and one raw writer saving 32 notes per transaction
 3. bulk import vs the raw library saving the same lines in batches
 4. projection rebuild vs a raw scan of the log; the rebuild's peak RSS, small vs large
 5. catch-up lag from commit to visible under a steady write rate
 6. HTTP reads vs a bare FastAPI endpoint returning a constant; the plain read (the fast lane)
    also vs a bare Starlette route
 7. `claims verify`; Merkle inclusion and consistency proofs at the large size
 8. C2SP tlog-tiles: full hash tiles and entry bundles over HTTP at the large size vs bare FastAPI
 9. fact-checking's formats: the whole ledger exported as ClaimReview, PROV-O and CSV (vs the fixture
    export), and ClaimReview feeds imported (vs the fixture import of the same acts)
 10. witnesses: the time from a new tree head to a checkpoint cosigned by two local witnesses
 11. Server-Sent Event streams: 500 subscribers of the claim stream under 200 writes/s (delivery
    latency, memory per subscriber, write rate beside none); catch-up of the event stream beside
    the NDJSON feed
 12. the web pages: a claim's page and the home page beside the JSON reads they render, the
    claim page's p99 at one connection, page weight
 13. `claims audit --mirror`: the first audit (events/s, peak RSS) and an incremental audit of 1,000
    new events beside a full audit of the same ledger, both again at the large size; `claims audit
    show` beside the time-travel GET
 14. several nodes on one PostgreSQL ledger: the projection engine's failover after a SIGKILL of the
    leader (p50/p99 over kills); HTTP writes spread over two nodes beside the same clients on one;
    reads of a claim by a node reading from a private hot standby beside one reading from its primary
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.context import Context
from bench.data import Datasets
from bench.harness import (
    Figure,
    Stores,
    could_not_run,
    load_average,
    machine,
    markdown_table,
    now_text,
    text_table,
)
from bench.load import tool
from bench.rows_audit import audit, audit_large
from bench.rows_formats import formats_export, formats_import
from bench.rows_mirror import mirror_audit, mirror_audit_large
from bench.rows_nodes import failover, standby_reads, two_nodes
from bench.rows_projections import catch_up_lag, rebuild, rebuild_large
from bench.rows_reads import reads
from bench.rows_streams import catch_up as stream_catch_up
from bench.rows_streams import subscribers as stream_subscribers
from bench.rows_tiles import tiles_large
from bench.rows_web import web_pages
from bench.rows_witness import witness_latency
from bench.rows_writes import bulk_import, bulk_import_large, http_writes, single_writes

HERE = Path(__file__).resolve().parent
Row = Callable[[Context], list[Figure]]

# In the order they run: rebuilds before any server follows the same store, reads before
# the write rows add to it, and the large dataset last, sized to the time left in the budget.
ROWS: list[tuple[int, str, Row]] = [
    (1, "single writes", single_writes),
    (3, "bulk import", bulk_import),
    (4, "projection rebuild", rebuild),
    (7, "claims verify", audit),
    (6, "HTTP reads", reads),
    (12, "web pages", web_pages),
    (2, "HTTP writes", http_writes),
    (5, "catch-up lag", catch_up_lag),
    (11, "event stream catch-up", stream_catch_up),
    (11, "stream subscribers", stream_subscribers),
    (9, "formats: export", formats_export),
    (9, "formats: ClaimReview import", formats_import),
    (10, "witnesses: cosigned checkpoint latency", witness_latency),
    (13, "claims audit --mirror", mirror_audit),
    (14, "several nodes: engine failover", failover),
    (14, "several nodes: writes on two nodes", two_nodes),
    (14, "several nodes: reads from a hot standby", standby_reads),
    (3, "bulk import, large", bulk_import_large),
    (4, "projection rebuild, large", rebuild_large),
    (7, "claims verify and Merkle proofs, large", audit_large),
    (8, "tlog tiles, large", tiles_large),
    (13, "claims audit --mirror, large", mirror_audit_large),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and short runs: about two minutes")
    parser.add_argument("--rows", default="", help="only these rows, e.g. 1,3")
    parser.add_argument("--out", type=Path, default=None,
                        help="Markdown file (default bench/latest.md, or latest-quick.md with --quick)")
    args = parser.parse_args(argv)
    only = {int(x) for x in args.rows.split(",") if x.strip()}
    out = args.out or HERE / ("latest-quick.md" if args.quick else "latest.md")

    # SIGTERM (make interrupted, a CI timeout) still stops the servers and drops the schemas.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    info = machine()
    started_at, load_before = now_text(), load_average()
    print(f"claims ledger benchmark ({'quick' if args.quick else 'full'}), load tool: {tool()}", file=sys.stderr)
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), file=sys.stderr)
    ctx = Context(quick=args.quick, stores=(stores := Stores()), data=Datasets(stores))
    figures: list[Figure] = []
    started = time.perf_counter()
    try:
        for number_, title, row in ROWS:
            if only and number_ not in only:
                continue
            if title.endswith("large"):
                ctx.stop_services()  # nothing follows the main datasets any more
            print(f"[{time.perf_counter() - started:6.0f} s] row {number_}: {title} ...", file=sys.stderr, flush=True)
            try:
                found = row(ctx)
            except Exception as e:  # a row that breaks says so in the table; the others still run
                traceback.print_exc()
                found = [could_not_run(number_, title, f"{type(e).__name__}: {e}")]
            for f in found:
                print("    " + " | ".join(f.cells()), file=sys.stderr, flush=True)
            figures += found
    finally:
        ctx.close()
    elapsed = time.perf_counter() - started
    figures.sort(key=lambda f: f.row)
    print()
    print(text_table(figures))
    print(f"\n{len(figures)} figures in {elapsed:.0f} s; load average before {load_before}, after {load_average()}")
    out.write_text(report(figures, info, args.quick, started_at, elapsed, load_before))
    print(f"written to {out}")
    return 0


def report(figures: list[Figure], info: dict[str, str], quick: bool, started_at: str, elapsed: float,
           load_before: str) -> str:
    missing = [f for f in figures if f.error is not None]
    lines = [
        f"# Claims ledger benchmark ({'quick' if quick else 'full'} run)",
        "",
        f"Run {started_at}, {elapsed:.0f} s, commit {info['commit']}; load tool: {tool()}. "
        "Every figure is measured beside its baseline in this run, on this machine.",
        "",
        f"- CPU: {info['cpu']}, {info['cores']} cores",
        f"- RAM: {info['ram']}",
        f"- Python: {info['python']}; SQLite {info['sqlite']}; {info['postgres']}",
        f"- OS: {info['os']}",
        f"- load average (1/5/15 min) before the run: {load_before}, after: {load_average()}",
        "",
        markdown_table(figures),
        "",
        "Ratio is ours / baseline (for latencies and sizes where smaller is better: baseline / ours, "
        "except peak RSS growth, which is large / small).",
    ]
    if missing:
        lines += ["", "Could not run:", *[f"- {f.name}: {f.error}" for f in missing]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
