"""The Ledger on a database: the library's settings for it, made from a parsed Database URL."""

from __future__ import annotations

from collections.abc import Mapping

from domain.errors import InvalidInput
from domain.ledger import CLAIM_CACHE_ENV, Ledger
from store.settings import Database


def ledger_env(
    database: Database, *, claim_cache_size: int | None = None, env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The library settings a Ledger on `database` runs with: the database's own, the claim
    cache (up to `claim_cache_size` claims, default the database's settings,
    LEDGER_CLAIM_CACHE_SIZE, fast-forwarded and deep-copied), then `env` over them (a pool's
    size, say). The benchmark's raw-library baseline runs with the same."""
    size = database.settings.claim_cache_size if claim_cache_size is None else claim_cache_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidInput(f"the claim cache size must be a whole number of claims, at least 1 (got {size!r})")
    return {**CLAIM_CACHE_ENV, **database.library_env(), "AGGREGATE_CACHE_MAXSIZE": str(size), **(env or {})}


def open_ledger(
    database: Database, *, claim_cache_size: int | None = None, env: Mapping[str, str] | None = None,
) -> Ledger:
    """The Ledger keeping its events in `database`, with the settings of `ledger_env`."""
    return Ledger(ledger_env(database, claim_cache_size=claim_cache_size, env=env))
