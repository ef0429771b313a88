"""The commands that talk to a ledger over HTTP, through the Python client (client/):
`show`, `list`, `history`, `party`, `assert`, `deny`, `retract`, `void`, `review`, `tail` and
`watch`.

Each needs the ledger's address: `claims --url URL <command>` or LEDGER_URL, and a token
with `--token` or LEDGER_TOKEN where the ledger asks for one. Output is for people (rich
tables, the status in colour) unless `--json` asks for the JSON the API answers. Exit
status: 0 done, 1 the ledger refused (its problem's detail on stderr) or could not be
reached, 2 bad usage.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from json import dumps as json_text
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

import client
from cli.main import Remote, app
from client import LedgerClient, StreamItem
from domain import ijson
from domain.errors import InvalidJson
from domain.fold import ClaimStatus
from store.settings import get_settings

Json = dict[str, Any]

STATUS_STYLE: dict[str, str] = {
    ClaimStatus.UNATTESTED: "dim", ClaimStatus.ASSERTED: "green", ClaimStatus.DENIED: "red",
    ClaimStatus.DISPUTED: "yellow", ClaimStatus.RETRACTED: "magenta",
}
STANCE_STYLE = {"asserts": "green", "denies": "red", "withdrawn": "magenta"}

# Options every remote read shares.
JsonOutput = Annotated[bool, typer.Option("--json", help="Print the JSON the API answers instead of tables.")]
Version = Annotated[int | None, typer.Option(help="The claim after its N-th event.", show_default=False)]
RecordedAsOf = Annotated[str | None, typer.Option(
    help="What the ledger knew at T (a date, meaning its end in UTC, or an RFC 3339 date-time).", show_default=False,
)]
SaidAsOf = Annotated[str | None, typer.Option(
    help="The world at T, as known now: only acts said by T.", show_default=False,
)]
ClaimArg = Annotated[str, typer.Argument(help="The claim's key or UUID.", show_default=False)]


def usage_error(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def connect(ctx: typer.Context, command: str, url: str | None = None, token: str | None = None) -> LedgerClient:
    """The client of the ledger the command talks to: `url` and `token` if given, else the
    global `--url`/`--token`, else LEDGER_URL/LEDGER_TOKEN. Exits 2 when there is no URL."""
    url, token = target(ctx, command, url, token)
    return LedgerClient(url, token)


def target(ctx: typer.Context, command: str, url: str | None = None, token: str | None = None) -> tuple[str, str | None]:
    """(url, token) as `connect` finds them."""
    root = ctx.find_root().obj
    given = root if isinstance(root, Remote) else Remote()
    settings = get_settings()
    url = url or given.url or settings.url
    if not url:
        raise usage_error(
            f"`claims {command}` talks to a ledger over HTTP: give its address with --url before the command "
            f"(claims --url http://127.0.0.1:8000 {command} ...) or in LEDGER_URL"
        )
    if not url.startswith(("http://", "https://")):
        raise usage_error(f"--url {url!r} is not an HTTP URL; write it as http://host:port or https://host")
    if token is None:
        token = given.token or (settings.token.get_secret_value() if settings.token is not None else None)
    return url, token


@contextmanager
def answered() -> Iterator[None]:
    """The ledger's refusals and failures as exit status 1, its problem's detail on stderr;
    a value the client cannot send (a time without a zone) as bad usage, 2."""
    try:
        yield
    except client.LedgerError as e:
        typer.echo(f"error: {e}", err=True)
        if e.request_id:
            typer.echo(f"  (request id {e.request_id})", err=True)
        raise typer.Exit(1) from None
    except ValueError as e:
        raise usage_error(str(e)) from None


def console() -> Console:
    return Console(soft_wrap=False, width=None if sys.stdout.isatty() else 160)


def print_json(value: Any) -> None:
    """One JSON document on a line of its own, members in the order the API sent them."""
    typer.echo(json_text(value, ensure_ascii=False, separators=(",", ":")))


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


# -- Reads ---------------------------------------------------------------------------------------


@app.command()
def show(
    ctx: typer.Context, claim: ClaimArg, version: Version = None, recorded_as_of: RecordedAsOf = None,
    said_as_of: SaidAsOf = None, json: JsonOutput = False,
) -> None:
    """A claim of a remote ledger: its status, stances and counts, now or at a past moment."""
    with connect(ctx, "show") as ledger, answered():
        view = ledger.get_claim(claim, version=version, recorded_as_of=recorded_as_of, said_as_of=said_as_of)
    if json:
        print_json(view)
        return
    out = console()
    out.print(Text.assemble((view["key"], "bold"), "  ", status_text(view["status"]),
                            f"  version {view['version']}"))
    out.print(view["statement"])
    out.print(f"id {view['id']} · registered {view['registered_at']} · updated {view['updated_at']}", style="dim")
    if view.get("subjects"):
        out.print("subjects: " + ", ".join(view["subjects"]), style="dim")
    counts = view.get("counts", {})
    out.print(", ".join(f"{n} {name}" for name, n in counts.items()), style="dim")
    if view["stances"]:
        table = Table("holder", "stance", "said by", "said at", "act")
        for s in view["stances"]:
            table.add_row(s["holder"]["name"], Text(s["stance"], style=STANCE_STYLE.get(s["stance"], "")),
                          s["party"]["name"], s["said_at"] or "", s["act_id"])
        out.print(table)
    else:
        out.print("no stances", style="dim")
    if view.get("reviews"):
        reviews = Table("reviewer", "rating", "reviewed at", "review", title="reviews")
        for r in view["reviews"]:
            reviews.add_row(r["reviewer"]["name"], r["rating"]["text"], r.get("reviewed_at") or "", r["url"])
        out.print(reviews)


@app.command("list")
def list_claims(
    ctx: typer.Context,
    status: Annotated[ClaimStatus | None, typer.Option(help="Only claims with this status.", show_default=False)] = None,
    party: Annotated[str | None, typer.Option(help="Only claims on which this party holds or voiced a stance.",
                                              show_default=False)] = None,
    subject: Annotated[str | None, typer.Option(help="Only claims with this subject.", show_default=False)] = None,
    search: Annotated[str | None, typer.Option("--search", "-q", help="Full-text search of statements.",
                                               show_default=False)] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Claims per page.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="The next_cursor of the previous page.",
                                               show_default=False)] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="Every page, not just the first.")] = False,
    json: JsonOutput = False,
) -> None:
    """Claims of a remote ledger in registration order, filtered and searched."""
    with connect(ctx, "list") as ledger, answered():
        page = ledger.list_claims(status=status, party=party, subject=subject, q=search, limit=limit, cursor=cursor)
        items = list(page["items"])
        while all_pages and page.get("next_cursor"):
            page = ledger.list_claims(status=status, party=party, subject=subject, q=search, limit=limit,
                                      cursor=page["next_cursor"])
            items.extend(page["items"])
    next_cursor = page.get("next_cursor")
    if json:
        print_json({"items": items, "next_cursor": next_cursor})
        return
    if not items:
        typer.echo("no claims match", err=True)
        return
    table = Table("key", "status", "version", "statement")
    for view in items:
        table.add_row(view["key"], status_text(view["status"]), str(view["version"]), view["statement"])
    console().print(table)
    if next_cursor:
        typer.echo(f"more: claims list --cursor {next_cursor} (or --all)", err=True)


@app.command()
def history(
    ctx: typer.Context, claim: ClaimArg, version: Version = None, recorded_as_of: RecordedAsOf = None,
    said_as_of: SaidAsOf = None, json: JsonOutput = False,
) -> None:
    """Every event of a claim of a remote ledger, with positions, times and hashes."""
    with connect(ctx, "history") as ledger, answered():
        found = ledger.history(claim, version=version, recorded_as_of=recorded_as_of, said_as_of=said_as_of)
    if json:
        print_json(found)
        return
    table = Table("pos", "ver", "type", "act", "party", "said at", "recorded at", "hash")
    for e in found["events"]:
        party = e.get("party") or {}
        behalf = e.get("on_behalf_of")
        who = party.get("name", "") + (f" for {behalf['name']}" if behalf else "")
        act = e.get("act_id") or ""
        if e.get("retracts"):
            act += f" (retracts {e['retracts']})"
        if e.get("voids"):
            act += f" (voids {e['voids']})"
        table.add_row(str(e["position"]), str(e["version"]), e["type"], act, who, e.get("said_at") or "",
                      e["recorded_at"], e["hash"][:12])
    out = console()
    out.print(f"claim {found['claim_id']}", style="bold")
    out.print(table)


@app.command()
def party(
    ctx: typer.Context,
    party_id: Annotated[str, typer.Argument(help="The party's id (a slug, e.g. vladimir-putin).",
                                            show_default=False)],
    json: JsonOutput = False,
) -> None:
    """Where a party stands across the claims of a remote ledger, and what it said for others."""
    with connect(ctx, "party") as ledger, answered():
        found = ledger.party(party_id)
    if json:
        print_json(found)
        return
    out = console()
    out.print(f"{found['name']} ({found['party_id']})", style="bold")
    for title, rows, other in (("stances", found["stances"], "said by"),
                               ("spoken for others", found["spoken_for_others"], "holder")):
        if not rows:
            continue
        table = Table("claim", "stance", other, "said at", "claim status", title=title)
        for s in rows:
            who = s["party"]["name"] if other == "said by" else s["holder"]["name"]
            table.add_row(s["key"], Text(s["stance"], style=STANCE_STYLE.get(s["stance"], "")), who,
                          s["said_at"] or "", status_text(s["status"]))
        out.print(table)


# -- Acts ----------------------------------------------------------------------------------------

BodyFile = Annotated[Path | None, typer.Option(
    "--json", help="The act's whole JSON body, as the API takes it, from FILE ('-': standard input); "
    "instead of the flags.", show_default=False,
)]
PartyId = Annotated[str | None, typer.Option("--party", help="Who spoke: the party's id (a slug).",
                                             show_default=False)]
PartyName = Annotated[str | None, typer.Option("--party-name", help="The party's display name.",
                                               show_default=False)]
SaidAt = Annotated[str | None, typer.Option(help="When it was said: a date or an RFC 3339 date-time.",
                                            show_default=False)]
SourceUrl = Annotated[str | None, typer.Option(help="Where it was published.", show_default=False)]
SourceOutlet = Annotated[str | None, typer.Option(help="The outlet that published it.", show_default=False)]
ActId = Annotated[str | None, typer.Option(help="The act's id (unique within the claim; made by the server "
                                           "when omitted). Sending the same act again is then recorded once.",
                                           show_default=False)]
IfMatch = Annotated[int | None, typer.Option(help="Refuse (412) when the claim has moved past this version.",
                                             show_default=False)]
IdempotencyKey = Annotated[str | None, typer.Option(
    help="The Idempotency-Key for this write (default: a new one, reused on the client's retries).",
    show_default=False,
)]
PrintJson = Annotated[bool, typer.Option("--print-json", help="Print the API's answer as JSON.")]


def read_body(path: Path, flags: dict[str, Any]) -> Json:
    """The body from `--json FILE`; no other field flag may be given with it."""
    given = sorted(f"--{name.replace('_', '-')}" for name, value in flags.items() if value is not None)
    if given:
        raise usage_error(f"--json FILE gives the whole body; leave out {', '.join(given)} or put them in the file")
    try:
        raw = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as e:
        raise usage_error(f"cannot read {path}: {e.strerror or e}") from None
    try:
        body = ijson.loads(raw)
    except InvalidJson as e:
        raise usage_error(f"{path} is not a JSON object the ledger can take: {e}") from None
    if not isinstance(body, dict):
        raise usage_error(f"{path} must hold one JSON object, the act's body")
    return body


def party_of(option: str, party_id: str | None, name: str | None) -> dict[str, str] | None:
    if party_id is None and name is None:
        return None
    if party_id is None or name is None:
        raise usage_error(f"{option} and {option}-name go together: the party's id and its display name")
    return {"id": party_id, "name": name}


def source_of(url: str | None, outlet: str | None) -> dict[str, str] | None:
    source = {name: value for name, value in (("url", url), ("outlet", outlet)) if value is not None}
    return source or None


def record(
    ctx: typer.Context, kind: str, claim: str, body: Json, if_match: int | None, idempotency_key: str | None,
    print_answer: bool,
) -> None:
    with connect(ctx, kind) as ledger, answered():
        written = ledger.record_act(kind, claim, body, if_match=if_match, idempotency_key=idempotency_key)
    if print_answer:
        print_json(written)
    else:
        typer.echo(f"{kind}: act {written['act_id']} recorded on {claim}: version {written['version']}, "
                   f"log position {written['position']}")


def stance_command(kind: str) -> None:
    verb = {"assert": "asserts", "deny": "denies"}[kind]

    def command(
        ctx: typer.Context, claim: ClaimArg, party: PartyId = None, party_name: PartyName = None,
        for_party: Annotated[str | None, typer.Option(
            "--for", help="The holder of the stance, when the party speaks for someone (its id).", show_default=False,
        )] = None,
        for_name: Annotated[str | None, typer.Option("--for-name", help="The holder's display name.",
                                                     show_default=False)] = None,
        said_at: SaidAt = None, source_url: SourceUrl = None, source_outlet: SourceOutlet = None,
        quote: Annotated[str | None, typer.Option(help="The words said.", show_default=False)] = None,
        note: Annotated[str | None, typer.Option(help="A note of the recorder's.", show_default=False)] = None,
        act_id: ActId = None, body_file: BodyFile = None, if_match: IfMatch = None,
        idempotency_key: IdempotencyKey = None, print_answer: PrintJson = False,
    ) -> None:
        flags = {"party": party, "party_name": party_name, "for": for_party, "for_name": for_name,
                 "said_at": said_at, "source_url": source_url, "source_outlet": source_outlet, "quote": quote,
                 "note": note, "act_id": act_id}
        if body_file is not None:
            body = read_body(body_file, flags)
        else:
            who = party_of("--party", party, party_name)
            if who is None:
                raise usage_error(f"say who {verb} it: --party ID --party-name NAME (or give --json FILE)")
            behalf = party_of("--for", for_party, for_name)
            body = {name: value for name, value in (
                ("party", who), ("on_behalf_of", behalf), ("said_at", said_at),
                ("source", source_of(source_url, source_outlet)), ("quote", quote), ("note", note),
                ("act_id", act_id),
            ) if value is not None}
        record(ctx, kind, claim, body, if_match, idempotency_key, print_answer)

    command.__doc__ = f"Record on a remote ledger that a party {verb} a claim (role recorder)."
    app.command(kind)(command)


stance_command("assert")
stance_command("deny")


@app.command()
def retract(
    ctx: typer.Context, claim: ClaimArg,
    retracts: Annotated[str | None, typer.Argument(help="The act_id of the assertion or denial withdrawn.",
                                                   show_default=False)] = None,
    party: PartyId = None, party_name: PartyName = None, said_at: SaidAt = None,
    source_url: SourceUrl = None, source_outlet: SourceOutlet = None,
    reason: Annotated[str | None, typer.Option(help="Why it was withdrawn.", show_default=False)] = None,
    act_id: ActId = None, body_file: BodyFile = None, if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None, print_answer: PrintJson = False,
) -> None:
    """Record on a remote ledger that a party withdraws its assertion or denial (role recorder)."""
    flags = {"retracts": retracts, "party": party, "party_name": party_name, "said_at": said_at,
             "source_url": source_url, "source_outlet": source_outlet, "reason": reason, "act_id": act_id}
    if body_file is not None:
        body = read_body(body_file, flags)
    else:
        who = party_of("--party", party, party_name)
        if retracts is None or who is None:
            raise usage_error("name the act withdrawn and who withdraws it: claims retract CLAIM ACT_ID --party ID "
                              "--party-name NAME (or give --json FILE)")
        body = {name: value for name, value in (
            ("retracts", retracts), ("party", who), ("said_at", said_at),
            ("source", source_of(source_url, source_outlet)), ("reason", reason), ("act_id", act_id),
        ) if value is not None}
    record(ctx, "retract", claim, body, if_match, idempotency_key, print_answer)


@app.command()
def void(
    ctx: typer.Context, claim: ClaimArg,
    voids: Annotated[str | None, typer.Argument(help="The act_id of the act recorded in error.",
                                                show_default=False)] = None,
    reason: Annotated[str | None, typer.Option(help="Why the act is void (required).", show_default=False)] = None,
    act_id: ActId = None, body_file: BodyFile = None, if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None, print_answer: PrintJson = False,
) -> None:
    """Void an act recorded in error on a remote ledger (role editor)."""
    flags = {"voids": voids, "reason": reason, "act_id": act_id}
    if body_file is not None:
        body = read_body(body_file, flags)
    else:
        if voids is None or reason is None:
            raise usage_error("name the act and say why: claims void CLAIM ACT_ID --reason TEXT (or give --json FILE)")
        body = {name: value for name, value in (("voids", voids), ("reason", reason), ("act_id", act_id))
                if value is not None}
    record(ctx, "void", claim, body, if_match, idempotency_key, print_answer)


@app.command()
def review(
    ctx: typer.Context, claim: ClaimArg,
    reviewer: Annotated[str | None, typer.Option(help="The reviewer's id (a slug).", show_default=False)] = None,
    reviewer_name: Annotated[str | None, typer.Option(help="The reviewer's display name.", show_default=False)] = None,
    rating: Annotated[str | None, typer.Option(help="The verdict as published, e.g. False.", show_default=False)] = None,
    value: Annotated[float | None, typer.Option(help="The verdict on the reviewer's scale.", show_default=False)] = None,
    best: Annotated[float | None, typer.Option(help="The scale's best value.", show_default=False)] = None,
    worst: Annotated[float | None, typer.Option(help="The scale's worst value.", show_default=False)] = None,
    url: Annotated[str | None, typer.Option(help="The published review (http or https).", show_default=False)] = None,
    reviewed_at: Annotated[str | None, typer.Option(help="When it was published.", show_default=False)] = None,
    summary: Annotated[str | None, typer.Option(help="The review in a sentence.", show_default=False)] = None,
    act_id: ActId = None, body_file: BodyFile = None, if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None, print_answer: PrintJson = False,
) -> None:
    """Record a fact-checker's published review of a claim on a remote ledger (role recorder)."""
    flags = {"reviewer": reviewer, "reviewer_name": reviewer_name, "rating": rating, "value": value, "best": best,
             "worst": worst, "url": url, "reviewed_at": reviewed_at, "summary": summary, "act_id": act_id}
    if body_file is not None:
        body = read_body(body_file, flags)
    else:
        who = party_of("--reviewer", reviewer, reviewer_name)
        if who is None or rating is None or url is None:
            raise usage_error("say who reviewed it, the verdict and where: claims review CLAIM --reviewer ID "
                              "--reviewer-name NAME --rating TEXT --url URL (or give --json FILE)")
        verdict = {name: number for name, number in (("text", rating), ("value", value), ("best", best),
                                                     ("worst", worst)) if number is not None}
        body = {name: given for name, given in (
            ("reviewer", who), ("rating", verdict), ("url", url), ("reviewed_at", reviewed_at), ("summary", summary),
            ("act_id", act_id),
        ) if given is not None}
    record(ctx, "review", claim, body, if_match, idempotency_key, print_answer)


# -- Streams -------------------------------------------------------------------------------------

After = Annotated[int | None, typer.Option(
    help="Start after this log position (0: from the start; default: from now on).", show_default=False,
)]
Count = Annotated[int | None, typer.Option(min=1, help="Stop after this many (default: follow until Ctrl-C).",
                                           show_default=False)]


def now_or(ledger: LedgerClient, after: int | None) -> int:
    """`after`, or the newest log position now (`/healthz`'s head): a stream from now on."""
    if after is not None:
        return after
    with answered():
        head = ledger.health()["projections"]["head"]
    return head if isinstance(head, int) else 0


def follow(items: Iterator[StreamItem], count: int | None, show_item: Any) -> None:
    """Print each item as it comes, until `count` or Ctrl-C (exit 0)."""
    shown = 0
    try:
        with answered():
            for item in items:
                show_item(item)
                sys.stdout.flush()
                shown += 1
                if count is not None and shown >= count:
                    return
    except KeyboardInterrupt:
        return


@app.command()
def tail(ctx: typer.Context, after: After = None, count: Count = None, json: JsonOutput = False) -> None:
    """Follow a remote ledger's event feed as it grows (role auditor), reconnecting where it
    left off: one line an event."""
    out = console()

    def show_item(item: StreamItem) -> None:
        if json:
            print_json(item.data)
            return
        body = item.data.get("body", {})
        out.print(f"{item.position:>8}  {body.get('type', item.type):<16} claim {body.get('claim_id', '?')} "
                  f"v{body.get('version', '?')}  {str(item.data.get('hash', ''))[:12]}", highlight=False)

    with connect(ctx, "tail") as ledger:
        follow(ledger.stream_events(now_or(ledger, after)), count, show_item)


@app.command()
def watch(
    ctx: typer.Context,
    claim: Annotated[str | None, typer.Option(help="Only this claim (key or UUID).", show_default=False)] = None,
    status: Annotated[ClaimStatus | None, typer.Option(help="Only claims with this status.", show_default=False)] = None,
    party: Annotated[str | None, typer.Option(help="Only claims this party holds or voiced a stance on.",
                                              show_default=False)] = None,
    subject: Annotated[str | None, typer.Option(help="Only claims with this subject.", show_default=False)] = None,
    after: After = None, count: Count = None, json: JsonOutput = False,
) -> None:
    """Follow the changes of a remote ledger's claims as they become readable: one line a change."""
    out = console()

    def show_item(item: StreamItem) -> None:
        if json:
            print_json({"position": item.position, "type": item.type, "claim": item.data})
            return
        view = item.data
        out.print(Text.assemble(f"{item.position:>8}  ", (str(view.get("key", "?")), "bold"), "  ",
                                status_text(str(view.get("status", "?"))), f"  v{view.get('version', '?')}  ",
                                str(view.get("statement", ""))))

    with connect(ctx, "watch") as ledger:
        follow(ledger.watch_claims(claim=claim, status=status, party=party, subject=subject,
                                   after=now_or(ledger, after)), count, show_item)
