"""The Claim aggregate: one claim and every act said about it, as hash-chained events.

Each command checks the claim's rules first (``check_…``), then triggers exactly one
event whose canonical body and hash are computed on the spot and stored with it.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID

import orjson
from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

from domain.canonical import GENESIS_HASH, body_text, canonical_json, event_body, text_hash
from domain.errors import ActIdConflict, InvalidInput, NotRetractable, NotVoidable, UnknownAct
from domain.fold import ActState, ClaimFold
from domain.library import new_aggregate, new_event
from domain.values import format_instant, parse_instant

Json = dict[str, Any]


def new_act_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


class Claim(Aggregate):
    """A proposition, and what parties asserted, denied, retracted — what fact-checkers
    concluded of it, and what was voided."""

    class Event(Aggregate.Event):
        """Every claim event stores its data exactly as hashed (JCS text), and its hashes.

        TYPE is the event's type in its body (and so in its hash); OP, the op that callers
        (HTTP, fixtures) name to record it."""

        TYPE: ClassVar[str] = ""
        OP: ClassVar[str] = ""
        data_json: str
        prev_hash: str
        hash: str

        @property
        def data(self) -> Json:
            return dict(orjson.loads(self.data_json))

        @property
        def recorded_at(self) -> str:
            return format_instant(self.timestamp)

        def body_text(self) -> str:
            """The body's JCS text: exactly the bytes its hash is over."""
            return body_text(
                claim_id=str(self.originator_id), version=self.originator_version, type=self.TYPE,
                recorded_at=self.recorded_at, prev_hash=self.prev_hash, data_json=self.data_json,
            )

        def body(self) -> Json:
            return event_body(
                claim_id=str(self.originator_id), version=self.originator_version,
                type=self.TYPE, recorded_at=self.recorded_at, prev_hash=self.prev_hash,
                data=self.data,
            )

        def apply(self, aggregate: Any) -> None:
            body = self.body()
            body["hash"] = self.hash
            aggregate.fold.apply(body)

    class Registered(Event, Aggregate.Created):
        TYPE, OP = "ClaimRegistered", "register"

    class Asserted(Event):
        TYPE, OP = "Asserted", "assert"

    class Denied(Event):
        TYPE, OP = "Denied", "deny"

    class Retracted(Event):
        TYPE, OP = "Retracted", "retract"

    class ActVoided(Event):
        TYPE, OP = "ActVoided", "void"

    class Reviewed(Event):
        TYPE, OP = "Reviewed", "review"

    def __init__(self) -> None:
        self.fold = ClaimFold()

    @classmethod
    def register(
        cls, claim_id: UUID, *, statement: str, key: str, language: str, subjects: list[str],
        recorded_at: datetime | None = None,
    ) -> Claim:
        if type(claim_id) is not UUID:
            raise TypeError(f"a claim's id is a uuid.UUID, not {type(claim_id).__name__}")
        data = {"statement": statement, "key": key, "language": language, "subjects": subjects}
        when = _recorded_time(recorded_at, None)
        # What the library's Aggregate._create and the created event's mutate do (see _trigger).
        event, body = _made(cls.Registered, claim_id, str(claim_id), 1, when, GENESIS_HASH, data)
        claim = new_aggregate(cls, claim_id, 1, when)
        claim.fold.apply(body)
        claim.pending_events.append(event)
        return claim

    # Reads of the folded state.
    @property
    def key(self) -> str:
        assert self.fold.key is not None
        return self.fold.key

    @property
    def statement(self) -> str:
        assert self.fold.statement is not None
        return self.fold.statement

    @property
    def last_hash(self) -> str:
        return self.fold.last_hash or GENESIS_HASH

    def act(self, act_id: str) -> ActState | None:
        return self.fold.acts.get(act_id)

    # The one command on a registered claim. It returns the act as held, which is an older
    # act when the command is an idempotent retry of one already recorded.
    def record_act(self, op: str, data: Json, recorded_at: datetime | None = None) -> ActState:
        """Record an assertion, denial, retraction, void or review (`op`) with its validated data."""
        event_class = ACT_EVENT_OF_OP[op]
        data = {**data, "act_id": data.get("act_id") or new_act_id(op)}
        existing = self.check_new_act_id(event_class, data)
        if existing is not None:
            return existing
        if event_class is Claim.Retracted:
            self.check_retractable(data["retracts"], data["party"])
        elif event_class is Claim.ActVoided:
            self.check_voidable(data["voids"])
        return self._trigger(event_class, data, recorded_at)

    # Rules.
    def check_new_act_id(self, event_class: type[Event], data: Json) -> ActState | None:
        """None for a new act id; the held act for an identical retry."""
        held = self.fold.acts.get(data["act_id"])
        if held is None:
            return None
        if held.type == event_class.TYPE and held.data == data:
            return held
        raise ActIdConflict(
            f"act_id {data['act_id']!r} is already used on this claim by a different "
            f"{held.type} act (version {held.version}); choose another act_id, or send "
            "exactly the same act to retry it"
        )

    def check_retractable(self, act_id: str, party: Json) -> None:
        target = self.fold.acts.get(act_id)
        if target is None:
            raise UnknownAct(f"claim {self.key!r} holds no act {act_id!r} to retract")
        if not target.is_stance and not target.is_review:
            raise NotRetractable(
                f"act {act_id!r} is a {target.type} act; only assertions, denials and reviews can be retracted"
            )
        if target.voided_by:
            raise NotRetractable(f"act {act_id!r} was voided by {target.voided_by!r}; it cannot be retracted")
        if target.retracted_by:
            raise NotRetractable(f"act {act_id!r} was already retracted by {target.retracted_by!r}")
        allowed = {p["id"] for p in (target.holder, target.party) if p}
        if target.is_review and party["id"] not in allowed:
            raise NotRetractable(
                f"party {party['id']!r} cannot retract review {act_id!r}: only its reviewer "
                f"({', '.join(sorted(allowed))}) may; staff void a review recorded in error"
            )
        if party["id"] not in allowed:
            raise NotRetractable(
                f"party {party['id']!r} cannot retract act {act_id!r}: only its holder or the "
                f"party who said it may ({', '.join(sorted(allowed))})"
            )

    def check_voidable(self, act_id: str) -> None:
        target = self.fold.acts.get(act_id)
        if target is None:
            raise UnknownAct(f"claim {self.key!r} holds no act {act_id!r} to void")
        if target.type == Claim.ActVoided.TYPE:
            raise NotVoidable(f"act {act_id!r} is itself a void; voids cannot be voided")
        if target.voided_by:
            raise NotVoidable(f"act {act_id!r} was already voided by {target.voided_by!r}")

    def _trigger(self, event_class: type[Event], data: Json, recorded_at: datetime | None) -> ActState:
        """Record the act as the claim's next event and fold it in.

        What the library's ``trigger_event`` and the event's ``apply`` would do, without
        their costs: the event is made the way the library makes events it reads back
        (its frozen dataclass ``__init__`` is the costliest part of an act), and the fold
        is given the data dict in hand rather than re-parsing the JCS text just made from
        it (when it is plain JSON, see ``canonical.canonical_json``). Replays from
        the store still go through ``Event.apply``.
        """
        fold = self.fold
        last = self.modified_on  # the previous event's time, as parsed from its recorded_at
        when = _recorded_time(recorded_at, fold.updated_at, last if last.tzinfo is UTC else None)
        version = self.version + 1
        event, body = _made(
            event_class, self.id, fold.claim_id or str(self.id), version, when,
            fold.last_hash or GENESIS_HASH, data,
        )
        fold.apply(body)
        self.version = version
        self.modified_on = when
        self.pending_events.append(event)
        return fold.acts[data["act_id"]]


def _made(
    event_class: type[Claim.Event], claim_id: UUID, claim_id_text: str, version: int, when: datetime,
    prev_hash: str, data: Json,
) -> tuple[Claim.Event, Json]:
    """A new event, made as the library makes events it reads back, and its body with its hash.

    The body's data is ``data`` itself when orjson wrote it as plain JSON (parsing its
    text would give it back), else the data parsed from the event's text.
    """
    recorded = format_instant(when)
    data_json, plain = canonical_json(data)
    digest = text_hash(body_text(
        claim_id=claim_id_text, version=version, type=event_class.TYPE, recorded_at=recorded,
        prev_hash=prev_hash, data_json=data_json,
    ))
    event = new_event(
        event_class, claim_id, version, when, {"data_json": data_json, "prev_hash": prev_hash, "hash": digest},
        originator_topic=_CLAIM_TOPIC if event_class is Claim.Registered else None,
    )
    body = {
        "claim_id": claim_id_text, "version": version, "type": event_class.TYPE, "recorded_at": recorded,
        "prev_hash": prev_hash, "data": data if plain else event.data, "hash": digest,
    }
    return event, body


def _recorded_time(
    requested: datetime | None, previous: str | None, last: datetime | None = None
) -> datetime:
    """The server clock, never before the claim's previous event (clocks step back).

    ``previous`` is the previous event's recorded_at; ``last``, when given, the same
    instant as a datetime (the aggregate's ``modified_on``).
    """
    if previous and last is None:
        last = parse_instant(previous)
    elif not previous:
        last = None
    if requested is not None:
        if requested.tzinfo is None:
            raise InvalidInput("recorded_at must carry a UTC offset", "recorded_at")
        requested = requested.astimezone(UTC)
        if last is not None and requested < last:
            raise InvalidInput(
                f"recorded_at {format_instant(requested)} is before the claim's previous event "
                f"({previous}); a claim's events are recorded in time order",
                "recorded_at",
            )
        return requested
    now = datetime.now(UTC)
    return now if last is None or now >= last else last


_CLAIM_TOPIC = get_topic(Claim)

# The one map between the ops callers name and the events that record them.
EVENT_CLASSES: tuple[type[Claim.Event], ...] = (
    Claim.Registered, Claim.Asserted, Claim.Denied, Claim.Retracted, Claim.ActVoided, Claim.Reviewed,
)
EVENT_OF_OP: dict[str, type[Claim.Event]] = {cls.OP: cls for cls in EVENT_CLASSES}
OP_OF_TYPE: dict[str, str] = {cls.TYPE: cls.OP for cls in EVENT_CLASSES}
ACT_EVENT_OF_OP = {op: cls for op, cls in EVENT_OF_OP.items() if cls is not Claim.Registered}
