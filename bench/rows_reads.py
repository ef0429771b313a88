"""Row 6: HTTP reads vs a bare FastAPI endpoint returning a constant, same uvicorn, same load tool."""

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
    try:
        bare.start("/healthz")
    except Exception as e:
        return [could_not_run(6, "HTTP reads", f"the bare FastAPI baseline did not start: {reason(e)}")]
    try:
        for backend in ("sqlite", "postgres"):
            figures += _reads(ctx, backend, bare)
    finally:
        bare.stop()
    return figures


def _reads(ctx: Context, backend: str, bare: Server) -> list[Figure]:
    names = [f"GET /v1/claims/{{id}}, {backend}", f"GET /v1/claims?status=disputed, {backend}",
             f"GET /v1/claims/{{id}}?recorded_as_of=T, {backend}"]
    goal = f">= {PLAIN_GOAL}x bare"
    try:
        service = ctx.service(backend)
    except Exception as e:
        why = reason(e)
        return [could_not_run(6, n, why, goal=goal if i == 0 else "") for i, n in enumerate(names)]
    c, seconds = ctx.sizes.read_connections, ctx.sizes.read_seconds
    try:
        sync = _load(bare.port, ["/sync"], c, seconds, "bare FastAPI (def)")
        fast = _load(bare.port, ["/async"], c, seconds, "bare FastAPI (async def)")
    except Exception as e:
        why = f"baseline: {reason(e)}"
        return [could_not_run(6, n, why, goal=goal if i == 0 else "") for i, n in enumerate(names)]
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
            figures.append(could_not_run(6, name, reason(e), goal=goal if i == 0 else ""))
            continue
        figures.append(Figure(
            6, name,
            data=f"{result.requests:,} GETs of {len(paths):,} URL{'s' if len(paths) > 1 else ''} in "
            f"{result.seconds:.0f} s, {c} connections; store: {service.dataset.describe()}",
            ours=result.rate, unit="req/s", baseline=fast.rate, baseline_name="bare FastAPI async def endpoint",
            goal=goal if i == 0 else "", met=(result.rate >= PLAIN_GOAL * fast.rate) if i == 0 else None,
            notes=f"p50 {number(result.p50_ms or 0)} ms, p99 {number(result.p99_ms or 0)} ms "
            f"(bare p99 {number(fast.p99_ms or 0)} ms); bare def (thread pool): {number(sync.rate)} req/s, "
            f"ratio to it {result.rate / sync.rate:.2f}; load: {result.tool}",
        ))
    return figures


def _load(port: int, paths: list[str], connections: int, seconds: float, what: str) -> LoadResult:
    result = closed_loop(port, "get", paths, connections, seconds)
    result.check(what)
    return result


def _probe(service: LedgerService, path: str) -> None:
    status, body = http_json(service.server.base + path)
    if status != 200:
        raise CouldNotRun(f"GET {path} answered {status}: {str(body)[:200]}")
