"""/healthz and the projection engine of the process: 503 once the engine has stopped.

The app runs its engine as a thread (`claims serve` with one process); the test stops it the
way the app's own shutdown does, through the engine's public `stop`, while the app goes on
serving. A load balancer probing /healthz must then take the process out: reads would
never catch up with writes.
"""

from __future__ import annotations

from eventsourcing.persistence import StoredEvent

from domain.values import claim_id_for_key
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
    assert running.json()["projections"] == {"position": 3, "head": 3, "lag": 0, "engine": "running", "error": None,
                                                "lease": lease}

    api.services.runtime.engine.stop()
    thread = api.services.engine_thread
    assert thread is not None and not thread.is_alive()

    stopped = api.client.get("/healthz")
    assert stopped.status_code == 503
    assert stopped.headers["Retry-After"] == "2"
    assert stopped.json() == {
        "status": "unavailable", "writes": "ok", "database": "ok", "backend": api.services.runtime.database.backend,
        "projections": {"position": 3, "head": 3, "lag": 0, "engine": "stopped", "error": None, "lease": None}, "witnesses": [],
        "replicas": [], "checkpoints": {"status": "ok", "reason": None},
    }

    # Writes are still taken; nothing projects them, and /healthz says how far behind it is.
    retraction = api.act("retractions", {"retracts": "elton-instagram", "party": story.ELTON, "act_id": "r1"})
    behind = api.client.get("/healthz")
    assert behind.status_code == 503
    assert behind.json()["projections"] == {"position": 3, "head": retraction["position"], "lag": 1,
                                            "engine": "stopped", "error": None, "lease": None}


def test_healthz_names_the_event_the_engine_cannot_project_and_clears_once_it_can(api: Api) -> None:
    """A stored event the read models cannot take (here a forged second registration of a
    claim, written past the ledger's rules) stops the engine at the position before it: it
    retries every second, reads are still answered from where the read models stand, and
    /healthz says degraded, naming the error, until the event is gone."""
    _, _, denied = api.seed()
    ledger = api.services.runtime.ledger
    wait_until(lambda: api.services.runtime.read.position() == denied["position"], 10, "the engine applied the seed")
    claim_id = claim_id_for_key(story.KEY)
    first = ledger.recorder.select_events(claim_id, limit=1)[0]
    forged = StoredEvent(claim_id, 4, first.topic, first.state)
    ledger.recorder.insert_events([forged])

    def failing() -> dict[str, object]:
        body = api.client.get("/healthz").json()
        return body if body["projections"]["engine"] == "failing" else {}

    wait_until(lambda: bool(failing()), 10, "the engine reports its failing batch")
    health = api.client.get("/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "degraded" and body["writes"] == "ok", body
    projections = body["projections"]
    assert projections["position"] == denied["position"] and projections["lag"] == 1, projections
    assert str(projections["error"]).startswith(f"the events after position {denied['position']} cannot be projected ("), projections
    assert api.get(f"/v1/claims/{story.KEY}").json()["version"] == 3  # reads go on, from where they stand

    # Repaired (here: the forged row removed), the engine goes on and /healthz clears.
    if api.services.runtime.database.backend == "sqlite":
        with ledger.recorder.datastore.transaction(commit=True) as c:
            c.execute("DELETE FROM stored_events WHERE originator_id = ? AND originator_version = 4", (claim_id.hex,))
    else:
        with ledger.recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(f"DELETE FROM {ledger.recorder.datastore.schema}.{ledger.recorder.events_table_name}"
                         " WHERE originator_id = %s AND originator_version = 4", (claim_id,))
            conn.commit()
    retraction = api.act("retractions", {"retracts": "elton-instagram", "party": story.ELTON, "act_id": "r1"})
    wait_until(lambda: api.services.runtime.read.position() == retraction["position"], 10, "the engine goes on")
    healed = api.client.get("/healthz")
    assert healed.status_code == 200 and healed.json()["status"] == "ok", healed.json()
    assert healed.json()["projections"]["engine"] == "running" and healed.json()["projections"]["error"] is None
