"""Row 9: fact-checking's formats — the whole ledger exported, and ClaimReview feeds imported.

- Export (`claims export --format claimreview|prov-turtle|prov-jsonld|csv`) of the main SQLite
  dataset, each format in a process of its own: events/s, what it wrote per second (rows,
  nodes, triples) and its peak RSS, beside the fixture export of the same log (the ledger's
  plainest export: the same log read, one JSON line per event). Memory flat: the same export
  of a dataset a tenth the size, its peak RSS beside the main one's.
- Import (`claims import --format claimreview`) of a generated DataFeed of ClaimReviews (one
  claim, its claimant's assertion and a review each), on both backends: items/s, beside the
  fixture import of the very lines the feed converts to.

    python -m bench.rows_formats export URL FORMAT OUT   # one export, in a process of its own
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench.context import Context
from bench.data import Dataset, size_label
from bench.harness import CouldNotRun, Figure, could_not_run, number, peak_rss_mib, reason, run_measured
from bench.harness import child_env as environment

EXPORT_GOAL = 10_000  # events/s
IMPORT_GOAL = 5_000  # items/s
FORMATS = ("claimreview", "prov-turtle", "prov-jsonld", "csv")
IMPORT_ITEMS = {True: 2_000, False: 20_000}  # by ctx.quick


def formats_export(ctx: Context) -> list[Figure]:
    name = "export of the whole ledger"
    try:
        dataset = ctx.data.dataset("sqlite", ctx.sizes.data_events)
        small = ctx.data.dataset("sqlite", ctx.sizes.data_events // 10)
    except Exception as e:
        return [could_not_run(9, name, reason(e))]
    try:
        return _exports(ctx, dataset, small)
    except Exception as e:
        return [could_not_run(9, name, reason(e), data=dataset.describe())]


def _export(ctx: Context, dataset: Dataset, fmt: str) -> dict[str, Any]:
    out = ctx.stores.dir / f"export-{fmt}-{dataset.events}.out"
    result = run_measured(
        [sys.executable, "-m", "bench.rows_formats", "export", dataset.url, fmt, str(out)],
        environment(), ctx.stores.dir, timeout=max(60.0, ctx.remaining()),
    )
    if result.returncode != 0:
        raise CouldNotRun(f"the {fmt} export exited {result.returncode}: {result.stderr.strip()[-300:]}")
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    answer["peak_rss_mib"] = max(result.max_rss_mib, float(answer["peak_rss_mib"]))
    answer["bytes"] = out.stat().st_size
    out.unlink()
    return answer


def _exports(ctx: Context, dataset: Dataset, small: Dataset) -> list[Figure]:
    if ctx.remaining() < 60:
        raise CouldNotRun(f"{max(0.0, ctx.remaining()):.0f} s of the budget left")
    baseline = _export(ctx, dataset, "fixture")
    base_rate = baseline["events"] / baseline["seconds"]
    figures = []
    label = size_label(dataset.events)
    for fmt in FORMATS:
        found = _export(ctx, dataset, fmt)
        smaller = _export(ctx, small, fmt)
        rate = found["events"] / found["seconds"]
        growth = found["peak_rss_mib"] / smaller["peak_rss_mib"] if smaller["peak_rss_mib"] else 0.0
        figures.append(Figure(
            9, f"export --format {fmt}, {label} events, sqlite",
            data=f"{found['claims']:,} claims, {found['events']:,} events -> {found['units']:,} {found['unit']}, "
            f"{found['bytes'] / 2**20:,.1f} MiB in {found['seconds']:.1f} s; store: {dataset.describe()}",
            ours=rate, unit="events/s", baseline=base_rate,
            baseline_name="claims export --format fixture (the same log, one JSON line an event)",
            goal=f">= {EXPORT_GOAL:,} events/s; RSS flat", met=rate >= EXPORT_GOAL and growth < 1.5,
            notes=f"{number(found['units'] / found['seconds'])} {found['unit']}/s; peak RSS "
            f"{number(found['peak_rss_mib'])} MiB at {label}, {number(smaller['peak_rss_mib'])} MiB at "
            f"{size_label(small.events)} events (x{growth:.2f})",
        ))
    return figures


def formats_import(ctx: Context) -> list[Figure]:
    figures = []
    items = IMPORT_ITEMS[ctx.quick]
    feed = ctx.stores.dir / f"claimreview-{items}.json"
    if not feed.exists():
        feed.write_bytes(generated_feed(items))
    for backend in ("sqlite", "postgres"):
        name = f"import --format claimreview, {items:,} items, {backend}"
        try:
            figures.append(_import(ctx, backend, feed, items, name))
        except Exception as e:
            figures.append(could_not_run(9, name, reason(e)))
    return figures


def generated_feed(items: int) -> bytes:
    """A DataFeed of `items` ClaimReviews as fact-checkers publish them: a claim each, its
    claimant, where it appeared, a rating on a 1-5 scale."""
    verdicts = ("False", "Mostly False", "Half True", "Mostly True", "True")
    elements = []
    for i in range(items):
        score = i % 5
        elements.append({"@type": "DataFeedItem", "item": [{
            "@type": "ClaimReview", "claimReviewed": f"Synthetic claim number {i}: the town spent {i * 7 % 1000} "
            "thousand on the new bridge", "datePublished": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}",
            "url": f"https://factcheck{i % 7}.example/checks/{i}",
            "author": {"@type": "Organization", "name": f"Fact Checker {i % 7}", "url": f"https://factcheck{i % 7}.example"},
            "reviewRating": {"@type": "Rating", "alternateName": verdicts[score], "ratingValue": score + 1,
                             "bestRating": 5, "worstRating": 1},
            "itemReviewed": {
                "@type": "Claim", "datePublished": f"2024-{1 + i % 12:02d}-01",
                "author": {"@type": "Person", "name": f"Speaker {i % 211}"},
                "appearance": [{"@type": "CreativeWork", "url": f"https://news.example/{i}"}],
            },
        }]})
    return orjson.dumps({"@context": "https://schema.org", "@type": "DataFeed", "dataFeedElement": elements})


def _import(ctx: Context, backend: str, feed: Path, items: int, name: str) -> Figure:
    # Imported here: the command line's modules are not needed by the other rows.
    from cli.formats import import_claimreview
    from fixtures.replay import import_fixture
    from formats.claimreview_in import convert
    from store.event_store import open_ledger
    from store.settings import Database

    data = feed.read_bytes()
    urls = [ctx.stores.url(backend, f"cr_{which}_{items}") for which in ("ours", "base")]
    ledger = open_ledger(Database.from_url(urls[0]))
    try:
        started = time.perf_counter()
        report = import_claimreview(ledger, data, feed.name)
        seconds = time.perf_counter() - started
    finally:
        ledger.close()
    lines = convert(data, feed.name).lines
    fixture = ctx.stores.dir / f"claimreview-{items}.jsonl"
    fixture.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    ledger = open_ledger(Database.from_url(urls[1]))
    try:
        base = import_fixture(ledger, fixture)
    finally:
        ledger.close()
    rate = items / seconds
    return Figure(
        9, name,
        data=f"a DataFeed of {items:,} ClaimReviews ({len(data) / 2**20:.1f} MiB) -> {report.conversion.claims:,} "
        f"claims, {report.fixture.events:,} events in {seconds:.2f} s (parse, convert and record, one transaction)",
        ours=rate, unit="items/s", baseline=items / base.seconds,
        baseline_name="the fixture import of the lines the feed converts to", goal=f">= {IMPORT_GOAL:,} items/s",
        met=rate >= IMPORT_GOAL, notes=f"{number(report.fixture.events / seconds)} events/s",
    )


def _child_export(url: str, fmt: str, out: str) -> dict[str, Any]:
    from cli.formats import FormatName, export_format
    from fixtures.replay import export_fixture
    from formats.vocab import DEFAULT_BASE
    from store.event_store import open_ledger
    from store.settings import Database

    database = Database.from_url(url)
    ledger = open_ledger(database)
    try:
        with open(out, "w", encoding="utf-8", newline="") as target:
            started = time.perf_counter()
            if fmt == "fixture":
                events = export_fixture(ledger, target)
                seconds = time.perf_counter() - started
                return {"events": events, "claims": 0, "units": events, "unit": "lines", "seconds": seconds}
            report = export_format(ledger, database, FormatName(fmt), target, DEFAULT_BASE)
            return {"events": report.events, "claims": report.claims, "units": report.units, "unit": report.unit,
                    "seconds": time.perf_counter() - started}
    finally:
        ledger.close()


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] != "export":
        print("usage: python -m bench.rows_formats export URL FORMAT OUT", file=sys.stderr)
        return 2
    print(json.dumps({**_child_export(*argv[1:]), "peak_rss_mib": peak_rss_mib()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
