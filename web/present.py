"""What the pages say about a claim, in the words people use, and its timeline as SVG.

Everything here returns plain values for the templates, which escape them (Jinja2 with
autoescape on): nothing a party or a recorder wrote is ever trusted as markup. The timeline
is built with `markupsafe.escape` on every text it carries, for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from markupsafe import Markup, escape

from domain.values import instant_of

Json = dict[str, Any]

STATUS_WORDS = {
    "unattested": "Unattested", "asserted": "Asserted", "denied": "Denied", "disputed": "Disputed",
    "retracted": "Retracted",
}
STANCE_WORDS = {"asserts": "asserts", "denies": "denies", "withdrawn": "withdrew what they said"}
ACT_TYPES = {"Asserted", "Denied", "Retracted", "ActVoided", "Reviewed"}


def safe_url(url: object) -> str | None:
    """A link a page may carry: http(s) only (a `javascript:` URL would run on a click)."""
    if not isinstance(url, str):
        return None
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return None
    return url if scheme in ("http", "https") else None


def name_of(party: Json | None) -> str:
    return str((party or {}).get("name") or (party or {}).get("id") or "someone")


def outlets(sources: list[Json] | None) -> list[str]:
    return [str(s.get("outlet") or s.get("title") or s.get("url")) for s in sources or []
            if s.get("outlet") or s.get("title") or s.get("url")]


def speaker(holder: Json | None, party: Json | None, reported_via: list[Json] | None = None,
            source: Json | None = None) -> str:
    """Who said it, as people say it: "Dmitry Peskov, for Vladimir Putin — quoted by TASS"
    (the source, where it was said: "Elton John, on Instagram")."""
    who = name_of(party)
    if holder is not None and party is not None and holder.get("id") != party.get("id"):
        who = f"{who}, for {name_of(holder)}"
    where = (source or {}).get("outlet") or (source or {}).get("title")
    if where:
        who += f", via {where}"
    relayed = outlets(reported_via)
    if relayed:
        who += " — quoted by " + ", ".join(relayed)
    return who


@dataclass
class StanceLine:
    holder: Json
    party: Json
    stance: str
    verb: str
    said_at: str | None
    speaker: str
    act_id: str | None
    quote: str | None = None
    note: str | None = None
    source: Json | None = None
    source_url: str | None = None
    reported: list[tuple[str, str | None]] = field(default_factory=list)


def stance_lines(view: Json, events: list[Json]) -> list[StanceLine]:
    """Each holder's stance with the words of the act behind it (its quote, source, relays)."""
    acts = {e["act_id"]: e for e in events if e.get("act_id")}
    lines = []
    for s in view.get("stances", []):
        act = acts.get(s.get("act_id"), {})
        source = act.get("source") or None
        lines.append(StanceLine(
            holder=s["holder"], party=s["party"], stance=s["stance"],
            verb=STANCE_WORDS.get(s["stance"], s["stance"]), said_at=s.get("said_at"),
            speaker=speaker(s["holder"], s["party"], act.get("reported_via"), source), act_id=s.get("act_id"),
            quote=act.get("quote"), note=act.get("note"), source=source,
            source_url=safe_url((source or {}).get("url")),
            reported=[(o, safe_url(r.get("url"))) for r in act.get("reported_via") or []
                      for o in outlets([r])],
        ))
    return lines


def rating_words(rating: Json | None) -> str:
    """"False (1 on a scale of 1 to 5)", or the text alone."""
    rating = rating or {}
    text = str(rating.get("text") or "")
    value = rating.get("value")
    if value is None:
        return text
    scale = ""
    if rating.get("worst") is not None and rating.get("best") is not None:
        scale = f" on a scale from {rating['worst']} (worst) to {rating['best']} (best)"
    return f"{text} ({value}{scale})"


def event_summary(event: Json) -> str:
    """One line per history event."""
    kind = event["type"]
    if kind == "ClaimRegistered":
        return "registered"
    if kind in ("Asserted", "Denied"):
        verb = "asserted" if kind == "Asserted" else "denied"
        holder = event.get("on_behalf_of") or event.get("party")
        return f"{speaker(holder, event.get('party'), event.get('reported_via'), event.get('source'))} {verb}"
    if kind == "Retracted":
        return f"{name_of(event.get('party'))} retracted {event.get('retracts')}"
    if kind == "ActVoided":
        return f"staff voided {event.get('voids')} (recorded in error)"
    if kind == "Reviewed":
        return f"{name_of(event.get('reviewer'))} reviewed it: {rating_words(event.get('rating'))}"
    return kind


# -- The timeline ---------------------------------------------------------------------------------

WIDTH, LEFT, RIGHT = 720, 96, 24
SAID_Y, RECORDED_Y = 48, 128
HEIGHT = 176


def _instant(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return instant_of(value) + (timedelta(hours=12) if len(value) == 10 else timedelta())
    except ValueError:
        return None


def _label(moment: datetime, span: timedelta) -> str:
    return moment.strftime("%Y-%m-%d %H:%M" if span < timedelta(days=2) else "%Y-%m-%d")


def timeline_svg(events: list[Json]) -> Markup:
    """The claim's events on both time axes, drawn on the server: when each act was said (top)
    and when the ledger recorded it (bottom), joined by a line; retracted and voided acts are
    drawn hollow and struck through."""
    retracted = {e.get("retracts") for e in events if e["type"] == "Retracted"}
    voided = {e.get("voids") for e in events if e["type"] == "ActVoided"}
    moments = [m for e in events for m in (_instant(e.get("said_at") or e.get("reviewed_at")),
                                           _instant(e["recorded_at"])) if m]
    if not moments:
        return Markup("")
    start, end = min(moments), max(moments)
    if end - start < timedelta(hours=1):
        start, end = start - timedelta(minutes=30), end + timedelta(minutes=30)
    span = end - start

    def x(moment: datetime) -> float:
        return round(LEFT + (WIDTH - LEFT - RIGHT) * ((moment - start) / span), 1)

    parts = [
        f'<svg class="timeline" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="timeline-title timeline-desc"'
        ' xmlns="http://www.w3.org/2000/svg">',
        '<title id="timeline-title">Timeline: when each act was said, and when the ledger recorded it</title>',
        f'<desc id="timeline-desc">{len(events)} events from {_label(start, span)} to {_label(end, span)}; '
        'the history table below lists them.</desc>',
        f'<text class="axis-label" x="4" y="{SAID_Y + 4}">said</text>',
        f'<text class="axis-label" x="4" y="{RECORDED_Y + 4}">recorded</text>',
        f'<line class="axis" x1="{LEFT}" y1="{SAID_Y}" x2="{WIDTH - RIGHT}" y2="{SAID_Y}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{RECORDED_Y}" x2="{WIDTH - RIGHT}" y2="{RECORDED_Y}"/>',
        f'<text class="tick" x="{LEFT}" y="{HEIGHT - 8}">{escape(_label(start, span))}</text>',
        f'<text class="tick end" x="{WIDTH - RIGHT}" y="{HEIGHT - 8}">{escape(_label(end, span))}</text>',
    ]
    for i, event in enumerate(events):
        kind = event["type"]
        recorded = _instant(event["recorded_at"])
        said = _instant(event.get("said_at") or event.get("reviewed_at"))
        classes = ["mark", kind.lower()]
        if event.get("act_id") in retracted:
            classes.append("was-retracted")
        if event.get("act_id") in voided:
            classes.append("was-voided")
        what = escape(f"{event_summary(event)}: said {event.get('said_at') or 'at an unknown time'}, "
                      f"recorded {event['recorded_at']}")
        group = [f'<g class="{" ".join(classes)}"><title>{what}</title>']
        if recorded is not None and said is not None:
            group.append(f'<line class="lag" x1="{x(said)}" y1="{SAID_Y}" x2="{x(recorded)}" y2="{RECORDED_Y}"/>')
        for moment, y in ((said, SAID_Y), (recorded, RECORDED_Y)):
            if moment is None:
                continue
            cx = x(moment)
            group.append(_shape(kind, cx, y))
            if "was-retracted" in classes or "was-voided" in classes:
                group.append(f'<line class="strike" x1="{cx - 8}" y1="{y + 8}" x2="{cx + 8}" y2="{y - 8}"/>')
        if said is not None and kind in ACT_TYPES:
            label_y = SAID_Y - 12 - 12 * (i % 2)
            group.append(f'<text class="mark-label" x="{x(said)}" y="{label_y}">{escape(_short(event))}</text>')
        group.append("</g>")
        parts.append("".join(group))
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every text in it went through escape above)


SHORT_VERBS = {"Asserted": "asserts", "Denied": "denies", "Retracted": "retracts", "ActVoided": "void",
               "Reviewed": "review"}


def _short(event: Json) -> str:
    kind = event["type"]
    who = name_of(event.get("reviewer") if kind == "Reviewed" else event.get("party"))
    verb = SHORT_VERBS.get(kind, str(kind))
    return verb if kind == "ActVoided" else f"{verb} · {who}"


def _shape(kind: str, cx: float, y: int) -> str:
    if kind == "Denied":
        return f'<rect x="{cx - 6}" y="{y - 6}" width="12" height="12"/>'
    if kind == "Reviewed":
        return f'<polygon points="{cx},{y - 8} {cx + 8},{y} {cx},{y + 8} {cx - 8},{y}"/>'
    if kind in ("Retracted", "ActVoided"):
        return f'<path d="M{cx - 6} {y - 6} L{cx + 6} {y + 6} M{cx + 6} {y - 6} L{cx - 6} {y + 6}"/>'
    return f'<circle cx="{cx}" cy="{y}" r="6"/>'


