"""The LEDGER_* settings: typed, defaulted, read once, refused with what to write instead, and
documented by a table generated from the model; LEDGER_DATABASE_URL is mapped onto the event
store's settings, and bad URLs say how to fix them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from domain.errors import InvalidInput
from store.event_store import open_ledger
from store.settings import DEFAULTS, Database, Settings, env_name, get_settings, read_settings
from tests.conftest import drop_schema, new_database_url, require_postgres

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "python -m store.settings > docs/configuration.md"
# The test suite's own PostgreSQL (tests/conftest.py, bench/harness.py): not a setting of the ledger.
TEST_ONLY = {"LEDGER_TEST_POSTGRES_URL", "LEDGER_TEST_PG_BIN", "LEDGER_TEST_GOPATH"}  # the test suite's own
# A witness's verifier key (cosignature/v1) and a log's (Ed25519), both of the all-zero private key.
WITNESS_KEY = "witness.example/w1+e42b2f2c+BDtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
LOG_KEY = "log.example+d85f6874+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT_FILES = {".py", ".md", ".toml", ".sh", ".yml", ".yaml", ".cfg", ".ini", ".txt"}


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in Settings.model_fields:
        monkeypatch.delenv(env_name(name), raising=False)
    return monkeypatch


def test_every_setting_has_its_documented_default_when_nothing_is_set(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    settings = read_settings()
    assert settings == DEFAULTS
    assert (settings.database_url, settings.api_threads, settings.write_timeout, settings.claim_cache_size) == (
        "sqlite:///ledger.db", 16, 10.0, 5000)
    assert settings.signing_key_file is None and settings.token is None and not settings.read_tokens_required


READ = [
    ("LEDGER_DATABASE_URL", "postgresql://writer@db/claims", "database_url", "postgresql://writer@db/claims"),
    ("LEDGER_SIGNING_KEY_FILE", "/etc/ledger/key.pem", "signing_key_file", Path("/etc/ledger/key.pem")),
    ("LEDGER_READ_TOKENS_REQUIRED", "1", "read_tokens_required", True),
    ("LEDGER_READ_TOKENS_REQUIRED", "yes", "read_tokens_required", True),
    ("LEDGER_READ_TOKENS_REQUIRED", "0", "read_tokens_required", False),
    ("LEDGER_API_THREADS", "32", "api_threads", 32),
    ("LEDGER_WRITE_TIMEOUT", "2.5", "write_timeout", 2.5),
    ("LEDGER_CLAIM_CACHE_SIZE", "100", "claim_cache_size", 100),
    ("LEDGER_PROJECTION_INTERVAL_MS", "40", "projection_interval_ms", 40.0),
    ("LEDGER_LEASE_RETRY_SECONDS", "0.25", "lease_retry_seconds", 0.25),
    ("LEDGER_SQLITE_LOCK_TIMEOUT", "30", "sqlite_lock_timeout", 30),
    ("LEDGER_PG_LOCK_TIMEOUT", "7", "pg_lock_timeout", 7),
    ("LEDGER_PG_CONNECT_TIMEOUT", "1", "pg_connect_timeout", 1),
    ("LEDGER_PG_POOL_SIZE", "4", "pg_pool_size", 4),
    ("LEDGER_PG_MAX_OVERFLOW", "0", "pg_max_overflow", 0),
    ("LEDGER_TOKEN", "clm_secret", "token", SecretStr("clm_secret")),
    ("LEDGER_WITNESSES", f"{WITNESS_KEY} http://127.0.0.1:8300", "witnesses", f"{WITNESS_KEY} http://127.0.0.1:8300"),
    ("LEDGER_WITNESS_INTERVAL", "0.5", "witness_interval", 0.5),
    ("LEDGER_WITNESS_TIMEOUT", "3", "witness_timeout", 3.0),
    ("LEDGER_STREAM_HEARTBEAT_SECONDS", "0.5", "stream_heartbeat_seconds", 0.5),
    ("LEDGER_STREAM_MAX_SUBSCRIBERS", "20", "stream_max_subscribers", 20),
    ("LEDGER_STREAM_BUFFER_EVENTS", "50", "stream_buffer_events", 50),
    ("LEDGER_STREAM_BUFFER_BYTES", "65536", "stream_buffer_bytes", 65536),
    ("LEDGER_STREAM_POLL_MS", "100", "stream_poll_ms", 100.0),
    ("LEDGER_LOG_ORIGIN", "example.org/claims", "log_origin", "example.org/claims"),
    ("LEDGER_KEY_ROTATION_OVERLAP", "1d12h", "key_rotation_overlap", "1d12h"),
    ("LEDGER_URL", "http://127.0.0.1:8000", "url", "http://127.0.0.1:8000"),
    ("LEDGER_READ_DATABASE_URL", "postgresql://r@standby/claims", "read_database_url", "postgresql://r@standby/claims"),
    ("LEDGER_READ_MAX_LAG_SECONDS", "2.5", "read_max_lag_seconds", 2.5),
    ("LEDGER_READ_FALLBACK", "refuse", "read_fallback", "refuse"),
]


@pytest.mark.parametrize(("variable", "value", "field", "expected"), READ)
def test_each_variable_is_read_into_its_typed_setting(
    clean_environment: pytest.MonkeyPatch, variable: str, value: str, field: str, expected: object,
) -> None:
    clean_environment.setenv(variable, value)
    assert getattr(read_settings(), field) == expected


def test_every_setting_is_read_from_the_variable_of_its_name() -> None:
    assert {(variable, field) for variable, _, field, _ in READ} == {
        (env_name(field), field) for field in Settings.model_fields}


def test_spaces_around_a_value_are_ignored_and_an_empty_value_counts_as_unset(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    clean_environment.setenv("LEDGER_READ_TOKENS_REQUIRED", " on ")
    clean_environment.setenv("LEDGER_API_THREADS", " 8 ")
    clean_environment.setenv("LEDGER_WRITE_TIMEOUT", "")
    settings = read_settings()
    assert (settings.read_tokens_required, settings.api_threads, settings.write_timeout) == (True, 8, 10.0)


def test_too_few_threads_and_too_short_a_write_timeout_are_raised_to_the_least_that_works(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    clean_environment.setenv("LEDGER_API_THREADS", "1")
    clean_environment.setenv("LEDGER_WRITE_TIMEOUT", "0")
    settings = read_settings()
    assert (settings.api_threads, settings.write_timeout) == (2, 0.1)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("LEDGER_API_THREADS", "many", "LEDGER_API_THREADS must be a whole number, e.g. LEDGER_API_THREADS=16, not 'many'"),
        ("LEDGER_API_THREADS", "2.5", "LEDGER_API_THREADS must be a whole number"),
        ("LEDGER_WRITE_TIMEOUT", "10s", "LEDGER_WRITE_TIMEOUT must be a number, e.g. LEDGER_WRITE_TIMEOUT=10, not '10s'"),
        ("LEDGER_READ_TOKENS_REQUIRED", "maybe", "LEDGER_READ_TOKENS_REQUIRED must be 1 or 0"),
        ("LEDGER_PG_POOL_SIZE", "0", "LEDGER_PG_POOL_SIZE must be at least 1, e.g. LEDGER_PG_POOL_SIZE=2, not '0'"),
        ("LEDGER_PG_MAX_OVERFLOW", "-1", "LEDGER_PG_MAX_OVERFLOW must be at least 0"),
        ("LEDGER_PROJECTION_INTERVAL_MS", "-5", "LEDGER_PROJECTION_INTERVAL_MS must be at least 0"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable_and_what_to_write(
    clean_environment: pytest.MonkeyPatch, variable: str, value: str, message: str,
) -> None:
    clean_environment.setenv(variable, value)
    with pytest.raises(InvalidInput, match=re.escape(message)):
        read_settings()


def test_witnesses_are_parsed_into_keys_and_urls(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("LEDGER_WITNESSES", f" {WITNESS_KEY} http://w1:8300/ ,\n\n")
    [witness] = read_settings().witness_endpoints()
    assert (str(witness.verifier), witness.url, witness.name) == (WITNESS_KEY, "http://w1:8300", "witness.example/w1")
    assert DEFAULTS.witness_endpoints() == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (WITNESS_KEY, "is not `<verifier key> <url>`"),
        (f"{WITNESS_KEY} ftp://w1", "must be http:// or https:// with a host"),
        (f"{LOG_KEY} http://w1", "is of algorithm 0x01; a witness cosigns with 0x04"),
        (f"{WITNESS_KEY[:-2]}AA http://w1", "does not match its name and key"),
        (f"{WITNESS_KEY} http://w1, {WITNESS_KEY} http://w2", "is listed twice"),
    ],
)
def test_bad_witness_entries_are_refused_saying_what_is_wrong(
    clean_environment: pytest.MonkeyPatch, value: str, message: str,
) -> None:
    clean_environment.setenv("LEDGER_WITNESSES", value)
    with pytest.raises(InvalidInput, match=re.escape(message)) as refused:
        read_settings()
    assert str(refused.value).startswith("LEDGER_WITNESSES is refused: ")


def test_read_replicas_are_listed_one_url_each_and_must_be_postgres(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("LEDGER_READ_DATABASE_URL", " postgresql://r@s1/claims , postgresql://r@s2/claims?schema=x,")
    assert read_settings().read_database_urls() == ["postgresql://r@s1/claims", "postgresql://r@s2/claims?schema=x"]
    assert DEFAULTS.read_database_urls() == []
    clean_environment.setenv("LEDGER_READ_DATABASE_URL", "sqlite:///replica.db")
    with pytest.raises(InvalidInput, match=re.escape("'sqlite:///replica.db' is not a PostgreSQL URL")):
        read_settings()
    clean_environment.setenv("LEDGER_READ_DATABASE_URL", "postgresql://r@s1/claims")
    clean_environment.setenv("LEDGER_READ_FALLBACK", "error")
    with pytest.raises(InvalidInput, match=re.escape("'error' is not a fallback: write one of primary, refuse")):
        read_settings()


def test_every_bad_value_is_named_at_once(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("LEDGER_API_THREADS", "many")
    clean_environment.setenv("LEDGER_PG_LOCK_TIMEOUT", "soon")
    with pytest.raises(InvalidInput) as refused:
        read_settings()
    assert "LEDGER_API_THREADS" in str(refused.value) and "LEDGER_PG_LOCK_TIMEOUT" in str(refused.value)


def test_the_token_is_never_shown_in_the_settings_repr(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("LEDGER_TOKEN", "clm_do_not_print")
    assert "clm_do_not_print" not in repr(read_settings())


def test_a_process_reads_its_settings_once_and_keeps_them(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("LEDGER_API_THREADS", "8")
    first = get_settings()
    clean_environment.setenv("LEDGER_API_THREADS", "32")
    assert get_settings() is first and first.api_threads == 8
    get_settings.cache_clear()
    assert get_settings().api_threads == 32


def test_a_bad_value_stops_a_command_with_exit_status_2_and_no_traceback(tmp_path: Path) -> None:
    claims = Path(sys.executable).with_name("claims")
    command = [str(claims)] if claims.exists() else [sys.executable, "-c", "from cli.main import main; main()"]
    env = {**os.environ, "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}", "LEDGER_API_THREADS": "many"}
    done = subprocess.run([*command, "token", "list"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "LEDGER_API_THREADS must be a whole number" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "ledger.db").exists()


def test_docs_configuration_md_is_the_table_the_settings_model_generates() -> None:
    generated = subprocess.run([sys.executable, "-m", "store.settings"], cwd=ROOT, capture_output=True,
                               text=True, timeout=60, check=True).stdout
    documented = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert documented == generated, f"docs/configuration.md is out of date: run `{REGENERATE}`"
    for name, field in Settings.model_fields.items():
        assert f"| `{env_name(name)}` |" in generated and field.description, name


def test_every_ledger_variable_named_in_the_repository_is_a_setting() -> None:
    settings = {env_name(name) for name in Settings.model_fields}
    unknown: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT)
        if relative.parts[0].startswith(".") or relative.parts[0].endswith(".egg-info") or not (
                path.suffix in TEXT_FILES or path.name == "Makefile") or not path.is_file():
            continue
        for name in set(re.findall(r"\bLEDGER_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8", errors="replace"))):
            if name not in settings and name not in TEST_ONLY:
                unknown.setdefault(name, set()).add(str(relative))
    assert not unknown, f"LEDGER_* variables that are not fields of store.settings.Settings: {unknown}"


def test_the_default_is_a_sqlite_file_in_the_working_directory(clean_environment: pytest.MonkeyPatch) -> None:
    database = Database.from_url()
    assert (database.backend, database.path) == ("sqlite", "ledger.db")


def test_without_a_url_the_database_is_the_one_ledger_database_url_names(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    clean_environment.setenv("LEDGER_DATABASE_URL", f"sqlite:///{tmp_path / 'named.db'}")
    assert Database.from_url().path == str(tmp_path / "named.db")


def test_the_database_is_opened_with_the_timeouts_and_pool_sizes_of_its_settings(tmp_path: Path) -> None:
    settings = Settings(sqlite_lock_timeout=30, pg_lock_timeout=7, pg_connect_timeout=3, pg_pool_size=4,
                        pg_max_overflow=1)
    sqlite = Database.from_url(f"sqlite:///{tmp_path / 'ledger.db'}", settings)
    assert sqlite.library_env()["SQLITE_LOCK_TIMEOUT"] == "30"
    postgres = Database.from_url("postgresql://postgres@127.0.0.1:5432/test", settings)
    env = postgres.library_env()
    assert (env["POSTGRES_LOCK_TIMEOUT"], env["POSTGRES_CONNECT_TIMEOUT"], env["POSTGRES_POOL_SIZE"],
            env["POSTGRES_MAX_OVERFLOW"]) == ("7", "3", "4", "1")
    assert postgres.connect_kwargs()["connect_timeout"] == 3


def test_sqlite_urls_take_relative_and_absolute_paths() -> None:
    assert Database.from_url("sqlite:///data/ledger.db").path == "data/ledger.db"
    assert Database.from_url("sqlite:////var/lib/ledger.db").path == "/var/lib/ledger.db"


def test_postgres_urls_name_the_host_port_user_password_database_and_schema() -> None:
    database = Database.from_url("postgresql://writer:s3cret@db.example:6543/claims?schema=newsroom")
    assert (database.host, database.port, database.user, database.password, database.dbname, database.schema) == (
        "db.example", 6543, "writer", "s3cret", "claims", "newsroom")


@pytest.mark.postgres
def test_postgres_urls_set_a_lock_timeout_and_bounded_pools(tmp_path: Path) -> None:
    require_postgres()
    url = new_database_url("postgres", tmp_path)
    try:
        # By default: a lock timeout, and a pool of a few connections with a few more at most.
        default = Database.from_url(url, DEFAULTS).library_env()
        assert (default["POSTGRES_LOCK_TIMEOUT"], default["POSTGRES_POOL_SIZE"], default["POSTGRES_MAX_OVERFLOW"]) == (
            str(DEFAULTS.pg_lock_timeout), str(DEFAULTS.pg_pool_size), str(DEFAULTS.pg_max_overflow))
        assert DEFAULTS.pg_lock_timeout > 0
        # As set, the library is given them, and the ledger's own pool and connections use them.
        settings = Settings(pg_lock_timeout=7, pg_pool_size=3, pg_max_overflow=2)
        database = Database.from_url(url, settings)
        env = database.library_env()
        assert (env["POSTGRES_LOCK_TIMEOUT"], env["POSTGRES_POOL_SIZE"], env["POSTGRES_MAX_OVERFLOW"]) == ("7", "3", "2")
        ledger = open_ledger(database)
        try:
            datastore = ledger.recorder.datastore
            assert (datastore.pool.min_size, datastore.pool.max_size) == (3, 5)
            with datastore.get_connection() as conn, conn.transaction(), conn.cursor() as cur:
                ledger.recorder.lock_table(cur)  # what every write does first, on a pooled connection
                assert cur.execute("SHOW lock_timeout").fetchone() == {"lock_timeout": "7s"}
        finally:
            ledger.close()
    finally:
        drop_schema(url)


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
