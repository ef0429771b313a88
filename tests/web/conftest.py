"""The web pages under test: in-process apps for plain HTTP tests, and for the browser tests
a real `claims serve` with the seed story and one headless Chromium per module."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from store.tokens import Role
from tests.api import story
from tests.conftest import drop_schema, new_database_url
from tests.reliability.server import LedgerServer, make_token
from web.app import create_app

with warnings.catch_warnings():  # starlette asks for httpx2, which is not released for this stack
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[2]
Json = dict[str, Any]


@dataclass
class Site:
    """An app with the pages, on its own database, and a token per role."""

    client: TestClient
    url: str
    tokens: dict[str, str]

    def token(self, role: str) -> str:
        if role not in self.tokens:
            services = self.client.app.state.services  # type: ignore[attr-defined]
            _, self.tokens[role] = services.tokens.create(Role(role), label=f"web tests {role}")
        return self.tokens[role]

    def post(self, path: str, body: Json, role: str = "editor") -> Json:
        response = self.client.post(path, json=body, headers={"Authorization": f"Bearer {self.token(role)}"})
        assert response.status_code in (200, 201), response.text
        return dict(response.json())

    def seed(self) -> int:
        """The seed story, projected before this returns; the position of its last event."""
        self.post("/v1/claims", story.registration())
        self.post(f"/v1/claims/{story.KEY}/assertions", story.elton_asserts())
        position = int(self.post(f"/v1/claims/{story.KEY}/denials", story.peskov_denies())["position"])
        projected = self.client.get(f"/v1/claims/{story.KEY}", params={"min_position": position},
                                    headers={"Authorization": f"Bearer {self.token('reader')}"})
        assert projected.status_code == 200, projected.text
        return position

    def page(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get(path, params=params or None)  # params={} would drop the path's own query


def open_site(url: str, *, fast_lane: bool = True) -> Iterator[Site]:
    with TestClient(create_app(url=url, fast_lane=fast_lane), raise_server_exceptions=False) as client:
        yield Site(client, url, {})


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fast_lane: bool) -> Iterator[Site]:
    """One app per module and backend, with the seed story, for tests that read (and add
    claims of their own); with the fast lane unless `--fast-lane=off`."""
    url = new_database_url(str(request.param), tmp_path_factory.mktemp("web"))
    try:
        for site in open_site(url, fast_lane=fast_lane):
            site.seed()
            yield site
    finally:
        drop_schema(url)


# -- Browser tests ------------------------------------------------------------------------------


def chromium_missing() -> str | None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def require_chromium() -> None:
    problem = chromium_missing()
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests need Chromium: {problem}")
    pytest.skip(problem)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium (Debian's, with its driver: Selenium Manager downloads nothing)."""
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1000",
                     "--disable-gpu", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class Served:
    """A `claims serve` with the seed story, and a client for its API."""

    server: LedgerServer
    tokens: dict[str, str]

    @property
    def base(self) -> str:
        return self.server.base

    def post(self, path: str, body: Json, role: str = "editor") -> Json:
        if role not in self.tokens:
            _, self.tokens[role] = make_token(self.server.database_url, role)
        response = httpx.post(self.base + path, json=body, headers={"Authorization": f"Bearer {self.tokens[role]}"},
                              timeout=10)
        assert response.status_code in (200, 201), response.text
        return dict(response.json())


def serve_seeded(tmp: Path, **env: str) -> Iterator[Served]:
    url = new_database_url("sqlite", tmp)
    server = LedgerServer(url, tmp, extra_env=env)
    demo = server.claims("demo", "--if-empty")
    assert demo.returncode == 0, demo.stderr
    server.start()
    try:
        server.wait_projected()
        yield Served(server, {})
    finally:
        server.stop()
        server.http.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    require_chromium()  # before paying for a server
    yield from serve_seeded(tmp_path_factory.mktemp("served"))


def screenshot(driver: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(path)), f"no screenshot saved to {path}"
    return path
