"""A Python client for a claims ledger served over HTTP (sync and async, on httpx)."""
