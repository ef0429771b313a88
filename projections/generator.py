"""Synthetic fixtures: deterministic streams of realistic acts for benchmarks and load tests.

``generate(claims, seed)`` yields fixture lines (DESIGN §7) that always import cleanly:
every retraction is by the act's holder or speaker and targets a standing act, every
void targets an act not voided yet, and ``recorded_at`` only moves forward.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson

from domain.values import format_instant

Json = dict[str, Any]

FIRST_NAMES = (
    "Anna", "Boris", "Chiara", "Dmitry", "Elena", "Farid", "Greta", "Hiroshi", "Ines", "Jonas",
    "Katarina", "Luis", "Maria", "Nikolai", "Olga", "Pavel", "Quentin", "Rosa", "Sergei", "Tamar",
    "Ulrich", "Vera", "Wen", "Ximena", "Yusuf", "Zofia",
)
LAST_NAMES = (
    "Abramova", "Becker", "Costa", "Dubois", "Eriksen", "Fischer", "Gallo", "Horvat", "Ivanova",
    "Jensen", "Kowalski", "Lindqvist", "Moreau", "Novak", "Orlov", "Petrenko", "Quist", "Rossi",
    "Sokolov", "Tanaka", "Ullmann", "Volkova", "Weber", "Yilmaz", "Zeller",
)
ORGANISATIONS = (
    "Ministry of Energy", "Ministry of Health", "City Council", "Central Bank", "National Railways",
    "Port Authority", "Football Federation", "State Oil Company", "Opposition Alliance",
    "Teachers' Union", "Chamber of Commerce", "Space Agency", "Weather Service", "Supreme Court",
)
ROLES = ("spokesperson", "press secretary", "deputy minister", "chief of staff", "lawyer")
OUTLETS = (
    ("TASS", "tass.com"), ("Reuters", "reuters.com"), ("BBC", "bbc.co.uk"),
    ("The Moscow Times", "themoscowtimes.com"), ("Interfax", "interfax.com"),
    ("Associated Press", "apnews.com"), ("Agence France-Presse", "afp.com"),
    ("The Guardian", "theguardian.com"), ("Le Monde", "lemonde.fr"), ("Der Spiegel", "spiegel.de"),
    ("Kommersant", "kommersant.ru"), ("Meduza", "meduza.io"), ("Instagram", "instagram.com"),
    ("X", "x.com"),
)
CITIES = ("Moscow", "London", "Geneva", "Istanbul", "Vienna", "Helsinki", "Minsk", "Riga", "Sochi")
TOPICS = ("gas prices", "the rail strike", "the new stadium", "grain exports", "the election date",
          "the pension reform", "the harbour bridge", "the vaccine rollout", "the budget deficit")
STATEMENTS = (
    "{a} telephoned {b} on {day}",
    "{a} met {b} in {city} on {day}",
    "{org} will raise {topic} by {n}% before {year}",
    "{a} promised {b} a decision on {topic} by {day}",
    "{org} knew about problems with {topic} in {year}",
    "{a} resigned from {org} on {day}",
)
ASSERT_QUOTES = (
    "I can confirm that this happened, and I said so at the time.",
    "We have the documents that show it, and we will publish them.",
    "Yes, that is what was agreed between us.",
    "Everyone in the room heard it; there is no doubt about it.",
)
DENY_QUOTES = (
    "I can safely say that no such thing took place.",
    "These reports do not correspond to reality.",
    "No request was received through official channels.",
    "This is a fabrication from start to finish.",
)
RETRACT_REASONS = (
    "The earlier statement was based on a misunderstanding.",
    "New information has come to light; the statement is withdrawn.",
    "The speaker says they were misquoted and withdraws the remark.",
)
VOID_REASONS = (
    "Recorded against the wrong party; the party never said this.",
    "Duplicate entry from a wire service feed; the act was never made.",
    "Attributed to the wrong outlet's interview; removed by the desk editor.",
)


def slugify(text: str) -> str:
    out = "".join(c if c.isalnum() else "-" for c in text.lower().encode("ascii", "ignore").decode())
    return "-".join(part for part in out.split("-") if part)


@dataclass
class _Act:
    act_id: str
    kind: str
    party: Json
    holder: Json
    retracted: bool = False
    voided: bool = False
    target: _Act | None = None


@dataclass
class _ClaimPlan:
    key: str
    remaining: int
    acts: list[_Act] = field(default_factory=list)
    counter: int = 0

    def next_id(self, kind: str) -> str:
        self.counter += 1
        return f"{kind}-{self.counter}"


class _World:
    """The pools a synthetic history draws from: parties, spokespeople, outlets, the clock."""

    def __init__(self, rng: random.Random, claims: int) -> None:
        self.rng = rng
        size = min(2000, 30 + claims // 3)
        self.people: list[Json] = []
        for i in range(size):
            name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
            self.people.append({"id": f"{slugify(name)}-{i}", "name": name})
        self.organisations = [{"id": slugify(org), "name": org} for org in ORGANISATIONS]
        # Spokespeople speak on behalf of an organisation or a person; the stance is the principal's.
        self.spokespeople: list[tuple[Json, Json]] = []
        for i in range(max(5, size // 10)):
            principal = rng.choice(self.organisations + self.people[: size // 4 or 1])
            name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
            role = rng.choice(ROLES)
            self.spokespeople.append(({"id": f"{slugify(name)}-{slugify(role)}-{i}", "name": name}, principal))
        self.now = datetime(2015, 9, 1, 6, 0, tzinfo=UTC)

    def tick(self) -> str:
        """The next recorded_at: the ledger's clock only moves forward."""
        self.now += timedelta(seconds=self.rng.randint(1, 900), microseconds=self.rng.choice((0, 250_000)))
        return format_instant(self.now)

    def speaker(self) -> tuple[Json, Json | None]:
        if self.rng.random() < 0.2:
            spokesperson, principal = self.rng.choice(self.spokespeople)
            return spokesperson, principal
        return self.rng.choice(self.people + self.organisations), None

    def said_at(self) -> str | None:
        """Mostly a moment before recording, sometimes only the day, sometimes unknown."""
        roll = self.rng.random()
        if roll < 0.1:
            return None
        earlier = self.now - timedelta(hours=self.rng.randint(1, 24 * 30), minutes=self.rng.randint(0, 59))
        if roll < 0.3:
            return earlier.date().isoformat()
        if roll < 0.33:  # said long before anyone recorded it (archives, memoirs)
            return (earlier - timedelta(days=365 * self.rng.randint(2, 20))).date().isoformat()
        return format_instant(earlier.replace(second=0, microsecond=0))

    def source(self, slug: str) -> Json:
        outlet, domain = self.rng.choice(OUTLETS)
        day = (self.now - timedelta(days=self.rng.randint(0, 3))).date()
        source: Json = {"outlet": outlet, "published_at": day.isoformat()}
        if self.rng.random() < 0.8:
            source["url"] = f"https://www.{domain}/{day:%Y/%m/%d}/{slug[:60]}"
        if self.rng.random() < 0.5:
            source["title"] = f"{outlet}: {slug.replace('-', ' ')[:80]}"
        return source

    def statement(self, index: int) -> tuple[str, str, list[str]]:
        """A statement, its key, and its subjects (the parties and topic it names)."""
        a, b = self.rng.sample(self.people, 2)
        org, topic = self.rng.choice(ORGANISATIONS), self.rng.choice(TOPICS)
        day = (datetime(2014, 1, 1, tzinfo=UTC) + timedelta(days=self.rng.randint(0, 700))).date()
        template = self.rng.choice(STATEMENTS)
        text = template.format(
            a=a["name"], b=b["name"], day=f"{day.day} {day:%B %Y}", city=self.rng.choice(CITIES),
            org=org, topic=topic, n=self.rng.randint(2, 40), year=self.rng.randint(2012, 2020),
        )
        named = {"{a}": a["name"], "{b}": b["name"], "{org}": org, "{topic}": topic}
        subjects = [value for slot, value in named.items() if slot in template]
        return text, f"{slugify(text)[:100]}-{index}", subjects


def generate(claims: int, seed: int) -> Iterator[Json]:
    """Fixture lines for ``claims`` claims, the same for the same seed.

    Histories interleave across a window of open claims; most are short (1-8 acts)
    and about one in fifty is long (150-400 acts).
    """
    rng = random.Random(seed)  # noqa: S311 - synthetic test data, not secrets
    world = _World(rng, claims)
    open_claims: list[_ClaimPlan] = []
    registered = 0
    while registered < claims or open_claims:
        if registered < claims and (len(open_claims) < 40 or rng.random() < 0.05):
            statement, key, subjects = world.statement(registered)
            registered += 1
            long_history = rng.random() < 0.02
            plan = _ClaimPlan(key, rng.randint(150, 400) if long_history else rng.randint(1, 8))
            open_claims.append(plan)
            yield {
                "op": "register", "key": key, "statement": statement,
                "subjects": subjects,
                "recorded_at": world.tick(),
            }
            continue
        plan = rng.choice(open_claims)
        yield _next_act(world, plan)
        plan.remaining -= 1
        if plan.remaining <= 0:
            open_claims.remove(plan)


def _next_act(world: _World, plan: _ClaimPlan) -> Json:
    rng = world.rng
    retractable = [a for a in plan.acts if a.kind in ("assert", "deny") and not a.retracted and not a.voided]
    voidable = [a for a in plan.acts if not a.voided]
    roll = rng.random()
    if retractable and roll < 0.12:
        return _retraction(world, plan, rng.choice(retractable))
    if voidable and roll < 0.17:
        return _void(world, plan, rng.choice(voidable))
    kind = "assert" if rng.random() < 0.6 else "deny"
    party, principal = world.speaker()
    act = _Act(plan.next_id(kind), kind, party, principal or party)
    plan.acts.append(act)
    line: Json = {
        "op": kind, "claim": plan.key, "recorded_at": world.tick(), "act_id": act.act_id,
        "party": party, "said_at": world.said_at(), "source": world.source(plan.key),
        "quote": rng.choice(ASSERT_QUOTES if kind == "assert" else DENY_QUOTES),
    }
    if principal is not None:
        line["on_behalf_of"] = principal
    if rng.random() < 0.3:
        line["reported_via"] = [world.source(plan.key) for _ in range(rng.randint(1, 2))]
    if rng.random() < 0.1:
        line["note"] = "Translated from the original by the desk."
    return line


def _retraction(world: _World, plan: _ClaimPlan, target: _Act) -> Json:
    rng = world.rng
    party = target.holder if rng.random() < 0.6 else target.party
    act = _Act(plan.next_id("retract"), "retract", party, party, target=target)
    target.retracted = True
    plan.acts.append(act)
    line: Json = {
        "op": "retract", "claim": plan.key, "recorded_at": world.tick(), "retracts": target.act_id,
        "party": party, "said_at": world.said_at(), "reason": rng.choice(RETRACT_REASONS),
    }
    if rng.random() < 0.7:
        line["act_id"] = act.act_id
    else:  # the importer names it; nothing later refers to it
        act.voided = True
    if rng.random() < 0.5:
        line["source"] = world.source(plan.key)
    return line


def _void(world: _World, plan: _ClaimPlan, target: _Act) -> Json:
    rng = world.rng
    target.voided = True
    if target.kind == "retract" and target.target is not None:
        target.target.retracted = False  # a voided retraction never happened
    line: Json = {
        "op": "void", "claim": plan.key, "recorded_at": world.tick(), "voids": target.act_id,
        "reason": rng.choice(VOID_REASONS),
    }
    if rng.random() < 0.5:
        act = _Act(plan.next_id("void"), "void", target.party, target.holder)
        act.voided = True  # voids cannot be voided: never a target
        plan.acts.append(act)
        line["act_id"] = act.act_id
    return line


def write_fixture(target: str | Path | IO[str], lines: Iterable[Json]) -> int:
    """Write fixture lines as JSON Lines to a file or a text stream; returns how many."""
    if not isinstance(target, str | Path):
        count = 0
        for line in lines:
            target.write(orjson.dumps(line).decode())
            target.write("\n")
            count += 1
        return count
    with open(target, "w", encoding="utf-8") as out:
        return write_fixture(out, lines)
