"""One follower per API process: new projected events and claim changes, fanned out to the
process's Server-Sent Event streams (api/routes/streams.py).

    follower = Follower(runtime.read, runtime.ledger, limits)
    await follower.start()           # on the event loop that serves the streams
    sub = follower.subscribe(EVENTS, StreamFilter(), after=0)
    ...                              # the stream reads sub (see `Subscriber`)
    follower.unsubscribe(sub)
    await follower.close()

What a stream sends comes from the read models, never from the raw log: the event feed is
the projections' history table, and a claim's change is its stored view, so a stream sends
only what a GET already answers. The projection engine applies the log in order, in
batches that each move its tracking position (projections/engine.py; a PostgreSQL id that
commits late is waited for there, and a gap passed there is final), so every history row
at or below the tracking position is there for good, and none above it is yet.

The follower's thread reads the tracking position: on SQLite every `poll` seconds; on
PostgreSQL it LISTENs for the ledger's NOTIFY (the engine's own waker) and, once woken,
polls at the same pace for a second, until the engine has applied what was written. When
the position moves from `lo` to `hi`, it reads what changed in (lo, hi] once, encodes each
item once as the bytes of its SSE event, and hands the batch to the event loop, where each
subscriber takes the items its filter accepts into its own bounded queue. Nothing is read
per subscriber while it keeps up.

A subscriber that is behind (a new one, one that missed a batch, or a batch too large to
hand on) reads the store itself, a page at a time, at the pace its client reads
(`catch_up_events`, `catch_up_claims`), then takes the live batches again from where its
pages ended. A subscriber whose queue fills (its client does not read) is dropped: its
queue is freed and its stream ends with `event: dropped`, naming the last event it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from domain.ledger import Ledger
from projections.engine import Waker
from projections.queries import ReadModels

log = logging.getLogger("claims.streams")

EVENTS = "events"
CLAIMS = "claims"
KINDS = (EVENTS, CLAIMS)

PAGE = 1000  # events per page of a catch-up (and per chunk sent)
CLAIM_SPAN = 2000  # log positions whose claim changes one catch-up page reads
LIVE_SPAN = 5000  # positions a live batch reads at most (and no more than a buffer holds);
# past that, subscribers catch up themselves
BUSY_SECONDS = 1.0  # PostgreSQL: how long after a NOTIFY the follower keeps polling
# The pace of batches follows the event loop: when a batch waited that long for the loop
# (sending the last batches to many streams), the next comes at least this many times later,
# so that a busy process sends fewer, larger chunks (each send to each stream costs a system
# call), up to MAX_SPACING.
LOOP_SPACING = 2.0
MAX_SPACING = 0.1
LISTEN_TIMEOUT = 1.0  # PostgreSQL: the poll that backs LISTEN up while the stream is idle
CLAIM_EVENT = b"claim"


@dataclass(frozen=True, slots=True)
class Item:
    """One event of a stream, encoded once for every subscriber, with what filters look at."""

    position: int  # the SSE id: the event's log position, or the last position a view reflects
    claim_id: str
    chunk: bytes  # the whole SSE event: id, event and data lines, and the blank line
    status: str | None = None  # claims: the view's status, parties and subjects
    parties: frozenset[str] = frozenset()
    subjects: frozenset[str] = frozenset()


def sse_event(position: int, event: bytes, data: bytes) -> bytes:
    """An SSE event. `data` is compact JSON: one line, as SSE needs."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (position, event, data)


def event_items(rows: Iterable[tuple[int, str, str, str, str]]) -> list[Item]:
    """Feed rows (`ReadModels.feed_rows`: the items `GET /v1/events` serves, as stored) as
    stream events: `event:` the event's type, `data:` the item `{position, hash, body}`, the
    body's stored JSON text as it is (one line: compact JSON)."""
    return [
        Item(position, claim_id, b"id: %d\nevent: %s\ndata: {\"position\":%d,\"hash\":\"%s\",\"body\":%s}\n\n" % (
            position, kind.encode(), position, digest.encode(), body.encode()))
        for position, digest, body, claim_id, kind in rows
    ]


def claim_item(claim_id: str, position: int, view: str) -> Item:
    """A claim's stored view (the JSON `GET /v1/claims/{id}` serves, byte for byte) as a stream
    event, with the fields the filters of `GET /v1/claims` look at: its status, the parties
    that hold or voiced its stances, and its subjects."""
    parsed = orjson.loads(view)
    parties = frozenset(
        party for stance in parsed["stances"] for party in (stance["holder"]["id"], stance["party"]["id"])
    )
    return Item(position, claim_id, sse_event(position, CLAIM_EVENT, view.encode()), parsed["status"], parties,
                frozenset(parsed["subjects"]))


def claim_changes(read: ReadModels, lo: int, hi: int) -> list[Item]:
    """The claims that changed at a log position in (lo, hi], each once, with its stored view,
    in the order of the last position each view reflects.

    Derived from the projected history rows in (lo, hi]: a claim's view is taken when the
    last position it reflects is in the range too. A claim whose view has moved past `hi`
    (the engine applied more since `hi` was read) has history rows past `hi`, and is taken
    with the range that holds its last one, so no change is skipped and the ids a stream
    sends only grow. One statement: one snapshot of the read store.
    """
    t = read.tables
    with read.store.reading() as cur:
        rows = cur.execute(
            f"SELECT c.claim_id, c.position, c.view FROM {t.claims} c WHERE c.claim_id IN"
            f" (SELECT h.claim_id FROM {t.history} h WHERE h.position > ? AND h.position <= ?)"
            " AND c.position > ? AND c.position <= ? ORDER BY c.position",
            (lo, hi, lo, hi),
        ).fetchall()
    return [claim_item(str(cid), int(position), str(view)) for cid, position, view in rows]


@dataclass(frozen=True)
class StreamFilter:
    """Which items a stream sends: all of them, or those of some claims (`claim_ids`), and
    for the claim stream those whose view matches `status`, `party` and `subject` as
    `GET /v1/claims` means them (a party holds or voiced one of the claim's stances; a
    subject is one of the claim's subjects)."""

    claim_ids: frozenset[str] | None = None
    status: str | None = None
    party: str | None = None
    subject: str | None = None

    @property
    def everything(self) -> bool:
        return self.claim_ids is None and self.status is None and self.party is None and self.subject is None

    def accepts(self, item: Item) -> bool:
        return (
            (self.claim_ids is None or item.claim_id in self.claim_ids)
            and (self.status is None or item.status == self.status)
            and (self.party is None or self.party in item.parties)
            and (self.subject is None or self.subject in item.subjects)
        )

    def select(self, items: Iterable[Item]) -> list[Item]:
        return list(items) if self.everything else [item for item in items if self.accepts(item)]


@dataclass(frozen=True)
class StreamLimits:
    """How many streams a process serves, and how much it keeps for one that does not read."""

    max_subscribers: int = 1000
    buffer_events: int = 1000
    buffer_bytes: int = 1024 * 1024
    poll: float = 0.05  # seconds


@dataclass(frozen=True)
class Page:
    """What a subscriber read from the store itself: the events to send and where it got to."""

    items: list[Item]
    position: int  # every item at or below it has been read
    more: bool  # the store had more than one page: read on


def catch_up_events(read: ReadModels, after: int, only: StreamFilter) -> Page:
    """One page of the feed after `after` (blocking: run it in a thread)."""
    projected = read.position()  # first: every history row at or below it is there to read
    feed = read.feed_rows(after, PAGE)
    more = len(feed) == PAGE
    last = feed[-1][0] if feed else after
    return Page(only.select(event_items(feed)), last if more else max(last, projected, after), more)


def catch_up_claims(read: ReadModels, after: int, only: StreamFilter) -> Page:
    """The claims that changed in the next CLAIM_SPAN positions after `after` (blocking)."""
    projected = read.position()
    hi = min(projected, after + CLAIM_SPAN)
    if hi <= after:
        return Page([], after, False)
    return Page(only.select(claim_changes(read, after, hi)), hi, hi < projected)


@dataclass(eq=False)
class Subscriber:
    """One open stream, as the follower and the stream's response share it (on the event loop).

    `position`: the stream has every item at or below it, sent or queued (ids above it are
    still to come). `sent`: the id of the last event handed to the client. `behind`: the
    stream reads the store itself (`catch_up_*`) until it has caught up with the follower.
    """

    kind: str
    only: StreamFilter
    position: int
    sent: int
    limits: StreamLimits
    behind: bool = True
    sending: bool = False  # the stream waits for its client to take what it sent last
    dropped: bool = False
    closed: bool = False
    queue: deque[Item] = field(default_factory=deque)
    queued_bytes: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, lo: int, hi: int, items: list[Item] | None) -> None:
        """The follower's batch of what changed in (lo, hi]; None when it read none (its first
        look, lo = -1, or more than a stream's buffer holds)."""
        if self.behind or self.dropped or self.closed:
            return
        if items is None and self.position >= hi:
            return
        if items is None and lo >= 0 and self.sending:  # more than it holds, and its client has not taken what it has
            self.drop()
            return
        if items is None or self.position < lo:  # it would miss (position, lo]: read the store
            self.behind = True
            self.wake.set()
            return
        added = False
        for item in items:
            if item.position > self.position and (self.only.everything or self.only.accepts(item)):
                self.queue.append(item)
                self.queued_bytes += len(item.chunk)
                added = True
        self.position = max(self.position, hi)
        if len(self.queue) > self.limits.buffer_events or self.queued_bytes > self.limits.buffer_bytes:
            self.drop()
        elif added:
            self.wake.set()

    def drop(self) -> None:
        """Its client does not read: free what was kept; the stream ends naming `sent`."""
        self.dropped = True
        self.queue.clear()
        self.queued_bytes = 0
        self.wake.set()

    def caught_up(self, page: Page) -> None:
        """A page the stream read itself; the caller sends `page.items`."""
        self.position = max(self.position, page.position)
        if not page.more:
            self.behind = False
        if page.items:
            self.sent = page.items[-1].position

    def take(self) -> bytes:
        """Every queued event, as one chunk to send."""
        chunk = b"".join(item.chunk for item in self.queue)
        self.sent = self.queue[-1].position
        self.queue.clear()
        self.queued_bytes = 0
        return chunk


class TooManyStreams(Exception):
    """The process already serves `StreamLimits.max_subscribers` streams."""


class Follower:
    """Follows the projections for every stream of one process (see the module's doc)."""

    def __init__(self, read: ReadModels, ledger: Ledger, limits: StreamLimits) -> None:
        self.read = read
        self.ledger = ledger
        self.limits = limits
        self.subscribers: dict[str, set[Subscriber]] = {kind: set() for kind in KINDS}
        self.drops: dict[str, int] = dict.fromkeys(KINDS, 0)  # streams ended with `event: dropped`, by kind
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._kick = threading.Event()  # a stream opened: look now
        self._thread: threading.Thread | None = None
        self._position = -1  # where the last batch ended (-1: not read yet)
        self._spacing = limits.poll  # seconds between looks (see LOOP_SPACING)

    @property
    def count(self) -> int:
        return sum(len(subs) for subs in self.subscribers.values())

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="stream-follower", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """End every open stream and stop the thread."""
        self._stop.set()
        self._kick.set()
        for subs in self.subscribers.values():
            for sub in subs:
                sub.closed = True
                sub.wake.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10)
            self._thread = None

    # On the event loop.
    def subscribe(self, kind: str, only: StreamFilter, after: int) -> Subscriber:
        if self.count >= self.limits.max_subscribers:
            raise TooManyStreams(f"this process serves {self.limits.max_subscribers} streams already")
        if self._stop.is_set():
            raise TooManyStreams("the server is shutting down")
        sub = Subscriber(kind, only, position=after, sent=after, limits=self.limits)
        self.subscribers[kind].add(sub)
        self._kick.set()
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers[sub.kind].discard(sub)
        sub.queue.clear()

    def _fan_out(self, lo: int, hi: int, batches: dict[str, list[Item] | None], handed: float) -> None:
        waited = time.monotonic() - handed
        self._spacing = max(self.limits.poll, min(MAX_SPACING, LOOP_SPACING * waited))
        for kind, items in batches.items():
            subs = self.subscribers[kind]
            for sub in list(subs):
                sub.offer(lo, hi, items)
                if sub.dropped:  # its slot is free at once, whenever its client reads the end
                    subs.discard(sub)
                    self.drops[kind] += 1

    # On the follower's thread.
    def _run(self) -> None:
        waker = Waker(self.ledger, self.read.store.database) if self.read.store.backend == "postgres" else None
        busy_until = 0.0
        try:
            while not self._stop.is_set():
                if not self.count:  # no stream open: nothing to read until one opens
                    self._position = -1
                    self._kick.wait(LISTEN_TIMEOUT)
                    self._kick.clear()
                    continue
                try:
                    moved = self.step()
                except Exception as e:  # the database is down or busy: streams wait, then go on
                    log.warning("stream follower paused: %s", e)
                    self._stop.wait(1.0)
                    continue
                now = time.monotonic()
                if moved:
                    busy_until = now + BUSY_SECONDS
                if waker is None or now < busy_until:
                    self._stop.wait(self._spacing)
                    continue
                began = time.monotonic()
                waker.wait(LISTEN_TIMEOUT, self._stop)
                if time.monotonic() - began < LISTEN_TIMEOUT * 0.9:  # a NOTIFY: the engine follows
                    busy_until = time.monotonic() + BUSY_SECONDS
        finally:
            if waker is not None:
                waker.close()

    def step(self) -> bool:
        """Read what the projections applied since the last batch and hand it to the loop;
        False when nothing moved."""
        hi = self.read.position()
        lo = self._position
        if hi <= lo:
            return False
        self._position = hi
        batches: dict[str, list[Item] | None] = {}
        for kind in KINDS:
            if not self.subscribers[kind]:
                continue
            # The first look, or a batch no stream's buffer could hold: each stream that has not
            # got to `hi` reads the store itself, at its client's pace.
            if lo < 0 or hi - lo > min(LIVE_SPAN, self.limits.buffer_events):
                batches[kind] = None
                continue
            if kind == EVENTS:
                items = [item for item in event_items(self.read.feed_rows(lo, hi - lo)) if item.position <= hi]
            else:
                items = claim_changes(self.read, lo, hi)
            batches[kind] = items if sum(len(item.chunk) for item in items) <= self.limits.buffer_bytes else None
        loop = self._loop
        if batches and loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to serve
                loop.call_soon_threadsafe(self._fan_out, lo, hi, batches, time.monotonic())
        return True
