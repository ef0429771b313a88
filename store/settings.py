"""Where the ledger keeps its events: LEDGER_DATABASE_URL mapped onto the library's settings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from domain.errors import InvalidInput

DEFAULT_URL = "sqlite:///ledger.db"


@dataclass(frozen=True)
class Database:
    """A parsed LEDGER_DATABASE_URL."""

    url: str
    backend: str  # "sqlite" or "postgres"
    path: str = ""  # sqlite file
    host: str = ""
    port: int = 5432
    user: str = ""
    password: str = ""
    dbname: str = ""
    schema: str = "public"

    @classmethod
    def from_url(cls, url: str | None = None) -> Database:
        url = url or os.environ.get("LEDGER_DATABASE_URL") or DEFAULT_URL
        parts = urlsplit(url)
        if parts.scheme == "sqlite":
            path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
            if parts.netloc:
                raise InvalidInput(f"{url!r}: write sqlite:///relative.db or sqlite:////absolute.db")
            if not path or path == ":memory:":
                raise InvalidInput(
                    f"{url!r}: the ledger needs a SQLite file (an in-memory database is one per "
                    "connection and would lose events); use sqlite:///path/ledger.db"
                )
            return cls(url=url, backend="sqlite", path=path)
        if parts.scheme in ("postgresql", "postgres", "postgresql+psycopg"):
            query = parse_qs(parts.query)
            dbname = unquote(parts.path.lstrip("/"))
            if not dbname:
                raise InvalidInput(f"{url!r}: name the database, e.g. postgresql://user@host:5432/ledger")
            return cls(
                url=url, backend="postgres", host=parts.hostname or "127.0.0.1",
                port=parts.port or 5432, user=unquote(parts.username or "postgres"),
                password=unquote(parts.password or ""), dbname=dbname,
                schema=query.get("schema", ["public"])[0],
            )
        raise InvalidInput(
            f"LEDGER_DATABASE_URL {url!r} is not supported: use sqlite:///path/ledger.db or "
            "postgresql://user:pass@host:port/db"
        )

    def library_env(self) -> dict[str, str]:
        """The eventsourcing settings for this database."""
        if self.backend == "sqlite":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            return {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": self.path,
                "SQLITE_LOCK_TIMEOUT": os.environ.get("LEDGER_SQLITE_LOCK_TIMEOUT", "10"),
            }
        self.ensure_schema()
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            # The library's recorder, each write's transaction in one round trip (domain/recorder.py).
            "APPLICATION_RECORDER_TOPIC": "store.recorder:PipelinedRecorder",
            "POSTGRES_HOST": self.host,
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": self.user,
            "POSTGRES_PASSWORD": self.password,
            "POSTGRES_DBNAME": self.dbname,
            "POSTGRES_SCHEMA": self.schema,
            # Bounded waits everywhere: a stuck lock or a dead server becomes an error
            # the API can answer (503), never a hung request.
            "POSTGRES_LOCK_TIMEOUT": os.environ.get("LEDGER_PG_LOCK_TIMEOUT", "5"),
            # Also the pool's wait for a connection; the library tries 10 times, so this
            # bounds how long a write can hang on a dead server (about 10x this).
            "POSTGRES_CONNECT_TIMEOUT": os.environ.get("LEDGER_PG_CONNECT_TIMEOUT", "2"),
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "10",
            # The pool keeps this many connections open and opens up to the overflow more
            # on demand: every process (API workers, projections, CLI) holds its own pool,
            # and PostgreSQL's connection slots are shared by all of them.
            "POSTGRES_POOL_SIZE": os.environ.get("LEDGER_PG_POOL_SIZE", "2"),
            "POSTGRES_MAX_OVERFLOW": os.environ.get("LEDGER_PG_MAX_OVERFLOW", "6"),
            # No ping before every use of a pooled connection: it cost a round trip per
            # transaction (three per group commit). A connection the server dropped fails
            # on its first statement, before anything is written; the pool discards it and
            # the library retries the call on another (10 tries, 0.2 s apart).
            "POSTGRES_PRE_PING": "n",
        }

    def connect_kwargs(self) -> dict[str, object]:
        """psycopg connection arguments (used by the read side)."""
        return {
            "host": self.host, "port": self.port, "user": self.user,
            "password": self.password, "dbname": self.dbname,
            "connect_timeout": int(os.environ.get("LEDGER_PG_CONNECT_TIMEOUT", "2")),
        }

    def ensure_schema(self) -> None:
        if self.schema == "public":
            return
        import psycopg

        with psycopg.connect(**self.connect_kwargs(), autocommit=True) as conn:  # type: ignore[arg-type]
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
