"""The only module that touches the `eventsourcing` library's private names and layouts.

Everywhere else the ledger uses the library through its public API. The hot paths (recording
an act, saving a group commit, reading claims and the log back from their stored JSON) need
a few of its internals; each is here, with the reason the public API does not do.
tests/domain/test_library.py checks every one of them against the installed library, so an
upgrade that changes one fails there, by name, and not somewhere in the ledger's behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import orjson
from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import BaseAggregate
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, Recording

E = TypeVar("E")
A = TypeVar("A", bound=BaseAggregate[Any])
Json = dict[str, Any]

# How the library's JSONTranscoder writes a value it has a transcoding for.
TYPE_KEY, DATA_KEY = "_type_", "_data_"


def new_event(
    event_class: type[E], originator_id: UUID, originator_version: int, timestamp: datetime,
    fields: Json, *, originator_topic: str | None = None,
) -> E:
    """An event of `event_class`, made as the library's mapper makes the events it reads back:
    `object.__new__`, then the instance's `__dict__` set whole.

    `fields` holds the class's own fields in its dataclass order; `originator_topic` is given
    for a created event. The `__dict__` is laid out in the dataclass's field order, which is
    the order the mapper writes the stored state in, so the stored bytes (and an event's
    equality) are those of the event the public constructor makes.

    Why: the frozen dataclass's `__init__` sets each field through `object.__setattr__` and
    checks the id's type in `__post_init__`; for values the ledger has just made and checked
    itself, that is the costliest step of recording an act.
    """
    state: Json = {"originator_id": originator_id, "originator_version": originator_version, "timestamp": timestamp}
    if originator_topic is not None:
        state["originator_topic"] = originator_topic
    state.update(fields)
    event = object.__new__(event_class)
    object.__setattr__(event, "__dict__", state)
    return event


def new_aggregate(aggregate_class: type[A], originator_id: UUID, version: int, timestamp: datetime) -> A:
    """An aggregate as the library's created event's `mutate` makes it: `__new__`, the base
    class's `__base_init__` (id, version, created and modified times, no pending events),
    then the class's own `__init__`, which takes no arguments.

    Why: the public ways (calling the class, which goes through `Aggregate._create`, or a
    created event's `mutate`) need a created event object first and match its fields to both
    `__init__` signatures by inspection. The ledger makes a claim either from an event it has
    just made (a registration) or straight from stored JSON, where no event object exists.
    """
    aggregate = aggregate_class.__new__(aggregate_class)
    aggregate.__base_init__(originator_id, version, timestamp)
    aggregate.__init__()  # type: ignore[misc]
    return aggregate


def save(application: Application[UUID], aggregates: Sequence[BaseAggregate[UUID]]) -> list[Recording[UUID]]:
    """`Application.save` for aggregates whose pending events are the library's own event
    classes: the same steps (`_record`, `_take_snapshots`, `_notify`, and the deprecated
    `notify`), in the same order.

    Why: `save` collects events through `ProcessingEvent.collect_events`, which checks each
    aggregate twice with `isinstance` against runtime-checkable Protocols; on Python 3.11 that
    costs about as much as making the aggregate's event, on every write of a group commit.
    """
    processing_event: ProcessingEvent[UUID] = ProcessingEvent()
    for aggregate in aggregates:
        processing_event.events.extend(aggregate.collect_events())
        processing_event.aggregates[aggregate.id] = aggregate
    recordings = application._record(processing_event)
    application._take_snapshots(processing_event)
    application._notify(recordings)
    application.notify(processing_event.events)
    return recordings


def read_plain_state(state: bytes) -> tuple[Json, str]:
    """A stored state the JSONTranscoder wrote (no cipher, no compressor): its fields, and
    its timestamp's ISO text, which the transcoder writes as `{"_type_": "datetime_iso",
    "_data_": <isoformat>}`. Raises what orjson raises for text that is not JSON, KeyError
    or TypeError for a state of another shape.

    Why: the library's own decoding goes through `json` with an object hook called back for
    every object, then builds the event; readers of the whole log (and a writer reading a
    claim it does not hold) need only a claim event's strings.
    """
    fields = orjson.loads(state)
    stamp = fields["timestamp"]
    if stamp[TYPE_KEY] != DatetimeAsISO.name:
        raise TypeError(f"its timestamp is a {stamp[TYPE_KEY]!r}, not a {DatetimeAsISO.name!r}")
    return fields, stamp[DATA_KEY]


_NATIVE_JSON = (str, int, float, list, tuple, dict)


class StateTranscoder(JSONTranscoder):
    """The library's JSON transcoder, byte for byte, that writes flat states with orjson.

    A claim event's stored state is flat: strings, and the timestamp in the transcoder's
    `{"_type_": ..., "_data_": <str>}` layout. For such a state orjson writes the library's
    bytes exactly (compact, keys in order, UTF-8, the same escapes); any other state goes to
    the library's encoder. Decoding is the library's.

    Why: `json` calls back into Python for the datetime of every event, and the transcoder
    cannot be told to write a layout it does not own; a fixture import stores a whole log.
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
                flat[key] = {TYPE_KEY: transcoding.name, DATA_KEY: encoded}
            else:
                try:  # keys that are not strings raise too: json writes them its own way
                    return orjson.dumps(obj if flat is None else flat)
                except orjson.JSONEncodeError:  # and a lone surrogate: the library raises its error
                    pass
        return super().encode(obj)

    @classmethod
    def like(cls, transcoder: JSONTranscoder) -> StateTranscoder:
        """One with the same transcodings as `transcoder`."""
        made = cls()
        made.types.update(transcoder.types)
        made.names.update(transcoder.names)
        return made
