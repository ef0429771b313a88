"""The `claims` command line: one entry point, commands grouped by what they are for.

Exit status: 0 on success, 1 when a check finds a problem, 2 on bad usage.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="claims",
    help="The claims ledger: record who asserted, denied and retracted what; serve and audit it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def main() -> None:
    # Each module adds its commands to `app` when imported.
    from cli import audit, fixtures, projections, serve, tokens  # noqa: F401

    app()
