"""`claims recover --acknowledge-rollback`: resume signing after a restore that lost events."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.main import app, exit_on_errors
from service.runtime import Runtime


@app.command()
def recover(
    acknowledge_rollback: Annotated[bool, typer.Option(
        "--acknowledge-rollback",
        help="Sign and publish a statement of what the restore lost, and sign checkpoints again from the "
        "tree the database holds now.",
    )] = False,
) -> None:
    """After a restore of the database: say whether the ledger can sign its checkpoints, and with
    --acknowledge-rollback, resume, publishing a signed statement of the events lost (served at
    /v1/audit/rollbacks)."""
    with exit_on_errors("cannot open the ledger: "):
        runtime = Runtime.open(pool_size=1)
    try:
        guard = runtime.guard
        assert guard is not None
        size, root = runtime.tree_head()
        problem = guard.check(size, root)
        if problem is None:
            typer.echo(f"nothing to recover: the tree of {size} events extends every tree the ledger signed")
            raise typer.Exit(0)
        if not acknowledge_rollback:
            typer.echo(f"error: {problem}", err=True)
            typer.echo("to resume from the tree the database holds now, publishing what was lost, run: "
                       "claims recover --acknowledge-rollback", err=True)
            raise typer.Exit(1)
        statement = guard.acknowledge(size, root)
        assert statement is not None
        lost, resumed = statement["lost"], statement["resumed"]
        typer.echo(f"resumed from the tree of {resumed['size']} events; the ledger had signed a tree of "
                   f"{lost['size']}: {max(0, lost['size'] - resumed['size'])} or more events were lost or "
                   "replaced. The signed statement (also at /v1/audit/rollbacks):")
        typer.echo(statement["note"], nl=False)
    finally:
        runtime.close()
