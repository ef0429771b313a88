"""A real ledger for the client's tests: `claims serve` in its own process on a fresh
database, the seed story recorded over HTTP, a token per role, and raw HTTP to compare with."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from client import LedgerClient
from tests.api import story
from tests.conftest import drop_schema, new_database_url
from tests.reliability.server import LedgerServer, make_token

Json = dict[str, Any]
ROLES = ("reader", "recorder", "editor", "auditor")


@dataclass
class Served:
    """A running ledger, its tokens by role, and raw HTTP to it."""

    server: LedgerServer
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return self.server.base

    def client(self, role: str | None = "auditor", **kwargs: Any) -> LedgerClient:
        return LedgerClient(self.base, None if role is None else self.tokens[role], **kwargs)

    def raw(self, method: str, path: str, role: str | None = "auditor", **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if role is not None:
            headers["Authorization"] = f"Bearer {self.tokens[role]}"
        return httpx.request(method, self.base + path, headers=headers, timeout=30, **kwargs)

    def raw_json(self, path: str, role: str | None = "auditor", **params: Any) -> Any:
        response = self.raw("GET", path, role, params=params)
        assert response.status_code == 200, response.text
        return response.json()


def serve(database_url: str, workdir: Path) -> Iterator[Served]:
    server = LedgerServer(database_url, workdir)
    served = Served(server, {role: make_token(database_url, role)[1] for role in ROLES})
    server.start()
    try:
        yield served
    finally:
        server.kill()
        drop_schema(database_url)


def seed(served: Served) -> None:
    """The seed story, recorded with raw HTTP: registered, Elton John asserts, Peskov denies for Putin."""
    for path, body in (("/v1/claims", story.registration()),
                       (f"/v1/claims/{story.KEY}/assertions", story.elton_asserts()),
                       (f"/v1/claims/{story.KEY}/denials", story.peskov_denies())):
        response = served.raw("POST", path, "recorder", json=body)
        assert response.status_code in (200, 201), response.text
    # Reads compare the client with raw HTTP, one after the other: both must see the whole story.
    served.server.wait_projected()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server (SQLite) per module, the seed story in it."""
    workdir = tmp_path_factory.mktemp("client")
    for running in serve(new_database_url("sqlite", workdir), workdir):
        seed(running)
        yield running


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served_on(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server per module and backend, empty, for the write path."""
    workdir = tmp_path_factory.mktemp(f"client-{request.param}")
    yield from serve(new_database_url(str(request.param), workdir), workdir)
