"""Read-your-writes, parties, the event feed, health and metrics."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
import rfc8785

from api.routes import events
from tests.api import story
from tests.api.conftest import Api


def test_a_read_with_min_position_sees_the_write_that_answered_it(api: Api) -> None:
    registered, asserted, denied = api.seed()
    for path in (f"/v1/claims/{story.KEY}", f"/v1/claims/{story.KEY}/history", "/v1/claims",
                 "/v1/parties/vladimir-putin"):
        response = api.get(path, min_position=denied["position"])
        assert response.status_code == 200, (path, response.text)
    claim = api.get(f"/v1/claims/{story.KEY}", min_position=denied["position"]).json()
    assert claim["version"] == 3
    assert registered["position"] < asserted["position"] < denied["position"]


def test_min_position_past_the_end_of_the_log_is_a_422(api: Api) -> None:
    api.register()
    response = api.get(f"/v1/claims/{story.KEY}", min_position=10_000)
    assert response.status_code == 422
    assert response.json()["type"].endswith(":position-beyond-log")


def test_min_position_not_reached_in_time_is_a_503_with_retry_after(api_without_projections: Api) -> None:
    api = api_without_projections
    registered = api.register()
    started = time.monotonic()
    response = api.get("/v1/claims", min_position=registered["position"])
    waited = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["type"].endswith(":projections-behind")
    assert response.headers["Retry-After"] == "1"
    assert 0.25 <= waited < 2.0


def test_a_write_answers_with_a_position_even_when_projections_are_behind(api_without_projections: Api) -> None:
    api = api_without_projections
    first = api.register()
    again = api.post("/v1/claims", story.registration())
    assert again.status_code == 200
    # The retry is answered with a position that reads can wait for: with the read models
    # behind, the log's head, here the registration itself. Nothing new was written.
    assert first["position"] == 1
    assert again.json() == first
    assert api.services.runtime.ledger.max_position() == 1


def test_a_party_shows_its_stances_across_claims(api: Api) -> None:
    _, _, denied = api.seed()
    putin = api.read("/v1/parties/vladimir-putin", denied["position"]).json()
    assert putin["party_id"] == "vladimir-putin"
    assert putin["name"] == "Vladimir Putin"
    assert [(s["key"], s["stance"]) for s in putin["stances"]] == [(story.KEY, "denies")]
    peskov = api.get("/v1/parties/dmitry-peskov").json()
    assert peskov["stances"] == []
    assert peskov["spoken_for_others"][0]["holder"] == story.PUTIN


def test_an_unknown_party_is_a_404_and_a_bad_party_id_a_422(api: Api) -> None:
    assert api.get("/v1/parties/nobody").status_code == 404
    assert api.get("/v1/parties/Not%20A%20Slug").status_code == 422


def test_the_event_feed_serves_bodies_whose_hash_checks(api: Api) -> None:
    _, _, denied = api.seed()
    response = api.get("/v1/events", role="auditor", min_position=denied["position"])
    assert response.status_code == 200
    page = response.json()
    assert [i["position"] for i in page["items"]] == [1, 2, 3]
    assert page["next_after"] == 3
    for item in page["items"]:
        assert hashlib.sha256(rfc8785.dumps(item["body"])).hexdigest() == item["hash"]
    assert page["items"][2]["body"]["data"]["on_behalf_of"] == story.PUTIN


def test_the_event_feed_pages_with_after_and_limit(api: Api) -> None:
    _, _, denied = api.seed()
    first = api.get("/v1/events", role="auditor", limit=2, min_position=denied["position"]).json()
    assert [i["position"] for i in first["items"]] == [1, 2]
    rest = api.get("/v1/events", role="auditor", after=first["next_after"]).json()
    assert [i["position"] for i in rest["items"]] == [3]
    empty = api.get("/v1/events", role="auditor", after=3).json()
    assert empty == {"items": [], "next_after": 3}


def test_the_event_feed_streams_ndjson_one_item_a_line(api: Api) -> None:
    _, _, denied = api.seed()
    response = api.get("/v1/events", role="auditor", min_position=denied["position"],
                       headers={"Accept": "application/x-ndjson"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = response.text.splitlines()
    items = [json.loads(line) for line in lines]
    assert [i["position"] for i in items] == [1, 2, 3]
    limited = api.get("/v1/events", role="auditor", limit=1, after=1, headers={"Accept": "application/x-ndjson"})
    assert [json.loads(line)["position"] for line in limited.text.splitlines()] == [2]


def test_the_ndjson_feed_streams_past_one_page(sqlite_api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    sqlite_api.register()
    last = {}
    for i in range(5):
        last = sqlite_api.post(f"/v1/claims/{story.KEY}/assertions",
                               story.elton_asserts(act_id=f"act-{i}"), role="recorder").json()
    monkeypatch.setattr(events, "PAGE", 2)
    response = sqlite_api.get("/v1/events", role="auditor", min_position=last["position"],
                              headers={"Accept": "application/x-ndjson"})
    positions = [json.loads(line)["position"] for line in response.text.splitlines()]
    assert positions == list(range(1, last["position"] + 1))


def test_healthz_reports_database_and_projection_position_and_lag(api: Api) -> None:
    _, _, denied = api.seed()
    api.get("/v1/claims", min_position=denied["position"])
    health = api.client.get("/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["projections"]["head"] == denied["position"]
    assert body["projections"]["engine"] == "running"
    assert body["projections"]["lag"] == body["projections"]["head"] - body["projections"]["position"]


def test_healthz_reports_lag_when_projections_are_external(api_without_projections: Api) -> None:
    api_without_projections.register()
    body = api_without_projections.client.get("/healthz").json()
    assert body["projections"] == {"position": 0, "head": 1, "lag": 1, "engine": "external", "error": None,
                                   "lease": None}


def test_metrics_count_requests_by_route_template_and_status_and_events_written(api: Api) -> None:
    _, _, denied = api.seed()
    api.get(f"/v1/claims/{story.KEY}", min_position=denied["position"])
    api.get("/v1/claims/no-such-claim")
    text = api.client.get("/metrics").text
    assert 'claims_http_requests_total{method="GET",route="/v1/claims/{id}",status="200"} 1.0' in text
    assert 'claims_http_requests_total{method="GET",route="/v1/claims/{id}",status="404"} 1.0' in text
    assert 'claims_http_requests_total{method="POST",route="/v1/claims/{id}/assertions",status="201"} 1.0' in text
    assert "claims_events_written_total 3.0" in text
    assert "claims_http_request_duration_seconds_bucket" in text
    assert "claims_projection_lag_events" in text
    api.client.get("/no/such/route/123")
    assert 'route="unmatched",status="404"' in api.client.get("/metrics").text
