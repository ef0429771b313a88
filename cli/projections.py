"""`claims` commands: rebuild the projections."""

from __future__ import annotations

import time

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cli.main import app
from service.runtime import Runtime

err = Console(stderr=True)


@app.command()
def rebuild() -> None:
    """Rebuild every projection from the event log, beside the live ones, then swap them in."""
    runtime = Runtime.open()
    started = time.perf_counter()
    try:
        with Progress(
            TextColumn("rebuilding"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} events/s"), TimeRemainingColumn(),
            console=err, transient=False,
        ) as progress:
            task = progress.add_task("rebuild", total=runtime.ledger.max_position() or None, rate="-")

            def report(done: int, total: int) -> None:
                rate = done / max(time.perf_counter() - started, 1e-9)
                progress.update(task, completed=done, total=max(total, done), rate=f"{rate:,.0f}")

            applied = runtime.engine.rebuild(progress=report)
    finally:
        runtime.close()
    elapsed = time.perf_counter() - started
    err.print(f"rebuilt the projections from {applied:,} events in {elapsed:.1f} s "
              f"({applied / max(elapsed, 1e-9):,.0f} events/s)")
    raise typer.Exit(0)
