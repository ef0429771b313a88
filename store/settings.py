"""The ledger's settings: every `LEDGER_*` environment variable, typed and read once per process,
and the Database they name (LEDGER_DATABASE_URL mapped onto the library's settings).

`python -m store.settings > docs/configuration.md` writes the table of them all.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, get_args
from urllib.parse import parse_qs, unquote, urlsplit

from annotated_types import Ge
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.errors import InvalidInput
from domain.note import COSIGNATURE_V1, Verifier, check_key_name

ENV_PREFIX = "LEDGER_"
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
READ_FALLBACKS = ("primary", "refuse")
MIN_API_THREADS = 2  # one request can wait on a write while another reads
MIN_WRITE_TIMEOUT = 0.1


class Settings(BaseSettings):
    """Everything an operator can set, with its default; `Settings()` reads the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True)

    database_url: str = Field(
        default="sqlite:///ledger.db",
        description="Where the events and read models live: `sqlite:///path/ledger.db` or "
        "`postgresql://user:pass@host:port/db[?schema=name]`.",
    )
    signing_key_file: Path | None = Field(
        default=None,
        description="The Ed25519 key that signs checkpoints; made (mode 0600) on first use: back it up. "
        "Unset: `<sqlite file>.signing-key.pem` beside a SQLite ledger, else `./ledger-signing-key.pem`.",
    )
    log_origin: str | None = Field(
        default=None,
        description="The log's origin: the first line of every checkpoint and the name of its signing key "
        "(a schema-less URL such as `ledger.example.org/claims`; no spaces, no `+`). Unset: "
        "`claims-ledger/<16 hex digits of SHA-256 of the public key>`, kept across key rotations.",
    )
    key_rotation_overlap: str = Field(
        default="7d",
        description="How long, after `claims audit-key rotate`, the previous key goes on signing each "
        "checkpoint beside the new one (when `--overlap` is not given): `<n>` followed by `s`, `m`, `h`, `d` "
        "or `w`, in one or more parts (`1d12h`).",
    )
    read_tokens_required: bool = Field(
        default=False, description="`1` makes every read need a token (role `reader` or above).",
    )
    api_threads: int = Field(
        default=16,
        description=f"Request threads per API process (at least {MIN_API_THREADS}); the read pool "
        "keeps as many connections.",
    )
    write_timeout: float = Field(
        default=10.0,
        description="Seconds a write waits to be taken by the group writer before the API answers 503 "
        f"(at least {MIN_WRITE_TIMEOUT:g}).",
    )
    claim_cache_size: int = Field(
        default=5000, ge=1,
        description="Claims kept in memory by the writer (fast-forwarded from the store on each use).",
    )
    projection_interval_ms: float = Field(
        default=25.0, ge=0,
        description="While writes stream in, the projection engine starts a batch at most this often, "
        "and waits at least twice as long as its last batch took (a backlog is applied at once): under "
        "load, fewer and larger batches and a third of the time at most for the engine; more means "
        "less CPU per event and more lag.",
    )
    lease_retry_seconds: float = Field(
        default=0.5, gt=0, le=60,
        description="On PostgreSQL, how often a process whose projection engine (or witnessing) stands by "
        "tries to take over the lease another process holds: the engine's failover time is about this "
        "much once the leader's session has ended.",
    )
    sqlite_lock_timeout: int = Field(
        default=10, ge=1, description="Seconds a SQLite writer waits for the file lock.",
    )
    pg_lock_timeout: int = Field(
        default=5, ge=1, description="Seconds a write waits for the event table's lock before the API answers 503.",
    )
    pg_connect_timeout: int = Field(
        default=2, ge=1,
        description="Seconds to wait for a PostgreSQL connection (the library tries 10 times, so a "
        "write on a dead server fails after about ten times this).",
    )
    pg_pool_size: int = Field(
        default=2, ge=1,
        description="Event-store connections each process keeps open (API workers, projections and "
        "commands each hold their own pool; PostgreSQL's connection slots are shared by all).",
    )
    pg_max_overflow: int = Field(
        default=6, ge=0, description="Event-store connections each process opens on demand beyond the pool.",
    )
    url: str | None = Field(
        default=None,
        description="The base URL of the ledger the remote commands (`claims show`, `list`, `history`, `party`, "
        "`assert`, `deny`, `retract`, `void`, `review`, `tail`, `watch`, `audit`) talk to when `--url` is not given, "
        "e.g. `https://ledger.example.org`.",
    )
    token: SecretStr | None = Field(
        default=None,
        description="The bearer token the remote commands and `claims audit` send when `--token` is not given "
        "(a role high enough for the command: `auditor` for `audit` and `tail`).",
    )
    stream_heartbeat_seconds: float = Field(
        default=15.0, ge=0.1,
        description="Seconds between the comment lines an idle Server-Sent Event stream sends, so that "
        "proxies do not close it.",
    )
    stream_max_subscribers: int = Field(
        default=1000, ge=1,
        description="Open Server-Sent Event streams each API process serves at most; one more is answered "
        "503 with `Retry-After`.",
    )
    stream_buffer_events: int = Field(
        default=1000, ge=1,
        description="Events kept for a stream whose client reads too slowly; past this (or "
        "`LEDGER_STREAM_BUFFER_BYTES`) the stream ends with `event: dropped`, naming where to resume.",
    )
    stream_buffer_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Bytes of events kept for a stream whose client reads too slowly.",
    )
    stream_poll_ms: float = Field(
        default=50.0, ge=1,
        description="How often each API process's stream follower looks for new projected events on SQLite "
        "(PostgreSQL wakes it with NOTIFY, and this is then the fallback's pace while writes arrive).",
    )
    witnesses: str | None = Field(
        default=None,
        description="The witnesses (C2SP tlog-witness) the ledger submits each new checkpoint to, and whose "
        "cosignatures it serves with it: entries `<verifier key> <url>` (the key as `claims witness key` "
        "prints it, the URL its `add-checkpoint` prefix), separated by commas or newlines. Unset: none "
        "([witness.md](witness.md)).",
    )
    witness_interval: float = Field(
        default=1.0, ge=0.01,
        description="Seconds between two submissions to one witness: each new checkpoint goes to every "
        "witness at most this often (the latest one then).",
    )
    witness_timeout: float = Field(
        default=5.0, ge=0.1, description="Seconds the ledger waits for a witness's answer before counting it down.",
    )
    read_database_url: str | None = Field(
        default=None,
        description="PostgreSQL hot standbys of the ledger's database (streaming replicas), comma-separated "
        "URLs: reads of claims, lists, histories, parties and the feed are served there, `min_position` "
        "waiting on the standby's own projections. A URL without `?schema=` takes the ledger's. Unset: every "
        "read goes to LEDGER_DATABASE_URL.",
    )
    read_max_lag_seconds: float = Field(
        default=5.0, gt=0,
        description="A standby more than this many seconds behind the primary (or unreachable) serves no "
        "reads until it catches up: they go to the primary, or are refused (LEDGER_READ_FALLBACK).",
    )
    read_fallback: str = Field(
        default="primary",
        description="What reads do when no standby is within LEDGER_READ_MAX_LAG_SECONDS: `primary` (read "
        "the primary) or `refuse` (answer 503 with Retry-After).",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        # Values often come from shell scripts and unit files with stray spaces.
        return value.strip() if isinstance(value, str) else value

    @field_validator("api_threads")
    @classmethod
    def _enough_threads(cls, threads: int) -> int:
        return max(MIN_API_THREADS, threads)

    @field_validator("write_timeout")
    @classmethod
    def _positive_write_timeout(cls, seconds: float) -> float:
        return max(MIN_WRITE_TIMEOUT, seconds)

    @field_validator("log_origin")
    @classmethod
    def _origin_is_a_key_name(cls, origin: str | None) -> str | None:
        if origin is not None:
            try:
                check_key_name(origin)
            except InvalidInput as e:
                raise ValueError(str(e)) from None
        return origin

    @field_validator("key_rotation_overlap")
    @classmethod
    def _overlap_is_a_duration(cls, text: str) -> str:
        try:
            parse_duration(text)
        except InvalidInput as e:
            raise ValueError(str(e)) from None
        return text

    @field_validator("read_fallback")
    @classmethod
    def _fallback_is_known(cls, text: str) -> str:
        if text not in READ_FALLBACKS:
            raise ValueError(f"{text!r:.40} is not a fallback: write one of {', '.join(READ_FALLBACKS)}")
        return text

    @field_validator("read_database_url")
    @classmethod
    def _standbys_are_postgres(cls, text: str | None) -> str | None:
        for url in split_urls(text):
            if urlsplit(url).scheme not in POSTGRES_SCHEMES:
                raise ValueError(f"{url!r:.80} is not a PostgreSQL URL: standbys are postgresql://user@host:port/db")
        return text

    def read_database_urls(self) -> list[str]:
        """LEDGER_READ_DATABASE_URL, one URL per standby."""
        return split_urls(self.read_database_url)

    @field_validator("witnesses")
    @classmethod
    def _witness_entries(cls, text: str | None) -> str | None:
        try:
            parse_witnesses(text)
        except InvalidInput as e:
            raise ValueError(str(e)) from None
        return text

    def witness_endpoints(self) -> list[WitnessEndpoint]:
        """LEDGER_WITNESSES, parsed."""
        return parse_witnesses(self.witnesses)


def split_urls(text: str | None) -> list[str]:
    return [url.strip() for url in (text or "").split(",") if url.strip()]


_DURATION_PART = re.compile(r"([0-9]{1,9})([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, field: str = "duration") -> timedelta:
    """A duration written `<n><unit>`, in one or more parts (`90s`, `36h`, `1d12h`, `2w`), or `0`."""
    text = text.strip()
    if text == "0":
        return timedelta(0)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + unit for n, unit in parts) != text:
        raise InvalidInput(
            f"{text!r:.40} is not a duration: write <n> followed by s, m, h, d or w, in one or more parts "
            "(e.g. 90s, 36h, 1d12h, 2w), or 0", field,
        )
    return timedelta(seconds=sum(int(n) * _DURATION_UNITS[unit] for n, unit in parts))


# The defaults alone, no environment read: for the knobs that tests and callers may also set in code.
DEFAULTS = Settings.model_construct()


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def read_settings() -> Settings:
    """The settings the environment holds now; a bad value raises InvalidInput saying what to write."""
    try:
        return Settings()
    except ValidationError as e:
        raise InvalidInput("; ".join(_problem(error) for error in e.errors())) from None


@functools.cache
def get_settings() -> Settings:
    """This process's settings: read from the environment on first use, then kept.

    `get_settings.cache_clear()` makes the next call read the environment again.
    """
    return read_settings()


def _problem(error: ErrorDetails) -> str:
    field = str(error["loc"][0]) if error["loc"] else ""
    if field not in Settings.model_fields:
        return str(error["msg"])
    name = env_name(field)
    context = error.get("ctx") or {}
    kind = error["type"]
    if kind in ("int_parsing", "int_from_float", "int_type"):
        wanted = "a whole number"
    elif kind in ("float_parsing", "float_type"):
        wanted = "a number"
    elif kind in ("bool_parsing", "bool_type"):
        wanted = "1 or 0 (true/false, yes/no and on/off work too)"
    elif kind == "value_error":  # a validator's own message says what is wrong
        return f"{name} is refused: {context.get('error')}"
    elif kind == "greater_than_equal":
        wanted = f"at least {context['ge']}"
    else:
        wanted = f"valid ({error['msg']})"
    example = _env_text(Settings.model_fields[field].default)
    return f"{name} must be {wanted}, e.g. {name}={example}, not {error['input']!r}"


def _env_text(value: object) -> str:
    """A value as it is written in the environment."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_TYPE_NAMES: dict[object, str] = {
    str: "text", int: "whole number", float: "number", bool: "flag (1 or 0)", Path: "file path",
    SecretStr: "text (secret)",
}


def _type_name(field: FieldInfo) -> str:
    annotation = field.annotation
    if isinstance(annotation, UnionType):  # `X | None`: unset is the default
        annotation = next(arg for arg in get_args(annotation) if arg is not NoneType)
    bounds = [f"at least {_env_text(limit.ge)}" for limit in field.metadata if isinstance(limit, Ge)]
    return ", ".join([_TYPE_NAMES[annotation], *bounds])


def configuration_markdown() -> str:
    """docs/configuration.md: a table of every setting, from the model above."""
    rows = [
        "# Configuration",
        "",
        "<!-- Generated from store/settings.py by `python -m store.settings > docs/configuration.md`: "
        "edit the settings there, then run that command. -->",
        "",
        "Every process reads these environment variables once, as it starts: each `claims` command,",
        "`claims serve` and each of its worker processes. A value that cannot be used stops the",
        "command with exit status 2 and a message saying what to write instead. An empty value",
        "counts as unset.",
        "",
        "| Variable | Type | Default | Description |",
        "|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        default = "unset" if field.default is None else f"`{_env_text(field.default)}`"
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{env_name(name)}` | {_type_name(field)} | {default} | {description} |")
    return "\n".join(rows) + "\n"


@dataclass(frozen=True)
class Database:
    """A parsed LEDGER_DATABASE_URL, and the settings the process opens it with."""

    url: str
    backend: str  # "sqlite" or "postgres"
    settings: Settings  # timeouts and pool sizes, and the settings of what is built on it
    path: str = ""  # sqlite file
    host: str = ""
    port: int = 5432
    user: str = ""
    password: str = ""
    dbname: str = ""
    schema: str = "public"

    @classmethod
    def from_url(cls, url: str | None = None, settings: Settings | None = None) -> Database:
        """The database at `url` (default: the settings' LEDGER_DATABASE_URL), opened with
        `settings` (default: this process's)."""
        settings = settings or get_settings()
        url = url or settings.database_url
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
            return cls(url=url, backend="sqlite", settings=settings, path=path)
        if parts.scheme in POSTGRES_SCHEMES:
            query = parse_qs(parts.query)
            dbname = unquote(parts.path.lstrip("/"))
            if not dbname:
                raise InvalidInput(f"{url!r}: name the database, e.g. postgresql://user@host:5432/ledger")
            return cls(
                url=url, backend="postgres", settings=settings, host=parts.hostname or "127.0.0.1",
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
                # The library's recorder, with a lookup of one event's position (store/recorder.py).
                "APPLICATION_RECORDER_TOPIC": "store.recorder:SQLiteRecorder",
                "SQLITE_DBNAME": self.path,
                "SQLITE_LOCK_TIMEOUT": str(self.settings.sqlite_lock_timeout),
            }
        self.ensure_schema()
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            # The library's recorder, each write's transaction in one round trip (store/recorder.py).
            "APPLICATION_RECORDER_TOPIC": "store.recorder:PipelinedRecorder",
            "POSTGRES_HOST": self.host,
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": self.user,
            "POSTGRES_PASSWORD": self.password,
            "POSTGRES_DBNAME": self.dbname,
            "POSTGRES_SCHEMA": self.schema,
            # Bounded waits everywhere: a stuck lock or a dead server becomes an error
            # the API can answer (503), never a hung request.
            "POSTGRES_LOCK_TIMEOUT": str(self.settings.pg_lock_timeout),
            # Also the pool's wait for a connection; the library tries 10 times, so this
            # bounds how long a write can hang on a dead server (about ten times this).
            "POSTGRES_CONNECT_TIMEOUT": str(self.settings.pg_connect_timeout),
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "10",
            # The pool keeps this many connections open and opens up to the overflow more
            # on demand: every process (API workers, projections, CLI) holds its own pool,
            # and PostgreSQL's connection slots are shared by all of them.
            "POSTGRES_POOL_SIZE": str(self.settings.pg_pool_size),
            "POSTGRES_MAX_OVERFLOW": str(self.settings.pg_max_overflow),
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
            "connect_timeout": self.settings.pg_connect_timeout,
        }

    def ensure_schema(self) -> None:
        if self.schema == "public":
            return
        import psycopg

        with psycopg.connect(**self.connect_kwargs(), autocommit=True) as conn:  # type: ignore[arg-type]
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')


@dataclass(frozen=True)
class WitnessEndpoint:
    """One entry of LEDGER_WITNESSES: a witness's verifier key and the URL prefix of its add-checkpoint."""

    verifier: Verifier
    url: str

    @property
    def name(self) -> str:
        return self.verifier.name


def parse_witnesses(text: str | None) -> list[WitnessEndpoint]:
    """`<verifier key> <url>` entries separated by commas or newlines; InvalidInput says what is wrong."""
    endpoints: list[WitnessEndpoint] = []
    for entry in (part.strip() for part in re.split(r"[,\n]", text or "")):
        if not entry:
            continue
        vkey, _, url = entry.partition(" ")
        url = url.strip()
        if not url or " " in url:
            raise InvalidInput(
                f"the witness entry {entry!r:.160} is not `<verifier key> <url>` "
                "(e.g. `claims-witness/1a2b3c4d+0123abcd+BA... http://witness.example:8300`)"
            )
        try:
            verifier = Verifier.parse(vkey)
        except InvalidInput as e:
            raise InvalidInput(f"the witness entry {entry!r:.160}: {e}") from None
        if verifier.alg != COSIGNATURE_V1:
            raise InvalidInput(
                f"the witness key {vkey!r:.120} is of algorithm 0x{verifier.alg:02x}; a witness cosigns with "
                "0x04 (cosignature/v1), as `claims witness key` prints"
            )
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidInput(f"the witness URL {url!r:.120} must be http:// or https:// with a host")
        if any(e.verifier == verifier for e in endpoints):
            raise InvalidInput(f"the witness {verifier.name!r:.80} is listed twice")
        endpoints.append(WitnessEndpoint(verifier, url.rstrip("/")))
    return endpoints


if __name__ == "__main__":
    print(configuration_markdown(), end="")
