"""/healthz and the projection engine of the process: 503 once the engine has stopped.

The app runs its engine as a thread (`claims serve` with one process); the test stops it the
way the app's own shutdown does, through the engine's public `stop`, while the app goes on
serving. A load balancer probing /healthz must then take the process out: reads would
never catch up with writes.
"""

from __future__ import annotations

from tests.api import story
from tests.api.conftest import Api
from tests.reliability.server import wait_until


def test_healthz_answers_503_with_the_engine_stopped_once_the_projection_engine_stops(api: Api) -> None:
    _, _, denied = api.seed()
    wait_until(lambda: api.services.runtime.read.position() == denied["position"], 10, "the engine applied the seed")
    running = api.client.get("/healthz")
    assert running.status_code == 200
    # On PostgreSQL the engine leads (it is the only one: it holds the lease); SQLite has no lease.
    lease = "sole" if api.services.runtime.database.backend == "sqlite" else "leader"
    assert running.json()["projections"] == {"position": 3, "head": 3, "lag": 0, "engine": "running", "lease": lease}

    api.services.runtime.engine.stop()
    thread = api.services.engine_thread
    assert thread is not None and not thread.is_alive()

    stopped = api.client.get("/healthz")
    assert stopped.status_code == 503
    assert stopped.headers["Retry-After"] == "2"
    assert stopped.json() == {
        "status": "unavailable", "writes": "ok", "database": "ok", "backend": api.services.runtime.database.backend,
        "projections": {"position": 3, "head": 3, "lag": 0, "engine": "stopped", "lease": None}, "witnesses": [],
        "replicas": [], "checkpoints": {"status": "ok", "reason": None},
    }

    # Writes are still taken; nothing projects them, and /healthz says how far behind it is.
    retraction = api.act("retractions", {"retracts": "elton-instagram", "party": story.ELTON, "act_id": "r1"})
    behind = api.client.get("/healthz")
    assert behind.status_code == 503
    assert behind.json()["projections"] == {"position": 3, "head": retraction["position"], "lag": 1,
                                            "engine": "stopped", "lease": None}
