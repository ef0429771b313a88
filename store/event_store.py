"""The Ledger on a database: the library's settings for it, made from a parsed Database URL."""

from __future__ import annotations

from collections.abc import Mapping

from domain.errors import InvalidInput
from domain.ledger import Ledger
from store.settings import Database


def open_ledger(
    database: Database, *, claim_cache_size: int | None = None, env: Mapping[str, str] | None = None,
) -> Ledger:
    """The Ledger keeping its events in `database`, holding up to `claim_cache_size` claims in
    memory for its writes (default: the database's settings, LEDGER_CLAIM_CACHE_SIZE). `env`
    overrides library settings (a pool's size, say)."""
    size = database.settings.claim_cache_size if claim_cache_size is None else claim_cache_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidInput(f"the claim cache size must be a whole number of claims, at least 1 (got {size!r})")
    return Ledger({**database.library_env(), "AGGREGATE_CACHE_MAXSIZE": str(size), **(env or {})})
