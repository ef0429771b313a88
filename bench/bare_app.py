"""The bare baselines of the HTTP reads: endpoints that return a constant, served like `claims serve`.

`app` (FastAPI) is what a user would build: `/async` is the fastest a FastAPI endpoint can
answer, `/sync` a plain `def` endpoint, run in AnyIO's thread pool with the ledger's thread
limit, for comparison with endpoints that need the pool.

`starlette_app` is the like-for-like baseline of the ledger's fast lane (api/routes/fast.py),
which answers GET /v1/claims/{id} without FastAPI's per-request routing, middleware stack and
dependency solving: a bare Starlette route answering bytes encoded once, as the lane answers
the stored view's bytes without serialising them per request.

Both run under uvicorn with the same settings as `claims serve` (bench/harness.py
`bare_server`) and with the same process tuning: this module calls `claims serve`'s own
`tune_gc` once the apps are built, as `claims serve` does once its app is built (collector
thresholds, frozen start-up objects, switch interval).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
import orjson
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cli.serve import tune_gc
from store.settings import get_settings

CONSTANT: dict[str, Any] = {
    "id": "00000000-0000-5000-8000-000000000000",
    "key": "putin-phoned-elton-john",
    "statement": "Vladimir Putin telephoned Elton John on 14 September 2015",
    "status": "disputed",
}
CONSTANT_JSON = orjson.dumps(CONSTANT)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    anyio.to_thread.current_default_thread_limiter().total_tokens = get_settings().api_threads
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/sync")
def constant_sync() -> dict[str, Any]:
    return CONSTANT


@app.get("/async")
async def constant_async() -> dict[str, Any]:
    return CONSTANT


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def starlette_constant(request: Request) -> Response:
    return Response(CONSTANT_JSON, media_type="application/json")


async def starlette_healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


starlette_app = Starlette(routes=[Route("/constant", starlette_constant), Route("/healthz", starlette_healthz)])

# uvicorn imports this module (`bench.bare_app:app`) before it serves, as `claims serve` calls
# tune_gc after create_app and before uvicorn.run: the same point in the process's life.
tune_gc()
