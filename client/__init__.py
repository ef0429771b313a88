"""A Python client of the claims ledger's HTTP API, for apps and auditors (docs/client.md).

`LedgerClient` (sync) and `AsyncLedgerClient` (async) cover every endpoint, follow the
Server-Sent Event streams, retry writes safely with an Idempotency-Key and raise a typed
`LedgerError` for every problem document. The `claims` command line uses it against a
remote ledger (`claims --url URL ...`, `claims audit`).
"""

from client.aio import AsyncLedgerClient
from client.core import Backoff, Party, Rating, Source, StreamItem
from client.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    InvalidResponse,
    LedgerError,
    NotFound,
    PreconditionFailed,
    ServerError,
    Unauthorized,
    Unavailable,
    Unreachable,
)
from client.sync import LedgerClient

__all__ = [
    "AsyncLedgerClient", "Backoff", "Conflict", "Forbidden", "InvalidRequest", "InvalidResponse", "LedgerClient",
    "LedgerError", "NotFound", "Party", "PreconditionFailed", "Rating", "ServerError", "Source", "StreamItem",
    "Unauthorized", "Unavailable", "Unreachable",
]
