"""`claims` commands: fixtures in and out — import, export, fixtures run, demo, generate."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from cli.main import app
from domain.errors import LedgerError
from domain.ledger import Ledger
from fixtures.generator import generate, write_fixture
from fixtures.replay import (
    SEED_FIXTURE,
    FixtureError,
    ImportReport,
    ProgressCallback,
    compare_projections,
    expected_projections,
    export_feed,
    export_fixture,
    fixture_projections,
    import_fixture,
    write_projections,
)
from formats.claimreview_in import MAX_BYTES
from formats.vocab import DEFAULT_BASE, NOT_IN_IRI
from store.event_store import open_ledger
from store.settings import Database

err = Console(stderr=True, soft_wrap=True)
fixtures_app = typer.Typer(help="Replay fixtures and compare their projections with expected files.")
app.add_typer(fixtures_app, name="fixtures")

PROGRESS_AFTER = 0.5  # seconds: quick imports print no bar


@contextmanager
def _ledger() -> Iterator[Ledger]:
    try:
        ledger = open_ledger(Database.from_url())
    except LedgerError as e:
        err.print(f"[red]cannot open the ledger:[/] {e}")
        raise typer.Exit(2) from None
    try:
        yield ledger
    finally:
        ledger.close()


@contextmanager
def _progress_bar(label: str) -> Iterator[ProgressCallback]:
    """A progress callback that shows a bar on stderr once the work takes more than a moment."""
    started = time.perf_counter()
    progress = Progress(
        TextColumn(label), BarColumn(), DownloadColumn(), TextColumn("{task.fields[rate]} acts/s"),
        TimeRemainingColumn(), console=err, transient=True,
    )
    task = progress.add_task(label, total=None, rate="-")
    shown = False

    def report(acts: int, done: int, total: int | None) -> None:
        nonlocal shown
        elapsed = time.perf_counter() - started
        if not shown and elapsed >= PROGRESS_AFTER:
            progress.start()
            shown = True
        progress.update(task, completed=done, total=total, rate=f"{acts / max(elapsed, 1e-9):,.0f}")

    try:
        yield report
    finally:
        if shown:
            progress.stop()


def _summary(report: ImportReport) -> str:
    return (
        f"imported {report.acts:,} acts from {report.path}: {report.events:,} new events, "
        f"{report.unchanged:,} already recorded, in {report.seconds:.2f} s "
        f"({report.acts_per_second:,.0f} acts/s)"
    )


class ImportFormat(StrEnum):
    FIXTURE = "fixture"
    CLAIMREVIEW = "claimreview"


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="A fixture: JSON Lines, one act a line ('-' for stdin).")],
    input_format: Annotated[ImportFormat, typer.Option(
        "--format", help="fixture: JSON Lines of acts; claimreview: ClaimReview JSON-LD (an array or a "
        "DataFeed) or a Fact Check Tools claims:search answer (docs/formats.md).",
    )] = ImportFormat.FIXTURE,
) -> None:
    """Record every act of a fixture in one transaction: all of them, or none and the bad line."""
    if input_format is ImportFormat.CLAIMREVIEW:
        _import_claimreview(file)
        return
    with _ledger() as ledger, _progress_bar("importing") as progress:
        try:
            if str(file) == "-":
                report = import_fixture(ledger, sys.stdin.buffer, name="<stdin>")
            else:
                if not file.is_file():
                    err.print(f"[red]no such fixture file:[/] {file}")
                    raise typer.Exit(2)
                report = import_fixture(ledger, file, progress=progress)
        except FixtureError as e:
            err.print(f"[red]import failed, nothing was written:[/] {e}", highlight=False)
            raise typer.Exit(1) from None
        except LedgerError as e:
            err.print(f"[red]import failed, nothing was written:[/] {e}", highlight=False)
            raise typer.Exit(1) from None
    err.print(_summary(report), highlight=False)


def _import_claimreview(file: Path) -> None:
    from cli.formats import import_claimreview, read_input  # rdflib's import is for these commands only

    with _ledger() as ledger:
        try:
            if str(file) == "-":
                report = import_claimreview(ledger, sys.stdin.buffer.read(MAX_BYTES + 1), "<stdin>")
            elif not file.is_file():
                err.print(f"[red]no such file:[/] {file}")
                raise typer.Exit(2)
            else:
                report = import_claimreview(ledger, read_input(file), str(file))
        except LedgerError as e:  # the file's own text may be in the message: not rich markup
            err.print(f"[red]import failed, nothing was written:[/] {escape(str(e))}", highlight=False)
            raise typer.Exit(1) from None
    err.print(report.summary(), highlight=False, markup=False)


class ExportFormat(StrEnum):
    FIXTURE = "fixture"
    FEED = "feed"
    CLAIMREVIEW = "claimreview"
    PROV_TURTLE = "prov-turtle"
    PROV_JSONLD = "prov-jsonld"
    CSV = "csv"


@app.command("export")
def export_command(
    out: Annotated[Path | None, typer.Option("--out", help="Write here instead of stdout.")] = None,
    output_format: Annotated[
        ExportFormat,
        typer.Option("--format", help=(
            "fixture: lines to import again; feed: {position, hash, body}; claimreview: schema.org "
            "Claim/ClaimReview JSON-LD (a DataFeed); prov-turtle, prov-jsonld: W3C PROV-O; csv: every event "
            "(docs/formats.md)."
        )),
    ] = ExportFormat.FIXTURE,
    after: Annotated[int, typer.Option("--after", min=0, help="Only events after this position.")] = 0,
    base_url: Annotated[str, typer.Option(
        "--base-url", help="The ledger's public URL, the base of the IRIs of claims, acts and parties "
        "(claimreview and prov formats).",
    )] = DEFAULT_BASE,
) -> None:
    """Write the event log out as a fixture (re-importable, hash for hash), the event feed, or
    in fact-checking's formats (the whole ledger, claim by claim)."""
    if output_format not in (ExportFormat.FIXTURE, ExportFormat.FEED):
        from cli.formats import FormatName, export_format  # rdflib's import is for these formats only

        if after:
            err.print("[red]--after applies to the fixture and feed formats only[/]")
            raise typer.Exit(2)
        if NOT_IN_IRI.search(base_url) or ":" not in base_url:
            err.print(f"[red]--base-url must be an absolute URL such as https://ledger.example.org:[/] "
                      f"{escape(repr(base_url))}", highlight=False)
            raise typer.Exit(2)
        with _ledger() as ledger:
            target_file: IO[str]
            with open(out, "w", encoding="utf-8", newline="") if out else _stdout() as target_file:
                report = export_format(ledger, Database.from_url(), FormatName(output_format.value), target_file,
                                       base_url)
        err.print(
            f"exported {report.claims:,} claims ({report.events:,} events, {report.units:,} {report.unit}) as "
            f"{output_format.value} in {report.seconds:.2f} s" + (f" to {out}" if out else ""), highlight=False,
        )
        return
    writer = export_fixture if output_format is ExportFormat.FIXTURE else export_feed
    with _ledger() as ledger:
        target: IO[str]
        with open(out, "w", encoding="utf-8") if out else _stdout() as target:
            count = writer(ledger, target, after=after)
    err.print(f"exported {count:,} events as a {output_format.value}" + (f" to {out}" if out else ""),
              highlight=False)


@contextmanager
def _stdout() -> Iterator[IO[str]]:
    yield sys.stdout
    sys.stdout.flush()


@fixtures_app.command("run")
def fixtures_run(
    file: Annotated[Path, typer.Argument(help="The fixture to replay.", exists=True, dir_okay=False)],
    expect: Annotated[Path, typer.Option("--expect", help="Folder of expected claims/, history/, parties/.")],
    update: Annotated[bool, typer.Option("--update", help="Write the actual projections as the expected ones.")] = False,
) -> None:
    """Replay a fixture into a throwaway ledger and compare its projections with the expected files."""
    try:
        actual = fixture_projections(file)
    except LedgerError as e:
        err.print(f"[red]the fixture does not import:[/] {e}", highlight=False)
        raise typer.Exit(1) from None
    if update:
        write_projections(actual, expect)
        err.print(f"wrote {len(actual)} expected files to {expect}", highlight=False)
        return
    diffs = compare_projections(actual, expected_projections(expect))
    if diffs:
        for diff in diffs:
            sys.stdout.write(diff if diff.endswith("\n") else diff + "\n")
        err.print(f"[red]{len(diffs)} of {len(actual)} projections differ from {expect}[/]", highlight=False)
        raise typer.Exit(1)
    err.print(f"all {len(actual)} projections of {file} equal {expect}", highlight=False)


@app.command()
def demo(
    if_empty: Annotated[bool, typer.Option("--if-empty", help="Only when the ledger holds no events.")] = False,
) -> None:
    """Load the seed story (Putin, Elton John and the Kremlin's denial) into the configured ledger."""
    if not SEED_FIXTURE.is_file():
        err.print(f"[red]the seed fixture is missing:[/] {SEED_FIXTURE}", highlight=False)
        raise typer.Exit(1)
    with _ledger() as ledger:
        if if_empty and ledger.max_position() > 0:
            err.print("the ledger already holds events; the demo was not loaded")
            return
        try:
            report = import_fixture(ledger, SEED_FIXTURE)
        except LedgerError as e:
            err.print(f"[red]the demo could not be loaded:[/] {e}", highlight=False)
            raise typer.Exit(1) from None
    err.print(_summary(report), highlight=False)


@app.command("generate")
def generate_command(
    claims: Annotated[int, typer.Option("--claims", min=1, help="How many claims to register.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="The same seed gives the same fixture.")] = 1,
    out: Annotated[Path | None, typer.Option("--out", help="Write here instead of stdout.")] = None,
) -> None:
    """Write a synthetic fixture of realistic, always-valid histories (benchmarks, load tests)."""
    count = write_fixture(out or sys.stdout, generate(claims, seed))
    err.print(f"generated {count:,} lines for {claims:,} claims (seed {seed})" + (f" in {out}" if out else ""),
              highlight=False)

