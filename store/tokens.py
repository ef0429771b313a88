"""Bearer tokens and roles: the `api_tokens` table, and the one rule of who may do what.

Tokens are shown once and stored only as SHA-256 hashes. A token is looked up by its hash
on every use (no cache), so a revoked token stops working at once. Every decision on a
token ends in `authorize`: a read's, a write's, one request's alone or a whole batch of
the group writer's (`TokenStore.check`, one statement for the batch, run just before the
batch is applied: a token revoked before then writes nothing). Tokens never reach a log
line.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import anyio.to_thread

from domain.errors import InvalidInput, LedgerError
from domain.values import format_instant
from store.db import ReadStore, in_list

TABLE = "api_tokens"
TOKEN_PREFIX = "clm_"  # noqa: S105 - a marker that makes leaked tokens easy to find, not a secret
MAX_LABEL = 200

Row = tuple[Any, ...]


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


@dataclass(frozen=True, slots=True)
class Credential:
    """What a write shows the group writer: its bearer token's hash and the role it needs."""

    digest: str
    needed: Role


class AccessRefused(LedgerError):
    """A caller may not do what it asks (the API answers 401 or 403)."""


class MissingToken(AccessRefused):
    code = "unauthorized"
    title = "Unauthorized"


class InvalidToken(AccessRefused):
    """A token was sent, but it is malformed, unknown or revoked."""

    code = "unauthorized"
    title = "Unauthorized"


class RoleTooLow(AccessRefused):
    code = "forbidden"
    title = "Forbidden"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def authorize(row: Row | None, digest: str | None, needed: Role | None) -> Principal | None:
    """The rule for every request: whether the token with hash `digest` (None: no token was
    sent), whose row `AUTHENTICATE_SQL` found (None: none), may do what needs role `needed`
    (None: anything open to all, which a bad token still may not do).

    Returns the token's principal (None: no token, and none needed); raises MissingToken or
    InvalidToken (401) and RoleTooLow (403), in that order.
    """
    if digest is None:
        if needed is None:
            return None
        raise MissingToken(
            f"this operation needs a bearer token with role {needed.value} or above; "
            f"make one with `claims token create --role {needed.value}`"
        )
    if row is None or not hmac.compare_digest(str(row[1]), digest) or row[4] is not None:
        raise InvalidToken("the bearer token is unknown or revoked; make one with `claims token create --role R`")
    principal = Principal(token_id=str(row[0]), role=Role(row[2]), label=row[3])
    if needed is not None and not principal.role.allows(needed):
        raise RoleTooLow(
            f"this operation needs role {needed.value} or above; token {principal.token_id} "
            f"has role {principal.role.value}"
        )
    return principal


class KeyedLookups(Protocol):
    """One-statement lookups by key for the event loop (the API's `Lookups`)."""

    def keyed(self, one_sql: str, many_sql: str, key_column: int) -> Callable[[str], Awaitable[Row | None]]: ...


class TokenStore:
    """The `api_tokens` table in the ledger's database.

    With `lookups`, a request's token is looked up on the event loop in one statement.
    """

    def __init__(self, store: ReadStore, lookups: KeyedLookups | None = None) -> None:
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
        try:
            return authorize(self._row(digest), digest, None)
        except InvalidToken:
            return None

    async def authorize_async(self, digest: str, needed: Role | None) -> Principal | None:
        """`authorize` the token with hash `digest` on the event loop: looked up in one statement."""
        if self._lookup is None:
            row = await anyio.to_thread.run_sync(self._row, digest)
        else:
            row = await self._lookup(digest)
        return authorize(row, digest, needed)

    def check(self, credentials: Sequence[Credential]) -> Sequence[AccessRefused | None]:
        """Each credential's refusal by `authorize`, or None when it may write: the group
        writer's check of a batch, one statement for all."""
        where, params = in_list(self.store.backend, "token_hash", sorted({c.digest for c in credentials}))
        rows = self.store.query(f"{AUTHENTICATE_SELECT} WHERE {where}", params)
        found = {str(row[1]): row for row in rows}
        refusals: list[AccessRefused | None] = []
        for credential in credentials:
            try:
                authorize(found.get(credential.digest), credential.digest, credential.needed)
            except AccessRefused as e:
                refusals.append(e)
            else:
                refusals.append(None)
        return refusals

    def _row(self, digest: str) -> Row | None:
        with self.store.reading() as cur:
            row = cur.execute(AUTHENTICATE_SQL, (digest,)).fetchone()
        return None if row is None else tuple(row)


AUTHENTICATE_SELECT = f"SELECT id, token_hash, role, label, revoked_at FROM {TABLE}"
AUTHENTICATE_SQL = f"{AUTHENTICATE_SELECT} WHERE token_hash = ?"
AUTHENTICATE_ANY_SQL = f"{AUTHENTICATE_SELECT} WHERE token_hash = ANY(?)"


def _role(value: Role | str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidInput(
            f"role must be one of {', '.join(r.value for r in Role)} (got {value!r:.40})", "role"
        ) from None
