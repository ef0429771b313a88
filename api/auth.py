"""The bearer token of a request's Authorization header.

Whether that token may do what the request asks is decided by `store.tokens.authorize`,
for every route and every way a write is made; its refusals are answered 401 and 403 by
api/problems.py.
"""

from __future__ import annotations

from collections.abc import Mapping

from store.tokens import Credential, InvalidToken, Role, authorize, token_hash

# The web pages' sign-in (web/routes.py) keeps a read token in this cookie: HttpOnly (the
# pages' scripts cannot read it) and SameSite=Strict (no other site's request carries it).
TOKEN_COOKIE = "ledger_token"  # noqa: S105 (the cookie's name, not a secret)
READ_METHODS = frozenset({"GET", "HEAD"})


def digest_of(authorization: str | None) -> str | None:
    """The hash of the token an Authorization header sends; None without the header.

    Raises InvalidToken (401) when the header is not 'Bearer <token>'.
    """
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise InvalidToken("send the token as 'Authorization: Bearer <token>'")
    return token_hash(token)


def cookie_digest(method: str, cookies: Mapping[str, str]) -> str | None:
    """The hash of the token the sign-in cookie carries, for a read (GET, HEAD) only: a write
    never takes it, so nothing a page does, nor a forged request, can write with it."""
    token = cookies.get(TOKEN_COOKIE, "").strip()
    if method not in READ_METHODS or not token:
        return None
    return token_hash(token)


def credential_of(authorization: str | None, needed: Role) -> Credential:
    """A write's credential, for the group writer to `authorize` with its batch; a write
    without a token is refused here, with nothing to look up."""
    digest = digest_of(authorization)
    if digest is None:
        authorize(None, None, needed)  # raises MissingToken
    assert digest is not None
    return Credential(digest, needed)
