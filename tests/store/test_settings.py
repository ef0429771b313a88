"""LEDGER_DATABASE_URL is mapped onto the event store's settings, and bad URLs say how to fix them."""

from __future__ import annotations

import pytest

from domain.errors import InvalidInput
from store.settings import Database


def test_the_default_is_a_sqlite_file_in_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
    database = Database.from_url()
    assert (database.backend, database.path) == ("sqlite", "ledger.db")


def test_sqlite_urls_take_relative_and_absolute_paths() -> None:
    assert Database.from_url("sqlite:///data/ledger.db").path == "data/ledger.db"
    assert Database.from_url("sqlite:////var/lib/ledger.db").path == "/var/lib/ledger.db"


def test_postgres_urls_set_a_lock_timeout_and_bounded_pools() -> None:
    database = Database.from_url("postgresql://writer:s3cret@db.example:6543/claims?schema=newsroom")
    assert (database.host, database.port, database.user, database.password, database.dbname, database.schema) == (
        "db.example", 6543, "writer", "s3cret", "claims", "newsroom")


def test_postgres_settings_never_enable_db_functions_and_always_time_out() -> None:
    database = Database.from_url("postgresql://postgres@127.0.0.1:5432/test")
    env = database.library_env()
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
    assert int(env["POSTGRES_LOCK_TIMEOUT"]) > 0
    assert int(env["POSTGRES_CONNECT_TIMEOUT"]) > 0
    assert "POSTGRES_ENABLE_DB_FUNCTIONS" not in env


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///:memory:", "needs a SQLite file"),
        ("sqlite://", "needs a SQLite file"),
        ("mysql://root@localhost/ledger", "not supported"),
        ("postgresql://postgres@127.0.0.1:5432", "name the database"),
    ],
)
def test_unusable_urls_are_refused_with_what_to_write_instead(url: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Database.from_url(url)

