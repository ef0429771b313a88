"""The shipped stories in one ledger, and each claim's history as the formats read it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.replay import FIXTURES_DIR, import_fixture
from formats.history import ClaimHistory, folded
from service.runtime import Runtime
from tests.conftest import drop_schema, new_database_url

STORIES = sorted(FIXTURES_DIR.glob("*/*.jsonl"))
BASE = "https://ledger.example"
SEED_KEY = "putin-phoned-elton-john"
RETRACTION_KEYS = ("port-ellery-bridge-closes-1-march-2024", "port-ellery-ferry-free-during-closure")


def load_stories(runtime: Runtime) -> None:
    for story in STORIES:
        import_fixture(runtime.ledger, story)
    runtime.engine.catch_up()


@pytest.fixture(scope="module")
def stories(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """A SQLite ledger holding every shipped story, projected."""
    runtime = Runtime.open(f"sqlite:///{tmp_path_factory.mktemp('stories') / 'ledger.db'}")
    load_stories(runtime)
    yield runtime
    runtime.close()


def history_of(runtime: Runtime, ref: str) -> ClaimHistory:
    found = runtime.read.history_at(ref)
    assert found is not None, ref
    return folded(found["claim_id"], found["events"])


def all_keys(runtime: Runtime) -> list[str]:
    views, cursor = runtime.read.list_claims(limit=500)
    assert cursor is None
    return [view["key"] for view in views]


@pytest.fixture
def empty_runtime(database_url: str) -> Iterator[Runtime]:
    """A fresh ledger on each backend."""
    runtime = Runtime.open(database_url)
    yield runtime
    runtime.close()


def sqlite_url(tmp_path: Path) -> str:
    return new_database_url("sqlite", tmp_path)


__all__ = ["BASE", "STORIES", "all_keys", "drop_schema", "history_of", "load_stories", "sqlite_url"]
