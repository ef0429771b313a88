"""The Ledger application: the commands users call, persisted with `eventsourcing`."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol, cast, runtime_checkable
from uuid import UUID

import orjson
from eventsourcing.application import AggregateNotFoundError, Application, Cache, LRUCache
from eventsourcing.persistence import IntegrityError, Notification, PersistenceError, Recording, StoredEvent
from eventsourcing.utils import get_topic

from domain import library
from domain.canonical import body_text
from domain.claim import ACT_EVENT_OF_OP, EVENT_CLASSES, Claim
from domain.commands import Command, RecordAct, RegisterClaim
from domain.errors import (
    KeyConflict,
    LedgerError,
    StoreUnavailable,
    UnknownClaim,
    VersionMismatch,
)
from domain.fold import ActState
from domain.values import claim_id_for_key, claim_ids_for_ref, format_instant, instant_of

Json = dict[str, Any]
CONFLICT_RETRIES = 20
FOLLOW_PAGE = 1000  # log entries the claim cache reads at a time to catch up
FOLLOW_MAX = 20_000  # further behind than this, the cache starts afresh


class UndecodableEvent(LedgerError):
    """A stored event the ledger's own event classes cannot read back."""

    code = "undecodable-event"
    title = "Undecodable event"


class LoggedEvent(NamedTuple):
    """One event as stored, at its position in the log: what readers of the log need.

    A named tuple: whole-log readers make millions, and it is made several times faster
    than a frozen dataclass."""

    position: int
    claim_id: str
    version: int
    type: str
    recorded_at: str
    prev_hash: str
    hash: str
    data_json: str

    def body_text(self) -> str:
        return body_text(
            claim_id=self.claim_id, version=self.version, type=self.type, recorded_at=self.recorded_at,
            prev_hash=self.prev_hash, data_json=self.data_json,
        )

    def body(self) -> Json:
        """The event's body with its hash, as the fold takes it."""
        return {
            "claim_id": self.claim_id, "version": self.version, "type": self.type,
            "recorded_at": self.recorded_at, "prev_hash": self.prev_hash, "data": orjson.loads(self.data_json),
            "hash": self.hash,
        }


EVENT_TYPES = {get_topic(cls): cls.TYPE for cls in EVENT_CLASSES}  # by stored topic

# The library's settings the claim cache relies on: commands load claims from a cache that
# is fast-forwarded with any newer events from the store and deep-copied, so a refused or
# failed batch never leaves a half-changed claim behind, and a long claim is not replayed
# per write. Its size, AGGREGATE_CACHE_MAXSIZE, comes with the store's settings.
CLAIM_CACHE_ENV = {"AGGREGATE_CACHE_FASTFORWARD": "y", "DEEPCOPY_FROM_AGGREGATE_CACHE": "y"}


@runtime_checkable
class SelectsOriginators(Protocol):
    """A recorder that reads the events of several originators in one query."""

    def select_originators(self, originator_ids: Sequence[UUID]) -> Sequence[Mapping[str, Any]]:
        """Rows of originator_id, originator_version, topic and state, by originator, then version."""
        ...


@runtime_checkable
class FindsPositions(Protocol):
    """A recorder that finds where one event of an originator is in the log."""

    def position_of(self, originator_id: UUID, originator_version: int) -> int | None:
        """The notification id of the originator's event at that version; None when there is none."""
        ...


@dataclass(frozen=True)
class Outcome:
    """What one command did: the event that holds it, or the error that refused it."""

    claim_id: UUID | None = None
    key: str | None = None
    act_id: str | None = None
    version: int | None = None
    position: int | None = None
    created: bool = False
    error: LedgerError | None = None

    def unwrap(self) -> Outcome:
        if self.error is not None:
            raise self.error
        return self


class Ledger(Application[UUID]):
    """Registers claims and records acts on them, many commands per transaction."""

    name = "Ledger"

    def __init__(self, env: Mapping[str, str]) -> None:
        """`env`: the library's settings (its persistence module and their settings, the
        claim cache's AGGREGATE_CACHE_MAXSIZE), as the store makes them for a database."""
        super().__init__(env={**CLAIM_CACHE_ENV, **env})
        self._cache_lock = threading.Lock()
        self._execute_lock = threading.Lock()
        self._followed: int | None = None  # the claim cache holds every event up to this position
        # Claims read together (see _read_claims), where the stored state is plain JSON.
        self._reads_many = (isinstance(self.recorder, SelectsOriginators)
                            and self.mapper.cipher is None and self.mapper.compressor is None)

    # One-command conveniences (tests, CLI); errors are raised.
    def register_claim(self, statement: str, key: str | None = None, **fields: Any) -> Outcome:
        return self.execute_one(RegisterClaim.build({"statement": statement, "key": key, **fields}))

    def assert_claim(self, claim: str, **fields: Any) -> Outcome:
        return self.execute_one(RecordAct.build("assert", claim, fields))

    def deny_claim(self, claim: str, **fields: Any) -> Outcome:
        return self.execute_one(RecordAct.build("deny", claim, fields))

    def retract_act(self, claim: str, **fields: Any) -> Outcome:
        return self.execute_one(RecordAct.build("retract", claim, fields))

    def void_act(self, claim: str, **fields: Any) -> Outcome:
        return self.execute_one(RecordAct.build("void", claim, fields))

    def execute_one(self, command: Command) -> Outcome:
        return self.execute([command])[0].unwrap()

    def execute(self, commands: Sequence[Command]) -> list[Outcome]:
        """Apply the commands in order and save every resulting event in one transaction.

        A command that breaks a rule fails alone; later commands see the effects of
        earlier ones. When another writer got to a claim first, everything is reloaded
        and applied again, so no command is lost to a race.
        """
        with self._execute_lock:  # commands change the cached claims: one batch at a time
            return self._execute(commands)

    def _execute(self, commands: Sequence[Command]) -> list[Outcome]:
        for attempt in range(CONFLICT_RETRIES):
            batch = ClaimBatch(self)
            try:
                batch.prefetch(commands)
                outcomes = [batch.apply(command) for command in commands]
            except BaseException:
                self._forget_claims(list(batch.claims))  # a half-applied command may have changed one
                raise
            touched = [claim for claim in batch.claims.values() if claim is not None and claim.pending_events]
            if not touched:
                self._cache_claims(batch.loaded())
                return outcomes
            try:
                recordings = self._save_claims(touched)
            except IntegrityError:
                self._forget_claims([claim.id for claim in touched])
                time.sleep(0.001 * (attempt + 1))
                continue
            except BaseException as e:
                self._forget_claims([claim.id for claim in touched])
                if isinstance(e, PersistenceError):
                    raise StoreUnavailable(f"the event store could not save: {e}") from e
                raise
            self._cache_claims(batch.loaded(), recordings)
            positions = {
                (r.domain_event.originator_id, r.domain_event.originator_version): r.notification.id
                for r in recordings
            }
            return [
                o if o.error or not o.created else _with_position(o, positions)
                for o in outcomes
            ]
        raise StoreUnavailable(
            f"gave up after {CONFLICT_RETRIES} attempts: other writers kept changing the same claims"
        )

    # Reads of the event store (time travel is answered by the projections).
    def resolve(self, ref: str) -> UUID:
        """A claim's id from its UUID or its key (see `claim_ids_for_ref`)."""
        for claim_id in claim_ids_for_ref(ref):
            if self._exists(claim_id):
                return claim_id
        raise UnknownClaim(f"no claim has the id or key {ref!r:.130}")

    def get_claim(self, ref: str, version: int | None = None) -> Claim:
        claim_id = self.resolve(ref)
        try:
            with self._execute_lock:  # the library brings cached claims up to date in place
                return self.repository.get(claim_id, version=version)  # type: ignore[no-any-return]
        except AggregateNotFoundError:
            raise UnknownClaim(f"no claim has the id or key {ref!r:.130}") from None

    def read_log(self, after: int, limit: int) -> list[LoggedEvent]:
        """Up to `limit` events after position `after`, in log order."""
        try:
            notifications = self.recorder.select_notifications(after + 1, limit)
        except PersistenceError as e:
            raise StoreUnavailable(f"the event store is unreachable: {e}") from e
        return [
            self.decode_stored(n.id, str(n.originator_id), n.originator_version, n.topic, n.state)
            for n in notifications
        ]

    def decode_stored(self, position: int, claim_id: str, version: int, topic: str, state: bytes) -> LoggedEvent:
        """A stored event's fields; UndecodableEvent when they are not a claim event's.

        Readers of the whole log spend most of their time decoding: events stored as
        plain JSON are read straight from it, anything else (a cipher or compressor
        configured) goes through the library's mapper.
        """
        kind = EVENT_TYPES.get(topic)
        if kind is None:
            raise UndecodableEvent(f"its topic {topic!r} is not one of the claim events")
        if self.mapper.cipher is not None or self.mapper.compressor is not None:
            try:
                event: Claim.Event = self.mapper.to_domain_event(  # type: ignore[assignment]
                    StoredEvent(originator_id=UUID(claim_id), originator_version=version, topic=topic, state=state)
                )
            except Exception as e:  # the library raises whatever its decoders raise
                raise UndecodableEvent(f"the library cannot decode it: {e}") from None
            return LoggedEvent(position, claim_id, version, kind, event.recorded_at, event.prev_hash,
                               event.hash, event.data_json)
        try:
            fields, stamp = library.read_plain_state(state)
            recorded_at = (stamp[:-6] + "Z" if stamp.endswith("+00:00")
                           else format_instant(datetime.fromisoformat(stamp)))
            prev_hash, digest, data_json = fields["prev_hash"], fields["hash"], fields["data_json"]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, LedgerError) as e:
            raise UndecodableEvent(f"its stored state is not a claim event's ({type(e).__name__}: {e})") from None
        if not (isinstance(prev_hash, str) and isinstance(digest, str) and isinstance(data_json, str)):
            raise UndecodableEvent("its prev_hash, hash and data_json are not all strings")
        return LoggedEvent(position, claim_id, version, kind, recorded_at, prev_hash, digest, data_json)

    # The claim cache. Commands change the cached claims themselves, one batch at a time:
    # copying a claim costs as much as its acts, so a long claim would still cost a write
    # time in proportion to its history. Commands check their rules before they change
    # anything, and a claim that a failed batch changed is dropped from the cache (read
    # afresh next time), so the cache never holds what the store does not. Before each
    # batch the cache follows the log from where it last looked (one query, whoever
    # wrote), so every cached claim holds every event up to `_followed`: no query per claim
    # to bring it up to date. The log is in commit order on both backends (the library
    # makes writers take turns), so nothing can appear later behind the point followed to.
    def load_claims(self, claim_ids: Sequence[UUID]) -> dict[UUID, Claim | None]:
        """The claims (None: no such claim), up to date with the store, for `execute` to change."""
        cache = self.repository.cache
        if cache is None or not self.repository.fastforward or self.snapshots is not None:
            return {claim_id: self._get_or_none(claim_id) for claim_id in claim_ids}
        if not claim_ids:
            return {}
        claims: dict[UUID, Claim | None] = {}
        with self._cache_lock:
            self._follow_log(cache)
            cache = cast(Cache[UUID, Any], self.repository.cache)  # a new one, when it started afresh
            missing = []
            for claim_id in claim_ids:
                try:
                    claims[claim_id] = cast(Claim, cache.get(claim_id))
                except KeyError:  # read from the store (cached once the batch commits)
                    missing.append(claim_id)
            claims.update(self._read_claims(missing))
        return claims

    def _follow_log(self, cache: Cache[UUID, Any]) -> None:
        if self._followed is None:
            self._start_cache_afresh(cache)
            self._followed = self.recorder.max_notification_id() or 0
            return
        # Most batches find nothing new: asking for the log's end costs the library a
        # prepared statement, where selecting notifications composes its SQL every time.
        if (self.recorder.max_notification_id() or 0) <= self._followed:
            return
        seen = 0
        while True:
            notifications = self.recorder.select_notifications(self._followed + 1, FOLLOW_PAGE)
            for notification in notifications:
                self._fast_forward(cache, notification)
            if notifications:
                self._followed = notifications[-1].id
            seen += len(notifications)
            if len(notifications) < FOLLOW_PAGE:
                return
            if seen >= FOLLOW_MAX:  # a bulk import, say: start the cache afresh
                self._start_cache_afresh(cache)
                self._followed = self.recorder.max_notification_id() or 0
                return

    def _start_cache_afresh(self, cache: Cache[UUID, Any]) -> None:
        """An empty cache of the same size in its place (`LRUCache.clear` only unlinks its
        entries: they would still be found)."""
        self.repository.cache = LRUCache(cache.maxsize) if isinstance(cache, LRUCache) else Cache()

    def _fast_forward(self, cache: Cache[UUID, Any], notification: Notification) -> None:
        try:
            claim = cache.get(notification.originator_id)  # type: ignore[arg-type]
        except KeyError:
            return
        if notification.originator_version <= claim.version:  # this process's own write
            return
        try:
            if notification.originator_version != claim.version + 1:
                raise ValueError("a gap in the claim's versions")
            _fold_stored(claim, self.decode_stored(
                notification.id, str(notification.originator_id), notification.originator_version,
                notification.topic, notification.state,
            ))
        except Exception:  # whatever it is, the store still has it: read the claim afresh
            cache.get(notification.originator_id, evict=True)  # type: ignore[arg-type]

    def _cache_claims(self, claims: Sequence[Claim], saved: Sequence[Recording[UUID]] = ()) -> None:
        """Keep claims that match the store (committed, nothing pending) for the next commands.

        When the batch just `saved` took the log positions right after the point followed
        to, nothing else was written in between: the cache follows the log past them
        without reading back this batch's own events."""
        cache = self.repository.cache
        if cache is None:
            return
        with self._cache_lock:
            ids = sorted(r.notification.id for r in saved)
            if self._followed is not None and ids and ids[0] == self._followed + 1 and ids[-1] == self._followed + len(ids):
                self._followed = ids[-1]
            for claim in claims:
                if claim.pending_events:
                    continue
                try:
                    held = cache.get(claim.id)
                except KeyError:
                    held = None
                if held is None or held.version <= claim.version:
                    cache.put(claim.id, claim)

    def _forget_claims(self, claim_ids: Sequence[UUID]) -> None:
        """Claims another writer got to first (or a failed save): read them afresh next time."""
        cache = self.repository.cache
        if cache is None:
            return
        with self._cache_lock:
            for claim_id in claim_ids:
                with contextlib.suppress(KeyError):
                    cache.get(claim_id, evict=True)

    def _save_claims(self, claims: Sequence[Claim]) -> list[Recording[UUID]]:
        return library.save(self, claims)

    def _get_or_none(self, claim_id: UUID) -> Claim | None:
        """The claim read whole from the store (for a batch to change; not cached by this)."""
        if self.mapper.cipher is not None or self.mapper.compressor is not None:
            try:
                return self.repository.get(claim_id, projector_func=_project)  # type: ignore[no-any-return]
            except AggregateNotFoundError:
                return None
        # A claim that another writer got to first is read again under load.
        stored = self.recorder.select_events(claim_id)
        return self.claim_from_stored(claim_id, [(e.originator_version, e.topic, e.state) for e in stored])

    def _read_claims(self, claim_ids: Sequence[UUID]) -> dict[UUID, Claim | None]:
        """Claims read whole from the store: on PostgreSQL, several in one query (a batch
        of writes to claims this writer has not cached yet would otherwise wait for one
        round trip per claim, one after another)."""
        if len(claim_ids) < 2 or not self._reads_many:
            return {claim_id: self._get_or_none(claim_id) for claim_id in claim_ids}
        rows = cast(SelectsOriginators, self.recorder).select_originators(claim_ids)
        stored: dict[UUID, list[tuple[int, str, bytes]]] = {claim_id: [] for claim_id in claim_ids}
        for row in rows:
            stored[row["originator_id"]].append((row["originator_version"], row["topic"], bytes(row["state"])))
        return {claim_id: self.claim_from_stored(claim_id, events) for claim_id, events in stored.items()}

    def claim_from_stored(self, claim_id: UUID, stored: Sequence[tuple[int, str, bytes]]) -> Claim | None:
        """A claim folded from its stored events, (version, topic, state) in version order;
        None when there are none. The claim is the one the library's repository rebuilds.

        The repository would decode each event with its JSON transcoder and build it as an
        object before folding it; a claim is folded straight from its stored JSON instead,
        as the projections read it."""
        if not stored:
            return None
        claim: Claim | None = None
        ref = str(claim_id)
        for version, (stored_version, topic, state) in enumerate(stored, start=1):
            if stored_version != version:
                raise UndecodableEvent(f"claim {ref} has version {stored_version} where {version} belongs")
            logged = self.decode_stored(0, ref, version, topic, state)
            if claim is None:
                claim = library.new_aggregate(Claim, claim_id, 1, instant_of(logged.recorded_at))
            _fold_stored(claim, logged)
        return claim

    def max_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    def position_of(self, claim_id: UUID, version: int) -> int | None:
        """Where a claim's event at `version` is in the log, read from the event store;
        None when the store has no such event (or its recorder cannot say)."""
        if not isinstance(self.recorder, FindsPositions):
            return None
        return self.recorder.position_of(claim_id, version)

    def _exists(self, claim_id: UUID) -> bool:
        return bool(self.recorder.select_events(claim_id, limit=1))


def _fold_stored(claim: Claim, logged: LoggedEvent) -> None:
    """What the library's `mutate` does with the decoded event, done from its stored JSON:
    building the event as an object would cost more than folding it."""
    claim.fold.apply(logged.body())
    claim.version = logged.version
    claim.modified_on = instant_of(logged.recorded_at)


def _project(claim: Any, events: Iterable[Any]) -> Any:
    """The library's projector without its per-event check against a runtime Protocol
    (an isinstance that costs more than applying a claim event)."""
    for event in events:
        claim = event.mutate(claim)
    return claim


def _with_position(outcome: Outcome, positions: dict[tuple[UUID, int], int]) -> Outcome:
    position = positions.get((outcome.claim_id, outcome.version))  # type: ignore[arg-type]
    return Outcome(
        claim_id=outcome.claim_id, key=outcome.key, act_id=outcome.act_id,
        version=outcome.version, position=position, created=True,
    )


class ClaimBatch:
    """The claims one batch of commands touches, loaded once and changed in memory.

    Commands are applied in order, each by the claim's own rules; a command that breaks
    one fails alone. Claims the batch does not hold yet are read by `read_claims`, from the
    Ledger's claim cache; a subclass reads them from elsewhere (the fixture importer, inside
    its own transaction).
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.claims: dict[UUID, Claim | None] = {}

    def read_claims(self, claim_ids: Sequence[UUID]) -> dict[UUID, Claim | None]:
        """The claims with these ids (None: no such claim), up to date, to change."""
        return self.ledger.load_claims(claim_ids)

    def prefetch(self, commands: Iterable[Command]) -> None:
        """Read every claim the commands may name, at once (a ref may be an id or a key)."""
        wanted = {claim_id: None for command in commands for claim_id in _named_ids(command)}
        missing = [claim_id for claim_id in wanted if claim_id not in self.claims]
        if not missing:
            return
        try:
            self.claims.update(self.read_claims(missing))
        except PersistenceError as e:
            raise StoreUnavailable(f"the event store could not be read: {e}") from e

    def loaded(self) -> list[Claim]:
        return [claim for claim in self.claims.values() if claim is not None]

    def load(self, claim_id: UUID) -> Claim | None:
        if claim_id not in self.claims:
            self.claims.update(self.read_claims([claim_id]))
        return self.claims[claim_id]

    def resolve(self, ref: str) -> Claim:
        for claim_id in claim_ids_for_ref(ref):
            claim = self.load(claim_id)
            if claim is not None:
                return claim
        raise UnknownClaim(f"no claim has the id or key {ref!r:.130}; register it first")

    def apply(self, command: Command) -> Outcome:
        try:
            if isinstance(command, RegisterClaim):
                return self.register(command)
            return self.record(command)
        except LedgerError as e:
            return Outcome(error=e)
        except PersistenceError as e:
            raise StoreUnavailable(f"the event store could not be read: {e}") from e

    def register(self, command: RegisterClaim) -> Outcome:
        claim_id = claim_id_for_key(command.key)
        claim = self.load(claim_id)
        if claim is not None:
            if claim.statement != command.statement:
                raise KeyConflict(
                    f"key {command.key!r} already names the claim {claim.statement!r:.200}; "
                    "register this statement under another key"
                )
            return Outcome(claim_id=claim_id, key=command.key, version=1, created=False)
        claim = Claim.register(
            claim_id, statement=command.statement, key=command.key, language=command.language,
            subjects=list(command.subjects), recorded_at=command.recorded_at,
        )
        self.claims[claim_id] = claim
        return Outcome(claim_id=claim_id, key=command.key, version=1, created=True)

    def record(self, command: RecordAct) -> Outcome:
        claim = self.resolve(command.claim)
        if command.expected_version is not None and command.expected_version != claim.version:
            held = _retried_act(claim, command)
            if held is None:
                raise VersionMismatch(command.expected_version, claim.version)
            # The very act this command made when the claim was at the version it names:
            # a retry (say after a lost answer), answered as any idempotent retry is.
            return Outcome(claim_id=claim.id, key=claim.key, act_id=held.act_id, version=held.version, created=False)
        before = claim.version
        act = claim.record_act(command.op, command.data, command.recorded_at)
        return Outcome(
            claim_id=claim.id, key=claim.key, act_id=act.act_id, version=act.version,
            created=act.version > before,
        )


def _named_ids(command: Command) -> tuple[UUID, ...]:
    """The ids of the claims a command may name, as `ClaimBatch` tries them."""
    if isinstance(command, RegisterClaim):
        return (claim_id_for_key(command.key),)
    return claim_ids_for_ref(command.claim)


def _retried_act(claim: Claim, command: RecordAct) -> ActState | None:
    """The act an If-Match command recorded, when it is sent again exactly: same act_id and
    content, recorded right after the version the command names; else None."""
    act_id = command.data.get("act_id")
    held = claim.act(act_id) if act_id else None
    if held is None or held.version != (command.expected_version or 0) + 1:
        return None
    if held.type != ACT_EVENT_OF_OP[command.op].TYPE or held.data != command.data:
        return None
    return held

