"""What every route shares: settings, the process's services, the caller, read-your-writes."""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any
from uuid import UUID

import anyio.from_thread
import anyio.to_thread
from eventsourcing.persistence import PersistenceError
from fastapi import Depends, Header, Path, Query, Request
from fastapi.security import HTTPBearer

from api.auth import cookie_digest, digest_of
from api.idempotency import check_key, derived_act_id, fingerprint, run_once
from api.lookups import Lookups
from api.metrics import ApiMetrics
from api.problems import Problem
from domain.commands import Command
from domain.errors import StoreUnavailable
from domain.ijson import MAX_SAFE_INTEGER
from domain.ledger import Outcome
from service.forward import WriterHost, WriterLink
from service.runtime import Runtime
from service.witnessing import Witnessing
from service.writer import GroupWriter
from store.idempotency import IdempotencyStore
from store.settings import DEFAULTS, Settings
from store.tokens import Credential, Principal, Role, TokenStore, authorize

Json = dict[str, Any]


@dataclass(frozen=True)
class ApiSettings:
    """The API's knobs: those an operator sets come from Settings (LEDGER_*), the rest are fixed."""

    read_tokens_required: bool = DEFAULTS.read_tokens_required
    threads: int = DEFAULTS.api_threads  # request threads; the read pool gets as many connections
    max_body_bytes: int = 64 * 1024
    min_position_wait: float = 2.0  # seconds a read waits for ?min_position
    write_timeout: float = DEFAULTS.write_timeout  # seconds a write waits to be taken by the writer
    max_batch: int = 500  # commands per group-commit transaction

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiSettings:
        return cls(read_tokens_required=settings.read_tokens_required, threads=settings.api_threads,
                   write_timeout=settings.write_timeout)


@dataclass
class Services:
    """Everything one API process holds open, built in the app's lifespan."""

    runtime: Runtime
    settings: ApiSettings
    writer: GroupWriter
    tokens: TokenStore
    idempotency: IdempotencyStore
    metrics: ApiMetrics
    runs_projections: bool
    lookups: Lookups
    engine_thread: threading.Thread | None = None
    host: WriterHost | None = None  # --workers: this worker's writer serves the others
    link: WriterLink | None = None  # --workers: this worker's writes go to the host's writer
    witnessing: Witnessing | None = None  # LEDGER_WITNESSES: checkpoints submitted, cosignatures kept
    # LEDGER_READ_DATABASE_URL: each standby's lookups, by the id of its ReadStore in the router.
    standby_lookups: dict[int, Lookups] = field(default_factory=dict)

    async def read_lookups(self) -> Lookups:
        """The lookups of the store a projection read goes to now: a standby's within the
        allowed lag, else the primary's (or ReplicaBehind, 503, when reads must not fall back)."""
        replicas = self.runtime.replicas
        if replicas is None:
            return self.lookups
        if replicas.measured:
            store = replicas.choose(wait=False)
        else:  # the first read after start-up waits for the first measure, in a worker thread
            store = await anyio.to_thread.run_sync(replicas.choose)
        return self.standby_lookups.get(id(store), self.lookups)

    async def write(self, command: Command, credential: Credential | None = None) -> Outcome:
        """The command's committed outcome (its error raised), waited for on the event loop;
        with a credential, the writer checks it first (401/403 raised, nothing written)."""
        if self.link is not None:
            return await self.link.execute_async(command, self.settings.write_timeout, credential)
        return await self.writer.execute_async(command, self.settings.write_timeout, credential)

    def write_in_thread(self, command: Command) -> Outcome:
        """`write` for a request's worker thread (one AnyIO started: Idempotency-Key writes)."""
        if self.link is not None:
            return anyio.from_thread.run(self.link.execute_async, command, self.settings.write_timeout)
        return self.writer.execute(command, self.settings.write_timeout)

    def log_head(self) -> int:
        """The newest position in the event log."""
        try:
            return self.runtime.ledger.max_position()
        except PersistenceError as e:
            raise StoreUnavailable(f"the event store is unreachable: {e}") from e

    def wait_for(self, position: int) -> None:
        """Return once projections reached `position`; 422 past the log's end, 503 when too slow."""
        read = self.runtime.read
        if read.position() >= position:
            return
        head = self.log_head()
        if position > head:
            raise Problem(
                422, f"min_position {position} is past the newest event in the ledger ({head}); "
                "pass the position a write answered with",
                code="position-beyond-log", title="Position beyond the log",
            )
        if not read.wait_for(position, self.settings.min_position_wait):
            raise Problem(
                503, f"projections have not reached position {position} within "
                f"{self.settings.min_position_wait:g} s (they are at {read.position()}); retry shortly",
                code="projections-behind", title="Projections behind", headers={"Retry-After": "1"},
            )

    def position_of(self, claim_id: UUID, version: int) -> int:
        """The log position of a claim's event, read from the event store: what a retried
        write answers with, whether the projections have reached it or not."""
        position = self.runtime.ledger.position_of(claim_id, version)
        if position is None:  # the outcome named an event the ledger has just read or written
            raise RuntimeError(f"the event store has no event {version} of claim {claim_id}")
        return position


# Dependencies are `async def` unless they block: FastAPI runs a plain `def` dependency in
# the thread pool, and a hop there and back costs more than most of them do. Each one is
# also solved anew on every request (a cached one too), so the hot routes take their
# services from the request (`services_of`) rather than from a dependency of their own.
def services_of(request: Request) -> Services:
    found = getattr(request.app.state, "services", None)
    if not isinstance(found, Services):
        raise RuntimeError("the app's lifespan has not run: serve it with uvicorn or `with TestClient(app)`")
    return found


async def services(request: Request) -> Services:
    return services_of(request)


ServicesDep = Annotated[Services, Depends(services)]

bearer = HTTPBearer(
    auto_error=False, scheme_name="bearer",
    description="A token from `claims token create --role R`.",
)
Bearer = Annotated[Any, Depends(bearer)]  # documents the scheme; the token is read by `principal_of`


async def principal_of(request: Request, needed: Role | None) -> Principal | None:
    """The caller, if it may do what needs role `needed` (None: what is open to all);
    401 or 403 otherwise (`store.tokens.authorize`).

    The token is looked up (one indexed query, on the event loop) only when one is sent: in
    the Authorization header, or for a read, in the web pages' sign-in cookie (api/auth.py).
    """
    digest = digest_of(request.headers.get("authorization"))
    if digest is None:  # a read from a signed-in web page: the token is in its cookie
        digest = cookie_digest(request.method, request.cookies)
    if digest is None:
        return authorize(None, None, needed)
    return await services_of(request).tokens.authorize_async(digest, needed)


@functools.cache
def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """The dependency that lets only callers with `role` or above through (one per role,
    which a fast handler names as the dependency it does the work of)."""

    async def dependency(request: Request, _: Bearer = None) -> Principal:
        principal = await principal_of(request, role)
        assert principal is not None  # a role is needed, so a token was
        return principal

    dependency.__name__ = f"require_{role.value}"
    return dependency


async def read_access(request: Request, _: Bearer = None) -> Principal | None:
    """Reads are open unless LEDGER_READ_TOKENS_REQUIRED=1, which asks for role reader."""
    return await principal_of(request, Role.READER if services_of(request).settings.read_tokens_required else None)


async def consistent_read(
    request: Request,
    min_position: Annotated[int | None, Query(
        ge=0, le=MAX_SAFE_INTEGER,
        description="Wait (at most 2 s) until projections have reached this log position, "
        "e.g. the `position` a write answered with. 503 when they do not get there in time.",
    )] = None,
) -> None:
    if min_position:
        await anyio.to_thread.run_sync(services_of(request).wait_for, min_position)


ClaimRef = Annotated[str, Path(
    min_length=1, max_length=200, description="The claim's UUID or its key.",
    examples=["putin-phoned-elton-john"],
)]
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", max_length=255,
    description="Makes a retry safe: the same key answers with the first response and writes nothing.",
)]
IfMatch = Annotated[str | None, Header(
    alias="If-Match", max_length=64,
    description='The claim version the write expects, as an entity tag: "3". 412 when the claim moved on.',
)]

ETAG = re.compile(r'"(\d{1,18})"')


def expected_version(if_match: str | None) -> int | None:
    """The version named by an If-Match header (`*` or absent: any)."""
    if if_match is None or if_match.strip() == "*":
        return None
    found = ETAG.fullmatch(if_match.strip())
    if found is None or not 1 <= int(found.group(1)) <= MAX_SAFE_INTEGER:
        raise Problem(
            422, 'If-Match must be one strong entity tag as the claim\'s ETag gives it, e.g. "3": a version '
            f"from 1 to {MAX_SAFE_INTEGER}",
            code="invalid-if-match", title="Invalid If-Match",
        )
    return int(found.group(1))


def idempotent_write(
    request: Request, svc: Services, principal: Principal, idempotency_key: str | None,
    fields: Json, if_match: str | None, write: Callable[[str | None], tuple[int, Json]],
) -> tuple[int, Json, bool]:
    """(status, body, replayed) of a write, made at most once per Idempotency-Key.

    `write` gets the act_id to use when the body names none (derived from the key).
    """
    if idempotency_key is None:
        status, body = write(None)
        return status, body, False
    key = check_key(idempotency_key)
    scope = principal.token_id
    kept, replayed = run_once(
        svc.idempotency, scope, key, fingerprint(request.method, request.url.path, fields, if_match),
        lambda: write(derived_act_id(scope, key)),
    )
    return kept.status, kept.body, replayed
