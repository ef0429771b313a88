"""Shared test fixtures: a fresh ledger on a SQLite file and on the real PostgreSQL.

PostgreSQL tests run in their own schema of the test database. When the server
cannot be reached they fail under CI (CI=true) and are skipped elsewhere.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from domain import Ledger
from store.event_store import open_ledger
from store.settings import Database, get_settings

POSTGRES_URL = os.environ.get(
    "LEDGER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
BACKENDS = ["sqlite", "postgres"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast-lane", choices=("on", "off"), default="on",
        help="off: the HTTP apps under test answer every request through FastAPI",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With `--fast-lane=off`, tests marked `real_server` are deselected (not skipped): a real
    `claims serve` always runs its fast lane, so they already ran in the lane-on pass."""
    if config.getoption("fast_lane") == "on":
        return
    again = [item for item in items if item.get_closest_marker("real_server") is None]
    if len(again) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("real_server")])
        items[:] = again


@pytest.fixture(scope="session")
def fast_lane(pytestconfig: pytest.Config) -> bool:
    """Whether the apps under test run with the API's fast lane (`--fast-lane`, on by default)."""
    return bool(pytestconfig.getoption("fast_lane") == "on")


def postgres_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return None
    except psycopg.Error as e:
        return str(e)


def require_postgres() -> None:
    problem = postgres_available()
    if problem is None:
        return
    message = f"PostgreSQL at {POSTGRES_URL} is unreachable: {problem}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def new_database_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / f'ledger-{uuid.uuid4().hex[:8]}.db'}"
    require_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    return f"{POSTGRES_URL}?schema={schema}"


def drop_schema(url: str) -> None:
    database = Database.from_url(url)
    if database.backend == "postgres" and database.schema != "public":
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{database.schema}" CASCADE')


@pytest.fixture(autouse=True)
def settings_of_the_test() -> Iterator[None]:
    """Each test reads the LEDGER_* environment afresh, so one set with monkeypatch applies
    (a process reads it once and keeps it)."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    url = new_database_url(backend, tmp_path)
    yield url
    drop_schema(url)


@pytest.fixture
def ledger(database_url: str) -> Iterator[Ledger]:
    app = open_ledger(Database.from_url(database_url))
    yield app
    app.close()


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Iterator[Ledger]:
    app = open_ledger(Database.from_url(f"sqlite:///{tmp_path / 'ledger.db'}"))
    yield app
    app.close()
