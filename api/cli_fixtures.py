"""`claims` commands: fixtures."""

from __future__ import annotations

from api.cli import app  # noqa: F401
