"""`claims verify`, `claims audit` and `claims audit-key`: tamper evidence from the command line.

`verify` checks this ledger's own store; `audit` checks a remote ledger over HTTP against a
kept checkpoint. Both print what they checked and every problem on stdout (progress goes
to stderr) and exit 1 when something does not hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from audit.remote import audit_ledger
from audit.signing import SigningKeyError, key_path, load_or_create_key, public_key_hex
from cli.main import app, exit_on_errors
from store.settings import Database, get_settings

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
    from audit.verify import verify_store
    from service.runtime import Runtime

    with exit_on_errors(unavailable="cannot open the ledger: "):
        runtime = Runtime.open(pool_size=2)
    try:
        with exit_on_errors(), progress_bars() as progress:
            report = verify_store(runtime, progress, projections=projections)
    finally:
        runtime.close()
    for line in report.lines():
        typer.echo(line)
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def audit(
    url: Annotated[str, typer.Option(help="The ledger's base URL, e.g. https://ledger.example.org")],
    checkpoint: Annotated[Path, typer.Option(
        help="The kept checkpoint: checked against, and replaced by the new one when all holds.",
    )],
    public_key: Annotated[Path | None, typer.Option(
        help="The pinned public key (hex, or the JSON of /v1/audit/public-key). Default: the key saved "
        "in the checkpoint file; on the first audit, the server's (trust on first use).",
    )] = None,
    token: Annotated[str | None, typer.Option(
        help="A bearer token with role auditor. Default: LEDGER_TOKEN.", show_default=False,
    )] = None,
) -> None:
    """Verify a remote ledger against a kept checkpoint and the pinned key."""
    configured = get_settings().token
    if token is None and configured is not None:
        token = configured.get_secret_value()
    with exit_on_errors(), progress_bars() as progress:
        report = audit_ledger(url, checkpoint, public_key_file=public_key, token=token, progress=progress)
    for line in report.lines():
        typer.echo(line)
    raise typer.Exit(0 if report.ok else 1)


@app.command("audit-key")
def audit_key() -> None:
    """Print the ledger's Ed25519 public key (hex), for auditors to pin."""
    with exit_on_errors():
        path = key_path(Database.from_url())
    if not path.exists():
        typer.echo(f"no signing key yet: making one at {path}", err=True)
    try:
        key = load_or_create_key(path)
    except SigningKeyError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(public_key_hex(key))
