"""`claims verify`: tamper evidence from the command line.

`verify` checks this ledger's own store. It prints what it checked and every problem on
stdout (progress goes to stderr) and exits 1 when something does not hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from api.cli import app
from domain.errors import InvalidInput, StoreUnavailable

ProgressCallback = Callable[[str, int, int], None]


@contextmanager
def progress_bars() -> Iterator[ProgressCallback]:
    """A bar per stage on stderr, fed by (stage, done, total) callbacks."""
    bars = Progress(
        TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total or None)
        bars.update(tasks[stage], completed=done, total=total or None)

    with bars:
        yield update


@app.command()
def verify(
    projections: Annotated[bool, typer.Option(
        help="Also compare every projection with a fresh rebuild (slower than the hash checks).",
    )] = True,
) -> None:
    """Check the whole store on LEDGER_DATABASE_URL: hash chains, Merkle root, projections."""
    from projections.runtime import Runtime
    from projections.verify import verify_store

    try:
        runtime = Runtime.open(pool_size=2)
    except InvalidInput as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    except StoreUnavailable as e:
        typer.echo(f"error: cannot open the ledger: {e}", err=True)
        raise typer.Exit(1) from None
    try:
        with progress_bars() as progress:
            report = verify_store(runtime, progress, projections=projections)
    except StoreUnavailable as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    finally:
        runtime.close()
    for line in report.lines():
        typer.echo(line)
    raise typer.Exit(0 if report.ok else 1)
