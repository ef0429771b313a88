"""Liveness of the ledger (database, projections) and its Prometheus metrics."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg
from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse

from api.routes.deps import ServicesDep
from api.schemas import Health
from store.settings import Database

router = APIRouter(tags=["operations"])

PROBE_TIMEOUT_SECONDS = 2


def database_problem(database: Database) -> str | None:
    """None when the database answers a query now (a fresh connection, bounded), else why not."""
    try:
        if database.backend == "sqlite":
            with sqlite3.connect(f"file:{database.path}?mode=ro", uri=True, timeout=PROBE_TIMEOUT_SECONDS) as conn:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        else:
            kwargs: dict[str, Any] = {**database.connect_kwargs(), "connect_timeout": PROBE_TIMEOUT_SECONDS}
            with psycopg.connect(**kwargs) as conn:
                conn.execute("SELECT 1")
    except (sqlite3.Error, psycopg.Error, OSError) as e:
        return f"{database.backend} unreachable: {str(e).strip() or type(e).__name__}"
    return None


@router.get(
    "/healthz", response_model=Health, summary="Is the ledger usable? Database, projection position and lag",
    responses={503: {"model": Health, "description": "The database is unreachable or projections stopped."}},
)
def healthz(response: Response, svc: ServicesDep) -> Any:
    runtime = svc.runtime
    problem = database_problem(runtime.database)
    position = head = None
    rolled_back = None
    if problem is None:
        try:
            position = runtime.engine.position()  # the primary's read models
            head = runtime.ledger.max_position()
            # Would the current tree be signed? Not when it does not extend the largest signed one.
            rolled_back = runtime.guard.check(*runtime.tree_head()) if runtime.guard is not None else None
        except Exception as e:  # reachable a moment ago; report rather than fail the probe
            problem = f"{runtime.database.backend} query failed: {e}"
    if not svc.runs_projections:
        engine = "external"
    else:
        engine = "running" if svc.engine_thread is not None and svc.engine_thread.is_alive() else "stopped"
    failure = runtime.engine.failure if engine == "running" else None
    if failure is not None:
        engine = "failing"
    witnesses = svc.witnessing.health() if svc.witnessing is not None else []
    replicas = runtime.replicas
    standbys = [] if replicas is None else [lag.health(replicas.max_lag_seconds) for lag in replicas.lags()]
    # Without the primary, a standby within the allowed lag still serves every read: the
    # node stays in its load balancer's pool (200, degraded) and refuses writes (503) alone.
    reads_go_on = problem is not None and any(r["status"] == "ok" for r in standbys)
    healthy = (problem is None or reads_go_on) and engine != "stopped" and rolled_back is None
    response.status_code = 200 if healthy else 503
    if not healthy:
        response.headers["Retry-After"] = "2"
    # A witness that does not cosign leaves the ledger usable (200): degraded, naming it.
    # So does a standby too far behind: its reads go to the primary, or are refused.
    # So does an engine whose batch fails: reads are answered, from read models that stand still.
    degraded = (reads_go_on or failure is not None or any(w["status"] == "failing" for w in witnesses)
                or any(r["status"] != "ok" for r in standbys))
    return {
        "status": "unavailable" if not healthy else "degraded" if degraded else "ok",
        "writes": "ok" if problem is None else "unavailable",
        "witnesses": witnesses,
        "replicas": standbys,
        "checkpoints": {"status": "refused" if rolled_back else "ok", "reason": rolled_back},
        "database": problem or "ok",
        "backend": runtime.database.backend,
        "projections": {
            "position": position, "head": head,
            "lag": None if position is None or head is None else max(0, head - position),
            "engine": engine, "error": failure,
            "lease": runtime.engine.lease.role if engine in ("running", "failing") else None,
        },
    }


@router.get(
    "/metrics", response_class=PlainTextResponse, summary="Prometheus metrics",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(svc: ServicesDep) -> Response:
    body, content_type = svc.metrics.render()
    return Response(body, media_type=content_type)
