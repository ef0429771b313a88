"""An API on a fresh database per test: a TestClient (lifespan running) and a token per role.

Every app here runs with the fast lane unless pytest is given `--fast-lane=off`; `make test`
runs tests/api both ways, since the lane and FastAPI must give the same answers.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.routes.deps import ApiSettings, Services
from store.settings import Database
from store.tokens import Role
from tests.api import story
from tests.api.proxy import Proxy
from tests.conftest import POSTGRES_URL, drop_schema, new_database_url, require_postgres

with warnings.catch_warnings():  # starlette asks for httpx2, which is not released for this stack
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

Json = dict[str, Any]


@dataclass
class Api:
    """A running app and the calls tests make of it."""

    app: FastAPI
    client: TestClient
    url: str
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def services(self) -> Services:
        found = self.app.state.services
        assert isinstance(found, Services)
        return found

    def token(self, role: str) -> str:
        if role not in self.tokens:
            _, self.tokens[role] = self.services.tokens.create(Role(role), label=f"tests {role}")
        return self.tokens[role]

    def auth(self, role: str | None = "recorder", **headers: str) -> dict[str, str]:
        if role is not None:
            headers["Authorization"] = f"Bearer {self.token(role)}"
        return headers

    def get(self, path: str, *, role: str | None = None, headers: dict[str, str] | None = None,
            **params: Any) -> httpx.Response:
        return self.client.get(path, params=params, headers={**self.auth(role), **(headers or {})})

    def post(self, path: str, body: Json, *, role: str | None = "recorder",
             headers: dict[str, str] | None = None) -> httpx.Response:
        return self.client.post(path, json=body, headers={**self.auth(role), **(headers or {})})

    def register(self, **overrides: Any) -> Json:
        response = self.post("/v1/claims", story.registration(**overrides))
        assert response.status_code in (200, 201), response.text
        return dict(response.json())

    def act(self, kind: str, body: Json, claim: str = story.KEY, role: str = "editor") -> Json:
        response = self.post(f"/v1/claims/{claim}/{kind}", body, role=role)
        assert response.status_code in (200, 201), response.text
        return dict(response.json())

    def seed(self) -> tuple[Json, Json, Json]:
        """The seed story: registered, Elton John asserts, Peskov denies for Putin."""
        return (self.register(), self.act("assertions", story.elton_asserts()),
                self.act("denials", story.peskov_denies()))

    def read(self, path: str, position: int, **params: Any) -> httpx.Response:
        """A read that sees every write up to `position`."""
        return self.get(path, min_position=position, **params)


def open_api(url: str, *, fast_lane: bool, **kwargs: Any) -> Iterator[Api]:
    app = create_app(url=url, fast_lane=fast_lane, **kwargs)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(app, client, url)


@pytest.fixture
def api(database_url: str, fast_lane: bool) -> Iterator[Api]:
    yield from open_api(database_url, fast_lane=fast_lane)


@pytest.fixture
def sqlite_api(tmp_path: Path, fast_lane: bool) -> Iterator[Api]:
    yield from open_api(new_database_url("sqlite", tmp_path), fast_lane=fast_lane)


@pytest.fixture
def api_without_projections(database_url: str, fast_lane: bool) -> Iterator[Api]:
    """Projections never run: reads see nothing new (for bounded-wait rules)."""
    yield from open_api(database_url, fast_lane=fast_lane, run_projections=False,
                        settings=ApiSettings(min_position_wait=0.3))


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def shared_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fast_lane: bool,
) -> Iterator[Api]:
    """One app per module and backend, for tests that only read or add unrelated claims."""
    url = new_database_url(str(request.param), tmp_path_factory.mktemp("api"))
    try:
        yield from open_api(url, fast_lane=fast_lane)
    finally:
        drop_schema(url)


def open_api_through_proxy(
    monkeypatch: pytest.MonkeyPatch, *, fast_lane: bool, **kwargs: Any,
) -> Iterator[tuple[Api, Proxy]]:
    """An API on a fresh PostgreSQL schema reached through a proxy a test can cut."""
    require_postgres()
    monkeypatch.setenv("LEDGER_PG_CONNECT_TIMEOUT", "1")  # before the settings are first read
    real = Database.from_url(POSTGRES_URL)
    proxy = Proxy((real.host, real.port))
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = f"postgresql://{real.user}@127.0.0.1:{proxy.port}/{real.dbname}?schema={schema}"
    try:
        for api in open_api(url, fast_lane=fast_lane, **kwargs):
            yield api, proxy
            proxy.restore()  # lets the threads still retrying finish before shutdown
    finally:
        proxy.close()
        drop_schema(f"{POSTGRES_URL}?schema={schema}")
