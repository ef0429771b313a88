"""A real PostgreSQL outage (a proxy cut in front of the server): 503s with reasons, then recovery."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from api.routes.deps import ApiSettings
from tests.api import story
from tests.api.conftest import Api, open_api_through_proxy
from tests.api.proxy import Proxy


@pytest.fixture
def proxied(monkeypatch: pytest.MonkeyPatch, fast_lane: bool) -> Iterator[tuple[Api, Proxy]]:
    yield from open_api_through_proxy(monkeypatch, fast_lane=fast_lane, settings=ApiSettings(write_timeout=2.0))


@pytest.mark.postgres
def test_while_the_database_is_down_health_and_writes_answer_503_and_recover_after(proxied: tuple[Api, Proxy]) -> None:
    api, proxy = proxied
    registered = api.register()
    assert api.get(f"/v1/claims/{story.KEY}", min_position=registered["position"]).status_code == 200
    proxy.cut()

    started = time.monotonic()
    health = api.client.get("/healthz")
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable"
    assert "postgres unreachable" in health.json()["database"]
    assert time.monotonic() - started < 5

    write = api.post(f"/v1/claims/{story.KEY}/assertions", story.elton_asserts())
    assert write.status_code == 503, write.text
    assert write.headers["Retry-After"]
    assert write.json()["type"].endswith(":store-unavailable")

    assert time.monotonic() - started < 15

    proxy.restore()
    deadline = time.monotonic() + 30
    while api.client.get("/healthz").status_code != 200:
        assert time.monotonic() < deadline, "the API did not recover"
        time.sleep(0.2)
    retry = api.post(f"/v1/claims/{story.KEY}/assertions", story.elton_asserts())
    assert retry.status_code in (200, 201), retry.text
