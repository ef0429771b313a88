"""Row 12: the web pages (web/routes.py) at the main dataset's size, beside the JSON reads
they are made from, on the same server in the same run.

- a claim's page (`GET /claims/{key}`: the view, its history, stances in words, the SVG
  timeline) beside `GET /v1/claims/{key}` (the fast lane's stored view), random claims;
- the home page (`GET /`: counts by status and the first page of 25) beside
  `GET /v1/claims?limit=25`;
- the claim page's latency at one connection, where nothing queues: the server's time (and
  the loopback's), p99, for pages already drawn once (served as drawn until the claim
  changes: web/routes.py PageCache), and for each page's first draw;
- page weight without images: the HTML of a claim's page and of the home page, with the CSS
  and scripts they link, uncompressed.
"""

from __future__ import annotations

import re
import time

import httpx

from bench.context import Context, LedgerService
from bench.harness import CouldNotRun, Figure, could_not_run, number, reason
from bench.load import LoadResult, closed_loop

RATE_GOAL = 0.5  # a page at least half the rate of the JSON read it renders
P99_GOAL_MS = 20.0
WEIGHT_GOAL = 200 * 1024
PAGE_KEYS = 1000
ASSET = re.compile(r'(?:href|src)="(/static/[^"]+)"')


def web_pages(ctx: Context) -> list[Figure]:
    figures = []
    for backend in ("sqlite", "postgres"):
        try:
            service = ctx.service(backend)
        except Exception as e:
            figures.append(could_not_run(12, f"web pages, {backend}", reason(e)))
            continue
        try:
            figures += _pages(ctx, service, backend)
        except Exception as e:
            figures.append(could_not_run(12, f"web pages, {backend}", reason(e)))
    return figures


def _get(base: str, path: str) -> bytes:
    answer = httpx.get(base + path, timeout=30)
    if answer.status_code != 200:
        raise CouldNotRun(f"GET {path} answered {answer.status_code}: {answer.text[:200]}")
    return answer.content


def _weight(base: str, path: str) -> tuple[int, int]:
    """(bytes of the page with the CSS and scripts it links, bytes of its HTML alone)."""
    html = _get(base, path)
    assets = sorted(set(ASSET.findall(html.decode())))
    return len(html) + sum(len(_get(base, a)) for a in assets), len(html)


def _first_draws(base: str, keys: list[str]) -> tuple[list[float], str]:
    """Milliseconds of each claim page's first GET, one after another, on one connection
    (sorted); and the key whose page is the heaviest."""
    times = []
    heaviest, most = keys[0], 0
    with httpx.Client(base_url=base, timeout=30) as client:
        for key in keys:
            started = time.perf_counter()
            answer = client.get(f"/claims/{key}")
            times.append((time.perf_counter() - started) * 1000)
            if answer.status_code != 200:
                raise CouldNotRun(f"GET /claims/{key} answered {answer.status_code}: {answer.text[:200]}")
            if len(answer.content) > most:
                heaviest, most = key, len(answer.content)
    return sorted(times), heaviest


def _load(port: int, paths: list[str], connections: int, seconds: float, what: str) -> LoadResult:
    result = closed_loop(port, "get", paths, connections, seconds)
    result.check(what)
    return result


def _pages(ctx: Context, service: LedgerService, backend: str) -> list[Figure]:
    c, seconds = ctx.sizes.read_connections, ctx.sizes.read_seconds
    needed = 5 * seconds + 10
    if ctx.remaining() < needed:
        raise CouldNotRun(f"about {needed:.0f} s needed, {max(0.0, ctx.remaining()):.0f} s of the budget left")
    base, port = service.server.base, service.server.port
    keys = service.dataset.fixture.keys[:PAGE_KEYS]
    store = service.dataset.describe()
    # The first draw of each claim's page, one at a time: what a page costs the server when
    # no reader has asked for it at this version yet (afterwards it is served as drawn).
    # These drawings also warm the server (templates compiled, the file's pages read).
    first_draws, heaviest = _first_draws(base, keys)
    closed_loop(port, "get", ["/"], c, 1.0)

    claim_json = _load(port, [f"/v1/claims/{k}" for k in keys], c, seconds, "GET /v1/claims/{key}")
    claim_page = _load(port, [f"/claims/{k}" for k in keys], c, seconds, "GET /claims/{key}")
    list_json = _load(port, ["/v1/claims?limit=25"], c, seconds, "GET /v1/claims?limit=25")
    home = _load(port, ["/"], c, seconds, "GET /")
    serial = _load(port, [f"/claims/{k}" for k in keys], 1, seconds, "GET /claims/{key}, one connection")
    claim_weight, claim_html = _weight(base, f"/claims/{keys[0]}")
    heaviest_weight, heaviest_html = _weight(base, f"/claims/{heaviest}")
    home_weight, home_html = _weight(base, "/")
    rate_goal = f">= {RATE_GOAL}x"

    def rate_figure(name: str, ours: LoadResult, json: LoadResult, json_name: str, urls: int, how: str) -> Figure:
        return Figure(
            12, f"{name}, {backend}",
            data=f"{ours.requests:,} GETs of {urls:,} URL{'s' if urls > 1 else ''} in {ours.seconds:.0f} s, "
            f"{c} connections; store: {store}",
            ours=ours.rate, unit="req/s", baseline=json.rate, baseline_name=f"{json_name}, same server, same run",
            goal=rate_goal, met=ours.rate >= RATE_GOAL * json.rate,
            notes=f"{how}; p50 {number(ours.p50_ms or 0)} ms, p99 {number(ours.p99_ms or 0)} ms (JSON p99 "
            f"{number(json.p99_ms or 0)} ms); load: {ours.tool}",
        )

    p99 = serial.p99_ms or 0.0
    first_p50, first_p99 = first_draws[len(first_draws) // 2], first_draws[int(len(first_draws) * 0.99) - 1]
    return [
        rate_figure("GET /claims/{key} (claim page)", claim_page, claim_json, "GET /v1/claims/{key}", len(keys),
                    "each page drawn once before, then served as drawn (its claim's version unchanged)"),
        rate_figure("GET / (home page)", home, list_json, "GET /v1/claims?limit=25", 1,
                    "drawn once per projections' position, and no write lands during the run"),
        Figure(
            12, f"claim page p99 at one connection, {backend}",
            data=f"{serial.requests:,} GETs of {len(keys):,} claims' pages one after another in "
            f"{serial.seconds:.0f} s; store: {store}",
            ours=p99, unit="ms", goal=f"< {P99_GOAL_MS:g} ms", met=p99 < P99_GOAL_MS, lower_is_better=True,
            notes=f"each page drawn once before (served as drawn until its claim changes); nothing queues: the "
            f"server's time and the loopback's; p50 {number(serial.p50_ms or 0)} ms; load: {serial.tool}",
        ),
        Figure(
            12, f"claim page first draw p99, {backend}",
            data=f"the first GET of each of {len(first_draws):,} claims' pages, one after another on one "
            f"connection; store: {store}",
            ours=first_p99, unit="ms", goal=f"< {P99_GOAL_MS:g} ms", met=first_p99 < P99_GOAL_MS,
            lower_is_better=True,
            notes=f"the view, its history, the words and the SVG timeline, rendered; p50 {number(first_p50)} ms; "
            "measured by an httpx client in the benchmark's process",
        ),
        Figure(
            12, f"page weight without images, {backend}",
            data=f"the heaviest of the {len(keys):,} claims' pages with its CSS and scripts; a first claim's and "
            "the home page with theirs",
            ours=heaviest_weight / 1024, unit="KiB", goal=f"< {WEIGHT_GOAL // 1024} KiB",
            met=max(heaviest_weight, claim_weight, home_weight) < WEIGHT_GOAL, lower_is_better=True,
            notes=f"heaviest /claims/{heaviest[:60]} {heaviest_weight / 1024:.1f} KiB ({heaviest_html / 1024:.1f} KiB "
            f"HTML); /claims/{keys[0][:40]}… {claim_weight / 1024:.1f} KiB ({claim_html / 1024:.1f} KiB HTML); home "
            f"page {home_weight / 1024:.1f} KiB ({home_html / 1024:.1f} KiB HTML); uncompressed",
        ),
    ]
