"""The bare-FastAPI baseline: endpoints that return a constant, served like `claims serve`.

`/async` is the baseline: the fastest a FastAPI endpoint can answer. `/sync` is a plain
`def` endpoint, run in AnyIO's thread pool with the ledger's thread limit, for comparison
with endpoints that need the pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI

from store.settings import get_settings

CONSTANT: dict[str, Any] = {
    "id": "00000000-0000-5000-8000-000000000000",
    "key": "putin-phoned-elton-john",
    "statement": "Vladimir Putin telephoned Elton John on 14 September 2015",
    "status": "disputed",
}


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
