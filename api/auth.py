"""Bearer tokens and roles: tokens are shown once and stored only as SHA-256 hashes.

A request's token is looked up by its hash on every request (no cache), so a revoked
token stops working at once. A write's token is looked up by the group writer, for every
write of a batch in one statement, just before the batch is applied (`Credential`,
`TokenStore.check`): a token revoked before then writes nothing. Tokens never reach a log
line.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import anyio.to_thread

from api.lookups import Lookups
from api.problems import Problem
from domain.errors import InvalidInput
from domain.values import format_instant
from store.db import ReadStore, in_list

TABLE = "api_tokens"
TOKEN_PREFIX = "clm_"  # noqa: S105 - a marker that makes leaked tokens easy to find, not a secret
MAX_LABEL = 200


class Role(StrEnum):
    """Ordered: each role may do everything the roles before it may."""

    READER = "reader"
    RECORDER = "recorder"
    EDITOR = "editor"
    AUDITOR = "auditor"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_RANKS = {role: rank for rank, role in enumerate(Role)}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id (never the token), its role and label."""

    token_id: str
    role: Role
    label: str | None = None


@dataclass(frozen=True)
class TokenRecord:
    token_id: str
    role: Role
    label: str | None
    created_at: str
    revoked_at: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class Credential:
    """What a write shows: its bearer token's hash and the role the write needs."""

    digest: str
    needed: Role


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """The `api_tokens` table in the ledger's database.

    With `lookups`, a request's token is looked up in one statement (see api/lookups.py).
    """

    def __init__(self, store: ReadStore, lookups: Lookups | None = None) -> None:
        self.store = store
        self._lookup = None if lookups is None else lookups.keyed(
            AUTHENTICATE_SQL, AUTHENTICATE_ANY_SQL, key_column=1
        )

    def ensure_table(self) -> None:
        with self.store.transaction() as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                " id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, role TEXT NOT NULL,"
                " label TEXT, created_at TEXT NOT NULL, revoked_at TEXT)"
            )

    def create(self, role: Role | str, label: str | None = None) -> tuple[TokenRecord, str]:
        """A new token: its record, and the token itself (shown once, never stored)."""
        role = _role(role)
        if label is not None and (len(label) > MAX_LABEL or "\x00" in label):
            raise InvalidInput(f"label must be at most {MAX_LABEL} characters of text", "label")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = TokenRecord(
            token_id="tok-" + secrets.token_hex(6), role=role, label=label,
            created_at=format_instant(datetime.now(UTC)), revoked_at=None,
        )
        with self.store.transaction() as cur:
            cur.execute(
                f"INSERT INTO {TABLE} (id, token_hash, role, label, created_at) VALUES (?, ?, ?, ?, ?)",
                (record.token_id, token_hash(token), record.role.value, label, record.created_at),
            )
        return record, token

    def list(self) -> list[TokenRecord]:
        with self.store.reading() as cur:
            rows = cur.execute(
                f"SELECT id, role, label, created_at, revoked_at FROM {TABLE} ORDER BY created_at, id"
            ).fetchall()
        return [TokenRecord(r[0], Role(r[1]), r[2], r[3], r[4]) for r in rows]

    def revoke(self, token_id: str) -> TokenRecord | None:
        """Revoke a token (again is fine); None when no token has that id."""
        with self.store.transaction() as cur:
            cur.execute(
                f"UPDATE {TABLE} SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (format_instant(datetime.now(UTC)), token_id),
            )
            row = cur.execute(
                f"SELECT id, role, label, created_at, revoked_at FROM {TABLE} WHERE id = ?", (token_id,)
            ).fetchone()
        return None if row is None else TokenRecord(row[0], Role(row[1]), row[2], row[3], row[4])

    def authenticate(self, token: str) -> Principal | None:
        """The principal of an active token, else None."""
        digest = token_hash(token)
        with self.store.reading() as cur:
            row = cur.execute(AUTHENTICATE_SQL, (digest,)).fetchone()
        return _principal(row, digest)

    def check(self, credentials: Sequence[Credential]) -> Sequence[Problem | None]:
        """Each credential's refusal (401 unknown or revoked, 403 role too low), or None
        when it may write: the group writer's check of a batch, one statement for all."""
        where, params = in_list(self.store.backend, "token_hash", sorted({c.digest for c in credentials}))
        rows = self.store.query(f"{AUTHENTICATE_SELECT} WHERE {where}", params)
        found = {str(row[1]): row for row in rows}
        refusals: list[Problem | None] = []
        for credential in credentials:
            try:
                require_role(_known(_principal(found.get(credential.digest), credential.digest)), credential.needed)
            except Problem as e:
                refusals.append(e)
            else:
                refusals.append(None)
        return refusals

    async def authenticate_async(self, token: str) -> Principal | None:
        """`authenticate` for the event loop: one statement through `lookups`."""
        if self._lookup is None:
            return await anyio.to_thread.run_sync(self.authenticate, token)
        digest = token_hash(token)
        return _principal(await self._lookup(digest), digest)


AUTHENTICATE_SELECT = f"SELECT id, token_hash, role, label, revoked_at FROM {TABLE}"
AUTHENTICATE_SQL = f"{AUTHENTICATE_SELECT} WHERE token_hash = ?"
AUTHENTICATE_ANY_SQL = f"{AUTHENTICATE_SELECT} WHERE token_hash = ANY(?)"


def _principal(row: tuple[Any, ...] | None, digest: str) -> Principal | None:
    if row is None or not hmac.compare_digest(str(row[1]), digest) or row[4] is not None:
        return None
    return Principal(token_id=str(row[0]), role=Role(row[2]), label=row[3])


def _role(value: Role | str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidInput(
            f"role must be one of {', '.join(r.value for r in Role)} (got {value!r:.40})", "role"
        ) from None


def unauthorized(detail: str, *, token_given: bool) -> Problem:
    challenge = 'Bearer realm="claims-ledger"'
    if token_given:
        challenge += ', error="invalid_token"'
    return Problem(401, detail, code="unauthorized", title="Unauthorized",
                   headers={"WWW-Authenticate": challenge})


async def principal_from_header(tokens: TokenStore, authorization: str | None) -> Principal | None:
    """The caller named by an Authorization header; None without one; 401 for a bad one."""
    if authorization is None:
        return None
    return _known(await tokens.authenticate_async(bearer_token(authorization)))


def credential_from_header(authorization: str | None, needed: Role) -> Credential:
    """A write's credential, for the group writer to check; 401 without a bearer token."""
    if authorization is None:
        require_role(None, needed)  # raises: no token
    assert authorization is not None
    return Credential(token_hash(bearer_token(authorization)), needed)


def bearer_token(authorization: str) -> str:
    """The token of an Authorization header; 401 when it is not 'Bearer <token>'."""
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("send the token as 'Authorization: Bearer <token>'", token_given=True)
    return token


def _known(principal: Principal | None) -> Principal:
    if principal is None:
        raise unauthorized(
            "the bearer token is unknown or revoked; make one with `claims token create --role R`",
            token_given=True,
        )
    return principal


def require_role(principal: Principal | None, needed: Role) -> Principal:
    """401 without a token, 403 when its role is below `needed`."""
    if principal is None:
        raise unauthorized(
            f"this operation needs a bearer token with role {needed.value} or above; "
            f"make one with `claims token create --role {needed.value}`",
            token_given=False,
        )
    if not principal.role.allows(needed):
        raise Problem(
            403, f"this operation needs role {needed.value} or above; token {principal.token_id} "
            f"has role {principal.role.value}",
            code="forbidden", title="Forbidden",
        )
    return principal
