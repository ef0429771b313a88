"""`claims verify`, `claims audit` and `claims audit-key`: tamper evidence from the command line.

`verify` checks this ledger's own store; `audit` checks a remote ledger over HTTP against a
kept checkpoint. Both print what they checked and every problem on stdout (progress goes
to stderr) and exit 1 when something does not hold.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from starlette.responses import JSONResponse

from api.schemas import ClaimHistory, ClaimView
from audit.mirror import DEFAULT_SAMPLE, Mirror, audit_mirror
from audit.mirror import watch as watch_mirror
from audit.remote import WitnessPolicy, audit_ledger
from audit.signing import Keyring, SigningKeyError, key_document, key_path, load_keyring, rotate_key
from cli.main import app, exit_on_errors
from cli.remote import target
from domain.errors import InvalidInput
from domain.values import parse_as_of
from store.settings import Database, get_settings, parse_duration

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


audit_app = typer.Typer(
    help="Verify a remote ledger against a kept checkpoint (`claims audit --checkpoint FILE`), or keep a verified "
    "mirror of it (`--mirror DIR`) and answer from that mirror alone (`claims audit show|history KEY --mirror DIR`).",
    invoke_without_command=True,
)
app.add_typer(audit_app, name="audit")

MirrorOption = Annotated[Path, typer.Option(help="The mirror's directory, as `claims audit --mirror DIR` made it.")]


@audit_app.callback()
def audit(
    ctx: typer.Context,
    checkpoint: Annotated[Path | None, typer.Option(
        help="The kept checkpoint: checked against, and replaced by the new one when all holds. Needed unless "
        "--mirror is given (the mirror keeps its own; with both, both are kept).", show_default=False,
    )] = None,
    public_key: Annotated[Path | None, typer.Option(
        help="The pinned key: its verifier key (as `claims audit-key` prints it), the hex key, or the JSON of "
        "/v1/audit/public-key. Default: the key saved in the checkpoint file; on the first audit, the "
        "server's (trust on first use).",
    )] = None,
    token: Annotated[str | None, typer.Option(
        help="A bearer token with role auditor. Default: `claims --token`, then LEDGER_TOKEN.", show_default=False,
    )] = None,
    url: Annotated[str | None, typer.Option(
        help="The ledger's base URL, e.g. https://ledger.example.org. Default: `claims --url`, then LEDGER_URL.",
        show_default=False,
    )] = None,
    witness: Annotated[list[str] | None, typer.Option(
        help="A witness whose cosignature counts (its verifier key, as `claims witness key` prints it); repeat "
        "for each witness you trust.", show_default=False,
    )] = None,
    quorum: Annotated[int | None, typer.Option(
        help="How many of the --witness keys must have cosigned the checkpoint. Default: all of them.",
        show_default=False,
    )] = None,
    mirror: Annotated[Path | None, typer.Option(
        help="Keep a verified mirror of the ledger in this directory: the first audit verifies everything, each "
        "later one only the events after the mirror's tree size (docs/auditing.md, The mirror).",
        show_default=False,
    )] = None,
    sample: Annotated[int, typer.Option(
        help="With --mirror: how many claims the new events did not touch to compare with the server, at random.",
    )] = DEFAULT_SAMPLE,
    full: Annotated[bool, typer.Option(
        "--full", help="With --mirror: compare every claim with the server, not a sample.",
    )] = False,
    watch: Annotated[bool, typer.Option(
        "--watch", help="With --mirror: a monitor. Follow the ledger and verify each new checkpoint; DIR/status.json "
        "says the last verified tree size. Exits 1 at the first inconsistency.",
    )] = False,
    keep_going: Annotated[bool, typer.Option(
        "--keep-going", help="With --watch: report each inconsistency and go on watching.",
    )] = False,
    interval: Annotated[float, typer.Option(
        help="With --watch: the most seconds between two checks when the event stream is quiet.",
    )] = 2.0,
) -> None:
    """Verify a remote ledger against a kept checkpoint and the pinned key (and a quorum of witnesses)."""
    if ctx.invoked_subcommand is not None:
        return
    url, token = target(ctx, "audit", url, token)
    with exit_on_errors():
        witnesses = WitnessPolicy.parse(witness or [], quorum)
        _check_mirror_options(checkpoint, mirror, sample, watch, keep_going, full, interval)
    if mirror is not None:
        _audit_with_mirror(url, mirror, checkpoint=checkpoint, public_key=public_key, token=token,
                           witnesses=witnesses, sample=sample, full=full, watch=watch, keep_going=keep_going,
                           interval=interval)
        return
    assert checkpoint is not None
    with exit_on_errors(), progress_bars() as progress:
        report = audit_ledger(url, checkpoint, public_key_file=public_key, token=token, progress=progress,
                              witnesses=witnesses)
    for line in report.lines():
        typer.echo(line)
    raise typer.Exit(0 if report.ok else 1)


def _check_mirror_options(checkpoint: Path | None, mirror: Path | None, sample: int, watch: bool,
                          keep_going: bool, full: bool, interval: float) -> None:
    if mirror is None:
        if checkpoint is None:
            raise InvalidInput("give the kept checkpoint with --checkpoint FILE, or a mirror with --mirror DIR")
        for given, name in ((watch, "--watch"), (keep_going, "--keep-going"), (full, "--full"),
                            (sample != DEFAULT_SAMPLE, "--sample")):
            if given:
                raise InvalidInput(f"{name} works on a mirror: give one with --mirror DIR")
    if sample < 0:
        raise InvalidInput(f"--sample {sample}: give how many untouched claims to compare, 0 or more")
    if keep_going and not watch:
        raise InvalidInput("--keep-going is for the monitor: give --watch too")
    if not interval > 0:
        raise InvalidInput(f"--interval {interval}: give a number of seconds above 0")


def _audit_with_mirror(url: str, mirror: Path, *, watch: bool, keep_going: bool, interval: float,
                       **options: Any) -> None:
    if watch:
        def log(line: str) -> None:
            typer.echo(line, err=True)

        with exit_on_errors():
            code = watch_mirror(url, mirror, log=log, keep_going=keep_going, interval=interval,
                                checkpoint_file=options.pop("checkpoint"), public_key_file=options.pop("public_key"),
                                **options)
        raise typer.Exit(code)
    with exit_on_errors(), progress_bars() as progress:
        report = audit_mirror(url, mirror, checkpoint_file=options.pop("checkpoint"),
                              public_key_file=options.pop("public_key"), progress=progress, **options)
    for line in report.lines():
        typer.echo(line)
    raise typer.Exit(0 if report.ok else 1)


def _cut(version: int | None, recorded_as_of: str | None, said_as_of: str | None) -> dict[str, Any]:
    if version is not None and version < 1:
        raise InvalidInput("--version must be 1 or more")
    return {"version": version,
            "recorded_as_of": None if recorded_as_of is None else parse_as_of(recorded_as_of, "--recorded-as-of"),
            "said_as_of": None if said_as_of is None else parse_as_of(said_as_of, "--said-as-of")}


VersionOption = Annotated[int | None, typer.Option(help="The claim as of this version.", show_default=False)]
RecordedOption = Annotated[str | None, typer.Option(
    help="What the ledger knew at this moment (a date means the end of that day, UTC).", show_default=False)]
SaidOption = Annotated[str | None, typer.Option(
    help="The world at this moment as known now (a date means the end of that day, UTC).", show_default=False)]


def _answer(answer: dict[str, Any] | None, shape: type[BaseModel], ref: str, mirror: Path) -> None:
    """The answer in the bytes the server sends: its response model's fields, as its JSONResponse renders them."""
    if answer is None:
        typer.echo(f"error: the mirror in {mirror} holds no claim {ref!r} at that cut", err=True)
        raise typer.Exit(1)
    typer.echo(bytes(JSONResponse(shape.model_validate(answer).model_dump(mode="json")).body).decode())


def _from_mirror(
    read: Callable[..., dict[str, Any] | None], shape: type[BaseModel], key: str, mirror: Path,
    version: int | None, recorded_as_of: str | None, said_as_of: str | None,
) -> None:
    """`claims audit show` and `history`: one read of the mirror at the cut, printed as the server sends it."""
    with exit_on_errors():
        cut = _cut(version, recorded_as_of, said_as_of)
        local = Mirror(mirror, create=False)
    try:
        _answer(read(local, key, **cut), shape, key, mirror)
    finally:
        local.close()


@audit_app.command("show")
def show(
    key: Annotated[str, typer.Argument(help="The claim's key or id.")], mirror: MirrorOption,
    version: VersionOption = None, recorded_as_of: RecordedOption = None, said_as_of: SaidOption = None,
) -> None:
    """A claim as GET /v1/claims/{id} served it for the same cut (JSON), from the mirror alone."""
    _from_mirror(Mirror.claim_at, ClaimView, key, mirror, version, recorded_as_of, said_as_of)


@audit_app.command("history")
def history(
    key: Annotated[str, typer.Argument(help="The claim's key or id.")], mirror: MirrorOption,
    version: VersionOption = None, recorded_as_of: RecordedOption = None, said_as_of: SaidOption = None,
) -> None:
    """Every event of a claim as GET /v1/claims/{id}/history served it (JSON), from the mirror alone."""
    _from_mirror(Mirror.history_at, ClaimHistory, key, mirror, version, recorded_as_of, said_as_of)


audit_key_app = typer.Typer(
    help="The ledger's checkpoint signing key: print it for auditors to pin, or rotate it.",
    invoke_without_command=True,
)
app.add_typer(audit_key_app, name="audit-key")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON, as GET /v1/audit/public-key answers.")]


def _keyring(make: bool) -> tuple[Path, Keyring]:
    with exit_on_errors():
        database = Database.from_url()
        path = key_path(database)
        if make and not path.exists():
            typer.echo(f"no signing key yet: making one at {path}", err=True)
        try:
            return path, load_keyring(path, database.settings.log_origin)
        except SigningKeyError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None


def _print_keys(keys: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(keys, indent=2, ensure_ascii=False))
        return
    typer.echo(f"verifier key: {keys['verifier_key']}")
    typer.echo(f"public key:   {keys['public_key']}")
    typer.echo(f"origin:       {keys['origin']}")
    if keys["previous"] is not None:
        previous = keys["previous"]
        typer.echo(f"previous key: {previous['verifier_key']} (signs beside it until {previous['signs_until']})")


@audit_key_app.callback()
def audit_key(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Print the ledger's verifier key and raw Ed25519 public key (hex), for auditors to pin."""
    if ctx.invoked_subcommand is not None:
        return
    _, keyring = _keyring(make=True)
    _print_keys(key_document(keyring, datetime.now(UTC)), as_json)


@audit_key_app.command("rotate")
def rotate(
    overlap: Annotated[str | None, typer.Option(
        help="How long the previous key goes on signing each checkpoint beside the new one, e.g. 7d, 36h, "
        "1d12h; 0 stops it at once. Default: LEDGER_KEY_ROTATION_OVERLAP.", show_default=False,
    )] = None,
    as_json: JsonOption = False,
) -> None:
    """Make a new signing key; during the overlap checkpoints carry the old key's signature and the new one's."""
    settings = get_settings()
    with exit_on_errors():
        length = parse_duration(overlap if overlap is not None else settings.key_rotation_overlap, "--overlap")
        path = key_path(Database.from_url())
    try:
        keyring = rotate_key(path, length, settings.log_origin)
    except SigningKeyError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    keys = key_document(keyring, datetime.now(UTC))
    if as_json:
        _print_keys(keys, True)
        return
    typer.echo(f"a new signing key is at {path}")
    _print_keys(keys, False)
    if keys["previous"] is not None:
        typer.echo(
            f"until {keys['previous']['signs_until']} every checkpoint is signed by both keys: an auditor who "
            "pinned the previous key moves to the new one on its next `claims audit` in that time; after it, only "
            "the new key signs"
        )
    else:
        typer.echo("the previous key signs no more: auditors must pin the new key, checked by other means")
