"""Row 6: HTTP reads vs bare endpoints returning a constant, same uvicorn and process tuning, same load tool.

Two baselines (bench/bare_app.py): a bare FastAPI `async def` endpoint, what a user would
build and the goal's baseline; and, for the plain read, which the ledger answers through its
fast lane past FastAPI's per-request stack, a bare Starlette route, its like for like.
"""

from __future__ import annotations

from urllib.parse import quote

from bench.context import Context, LedgerService
from bench.harness import (
    CouldNotRun,
    Figure,
    Server,
    bare_server,
    could_not_run,
    http_json,
    number,
    reason,
)
from bench.load import LoadResult, closed_loop

PLAIN_GOAL = 0.6
READ_KEYS = 1000


def reads(ctx: Context) -> list[Figure]:
    figures = []
    bare = bare_server(ctx.stores.dir)
    starlette = bare_server(ctx.stores.dir, starlette=True)
    try:
        try:
            bare.start("/healthz")
            starlette.start("/healthz")
        except Exception as e:
            return [could_not_run(6, "HTTP reads", f"a bare baseline did not start: {reason(e)}")]
        for backend in ("sqlite", "postgres"):
            figures += _reads(ctx, backend, bare, starlette)
    finally:
        bare.stop()
        starlette.stop()
    return figures


def _reads(ctx: Context, backend: str, bare: Server, starlette: Server) -> list[Figure]:
    names = [f"GET /v1/claims/{{id}}, {backend}", f"GET /v1/claims?status=disputed, {backend}",
             f"GET /v1/claims/{{id}}?recorded_as_of=T, {backend}"]
    lane_name = f"GET /v1/claims/{{id}}, {backend}, fast lane vs bare Starlette"
    goal = f">= {PLAIN_GOAL}x bare"
    try:
        service = ctx.service(backend)
    except Exception as e:
        why = reason(e)
        return [*(could_not_run(6, n, why, goal=goal if i == 0 else "") for i, n in enumerate(names)),
                could_not_run(6, lane_name, why)]
    c, seconds = ctx.sizes.read_connections, ctx.sizes.read_seconds
    try:
        sync = _load(bare.port, ["/sync"], c, seconds, "bare FastAPI (def)")
        fast = _load(bare.port, ["/async"], c, seconds, "bare FastAPI (async def)")
    except Exception as e:
        why = f"baseline: {reason(e)}"
        return [*(could_not_run(6, n, why, goal=goal if i == 0 else "") for i, n in enumerate(names)),
                could_not_run(6, lane_name, why)]
    lane: LoadResult | str
    try:
        lane = _load(starlette.port, ["/constant"], c, seconds, "bare Starlette")
    except Exception as e:  # the FastAPI baseline still stands; only the like-for-like row is lost
        lane = f"baseline: {reason(e)}"
    fixture = service.dataset.fixture
    keys = fixture.keys[:READ_KEYS]
    mixes = [
        [f"/v1/claims/{k}" for k in keys],
        ["/v1/claims?status=disputed"],
        [f"/v1/claims/{k}?recorded_as_of={quote(fixture.as_of[k], safe=':')}" for k in keys],
    ]
    figures = []
    for i, (name, paths) in enumerate(zip(names, mixes, strict=True)):
        try:
            _probe(service, paths[0])
            result = _load(service.server.port, paths, c, seconds, name)
        except Exception as e:
            why = reason(e)
            figures.append(could_not_run(6, name, why, goal=goal if i == 0 else ""))
            if i == 0:
                figures.append(could_not_run(6, lane_name, why))
            continue
        figures.append(Figure(
            6, name,
            data=f"{result.requests:,} GETs of {len(paths):,} URL{'s' if len(paths) > 1 else ''} in "
            f"{result.seconds:.0f} s, {c} connections; store: {service.dataset.describe()}",
            ours=result.rate, unit="req/s", baseline=fast.rate,
            baseline_name="bare FastAPI async def endpoint, what a user would build",
            goal=goal if i == 0 else "", met=(result.rate >= PLAIN_GOAL * fast.rate) if i == 0 else None,
            notes=f"p50 {number(result.p50_ms or 0)} ms, p99 {number(result.p99_ms or 0)} ms "
            f"(bare p99 {number(fast.p99_ms or 0)} ms); bare def (thread pool): {number(sync.rate)} req/s, "
            f"ratio to it {result.rate / sync.rate:.2f}; load: {result.tool}",
        ))
        if i == 0:
            figures.append(_lane_figure(lane_name, result, lane))
    return figures


def _lane_figure(name: str, result: LoadResult, lane: LoadResult | str) -> Figure:
    """The plain read (answered by the fast lane) beside the bare Starlette route: like for like."""
    if isinstance(lane, str):
        return could_not_run(6, name, lane)
    return Figure(
        6, name, data="the plain read above", ours=result.rate, unit="req/s", baseline=lane.rate,
        baseline_name="bare Starlette route, pre-encoded constant",
        notes=f"like for like with the fast lane, which skips FastAPI's routing, middleware and dependencies; "
        f"ours p99 {number(result.p99_ms or 0)} ms (Starlette p99 {number(lane.p99_ms or 0)} ms); "
        f"load: {lane.tool}",
    )


def _load(port: int, paths: list[str], connections: int, seconds: float, what: str) -> LoadResult:
    result = closed_loop(port, "get", paths, connections, seconds)
    result.check(what)
    return result


def _probe(service: LedgerService, path: str) -> None:
    status, body = http_json(service.server.base + path)
    if status != 200:
        raise CouldNotRun(f"GET {path} answered {status}: {str(body)[:200]}")
