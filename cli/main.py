"""The `claims` command line: one entry point, commands grouped by what they are for.

Exit status: 0 on success, 1 when a check finds a problem, 2 on bad usage.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

import typer

from domain.errors import InvalidInput, StoreUnavailable
from store.settings import get_settings

app = typer.Typer(
    name="claims",
    help="The claims ledger: record who asserted, denied and retracted what; serve and audit it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@dataclass(frozen=True)
class Remote:
    """The global `--url` and `--token`: the ledger the remote commands talk to (cli/remote.py)."""

    url: str | None = None
    token: str | None = None


@app.callback()
def read_settings(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(
        help="A remote ledger's base URL, for the commands that talk to one over HTTP (show, list, history, "
        "party, assert, deny, retract, void, review, tail, watch, audit). Default: LEDGER_URL.", show_default=False,
    )] = None,
    token: Annotated[str | None, typer.Option(
        help="The bearer token sent to the remote ledger. Default: LEDGER_TOKEN.", show_default=False,
    )] = None,
) -> None:
    # Each command reads the environment as it starts, and a bad LEDGER_* value stops it before
    # it does anything. Afresh: tests run many commands in one process (CliRunner).
    get_settings.cache_clear()
    with exit_on_errors():
        get_settings()
    ctx.obj = Remote(url, token)


@contextmanager
def exit_on_errors(unavailable: str = "") -> Iterator[None]:
    """The command line's one mapping of errors to exit status: bad input (a setting, an
    argument) exits 2, a store that cannot be reached exits 1 (`unavailable` prefixes its
    message); each says why on stderr, without a traceback."""
    try:
        yield
    except InvalidInput as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    except StoreUnavailable as e:
        typer.echo(f"error: {unavailable}{e}", err=True)
        raise typer.Exit(1) from None


def main() -> None:
    # Each module adds its commands to `app` when imported.
    from cli import audit, fixtures, projections, recover, remote, serve, tokens, witness  # noqa: F401

    app()
