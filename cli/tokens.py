"""`claims token create|list|revoke`: bearer tokens for the HTTP API.

`create` prints the token alone on stdout (so `TOKEN=$(claims token create --role recorder)`
works); everything else goes to stderr. The token is shown once and stored only as a hash.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from cli.main import app, exit_on_errors
from store.db import ReadStore
from store.settings import Database
from store.tokens import Role, TokenStore

tokens_app = typer.Typer(help="Bearer tokens for the HTTP API.", no_args_is_help=True)
app.add_typer(tokens_app, name="token")


@contextmanager
def token_store() -> Iterator[TokenStore]:
    with exit_on_errors():
        store = ReadStore(Database.from_url(), pool_size=1)
    try:
        with exit_on_errors():
            tokens = TokenStore(store)
            tokens.ensure_table()
            yield tokens
    finally:
        store.close()


@tokens_app.command("create")
def create(
    role: Annotated[Role, typer.Option(help="reader < recorder < editor < auditor < admin.")],
    label: Annotated[str | None, typer.Option(help="Who or what the token is for.")] = None,
) -> None:
    """Make a token; it is printed once, on stdout, and stored only as its hash."""
    with token_store() as tokens, exit_on_errors():
        record, token = tokens.create(role, label)
    typer.echo(
        f"created token {record.token_id} (role {record.role.value}"
        f"{', label ' + repr(label) if label else ''}); it is shown only now — keep it secret. "
        f"Send it as 'Authorization: Bearer <token>'; revoke it with `claims token revoke {record.token_id}`.",
        err=True,
    )
    typer.echo(token)


@tokens_app.command("list")
def list_tokens() -> None:
    """Every token's id, role, label and state (never the tokens themselves)."""
    with token_store() as tokens:
        records = tokens.list()
    if not records:
        typer.echo("no tokens yet; make one with `claims token create --role recorder`", err=True)
        return
    typer.echo(f"{'ID':<17} {'ROLE':<9} {'CREATED':<28} {'REVOKED':<28} LABEL")
    for r in records:
        typer.echo(f"{r.token_id:<17} {r.role.value:<9} {r.created_at:<28} {r.revoked_at or '-':<28} {r.label or ''}")


@tokens_app.command("revoke")
def revoke(token_id: Annotated[str, typer.Argument(help="The token's id, as `claims token list` shows it.")]) -> None:
    """Revoke a token: it stops working at once."""
    with token_store() as tokens:
        record = tokens.revoke(token_id)
    if record is None:
        typer.echo(f"error: no token has the id {token_id!r}; see `claims token list`", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked token {record.token_id} (role {record.role.value}) at {record.revoked_at}", err=True)
