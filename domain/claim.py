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
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder
from eventsourcing.utils import get_topic

from domain.canonical import GENESIS_HASH, body_text, canonical_bytes, canonical_json, event_body, text_hash
from domain.errors import ActIdConflict, InvalidInput, NotRetractable, NotVoidable, UnknownAct
from domain.fold import ActState, ClaimFold
from domain.values import format_instant, parse_instant

Json = dict[str, Any]


def new_act_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


class Claim(Aggregate):
    """A proposition, and what parties asserted, denied, retracted — and what was voided."""

    class Event(Aggregate.Event):
        """Every claim event stores its data exactly as hashed (JCS text), and its hashes."""

        TYPE: ClassVar[str] = ""
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
        TYPE = "ClaimRegistered"


    class Asserted(Event):
        TYPE = "Asserted"

    class Denied(Event):
        TYPE = "Denied"

    class Retracted(Event):
        TYPE = "Retracted"

    class ActVoided(Event):
        TYPE = "ActVoided"

    def __init__(self) -> None:
        self.fold = ClaimFold()

    @classmethod
    def register(
        cls, claim_id: UUID, *, statement: str, key: str, language: str, subjects: list[str],
        recorded_at: datetime | None = None,
    ) -> Claim:
        data = {"statement": statement, "key": key, "language": language, "subjects": subjects}
        when = _recorded_time(recorded_at, None)
        if type(claim_id) is not UUID:  # the library's checks and errors
            hashed = _hashed(cls.Registered, claim_id, 1, when, GENESIS_HASH, data)
            return cls._create(cls.Registered, id=claim_id, timestamp=when, **hashed)
        # What the library's _create and the created event's mutate do (see _trigger).
        event, body = _made(cls.Registered, claim_id, str(claim_id), 1, when, GENESIS_HASH, data)
        claim = cls.__new__(cls)
        claim.__base_init__(claim_id, 1, when)
        claim.__init__()  # type: ignore[misc]
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

    # Commands. Each returns the act as held, which is an older act when the command
    # is an idempotent retry of one already recorded.
    def record_stance(self, kind: str, data: Json, recorded_at: datetime | None = None) -> ActState:
        event_class = {"assert": Claim.Asserted, "deny": Claim.Denied}[kind]
        data = {**data, "act_id": data.get("act_id") or new_act_id(kind)}
        existing = self.check_new_act_id(event_class, data)
        if existing is not None:
            return existing
        return self._trigger(event_class, data, recorded_at)

    def retract(self, data: Json, recorded_at: datetime | None = None) -> ActState:
        data = {**data, "act_id": data.get("act_id") or new_act_id("retract")}
        existing = self.check_new_act_id(Claim.Retracted, data)
        if existing is not None:
            return existing
        self.check_retractable(data["retracts"], data["party"])
        return self._trigger(Claim.Retracted, data, recorded_at)

    def void(self, data: Json, recorded_at: datetime | None = None) -> ActState:
        data = {**data, "act_id": data.get("act_id") or new_act_id("void")}
        existing = self.check_new_act_id(Claim.ActVoided, data)
        if existing is not None:
            return existing
        self.check_voidable(data["voids"])
        return self._trigger(Claim.ActVoided, data, recorded_at)

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
        if not target.is_stance:
            raise NotRetractable(
                f"act {act_id!r} is a {target.type} act; only assertions and denials can be retracted"
            )
        if target.voided_by:
            raise NotRetractable(f"act {act_id!r} was voided by {target.voided_by!r}; it cannot be retracted")
        if target.retracted_by:
            raise NotRetractable(f"act {act_id!r} was already retracted by {target.retracted_by!r}")
        allowed = {p["id"] for p in (target.holder, target.party) if p}
        if party["id"] not in allowed:
            raise NotRetractable(
                f"party {party['id']!r} cannot retract act {act_id!r}: only its holder or the "
                f"party who said it may ({', '.join(sorted(allowed))})"
            )

    def check_voidable(self, act_id: str) -> None:
        target = self.fold.acts.get(act_id)
        if target is None:
            raise UnknownAct(f"claim {self.key!r} holds no act {act_id!r} to void")
        if target.type == "ActVoided":
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
    event = object.__new__(event_class)
    state: Json = {"originator_id": claim_id, "originator_version": version, "timestamp": when}
    if issubclass(event_class, Aggregate.Created):
        state["originator_topic"] = _CLAIM_TOPIC
    state.update(data_json=data_json, prev_hash=prev_hash, hash=digest)  # the dataclass's field order
    object.__setattr__(event, "__dict__", state)
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


def _hashed(
    event_class: type[Claim.Event], claim_id: UUID, version: int, when: datetime,
    prev_hash: str, data: Json,
) -> Json:
    data_json = canonical_bytes(data).decode()
    text = body_text(
        claim_id=str(claim_id), version=version, type=event_class.TYPE,
        recorded_at=format_instant(when), prev_hash=prev_hash, data_json=data_json,
    )
    return {"data_json": data_json, "prev_hash": prev_hash, "hash": text_hash(text)}


_CLAIM_TOPIC = get_topic(Claim)
_NATIVE_JSON = (str, int, float, list, tuple, dict)


class StateTranscoder(JSONTranscoder):
    """The library's JSON transcoder, byte for byte, that writes flat states with orjson.

    A claim event's stored state is flat: strings, and the timestamp as the registered
    transcoding's ``{"_type_": ..., "_data_": <str>}``. For such a state orjson writes
    the library's bytes exactly (compact, keys in order, UTF-8, the same escapes) at a
    fraction of the cost of ``json`` calling back into Python for the datetime; any
    other state goes to the library's encoder. Decoding is the library's.
    """

    def encode(self, obj: Any) -> bytes:
        if type(obj) is dict:
            flat: Json | None = None  # obj with its transcoded values, once there is one
            for key, value in obj.items():
                if type(value) is str:
                    continue
                transcoding = self.types.get(type(value))
                if transcoding is None or isinstance(value, _NATIVE_JSON):  # json would not call it
                    break
                encoded = value.isoformat() if type(transcoding) is DatetimeAsISO else transcoding.encode(value)
                if type(encoded) is not str:
                    break
                if flat is None:
                    flat = dict(obj)
                flat[key] = {"_type_": transcoding.name, "_data_": encoded}
            else:
                try:  # keys that are not strings raise too: json writes them its own way
                    return orjson.dumps(obj if flat is None else flat)
                except orjson.JSONEncodeError:  # and a lone surrogate: the library raises its error
                    pass
        return super().encode(obj)

    @classmethod
    def like(cls, transcoder: JSONTranscoder) -> StateTranscoder:
        """One with the same transcodings as ``transcoder``."""
        made = cls()
        made.types.update(transcoder.types)
        made.names.update(transcoder.names)
        return made
