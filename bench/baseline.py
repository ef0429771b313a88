"""The raw `eventsourcing` library doing the same work as the ledger, as baselines.

`Note` is the smallest aggregate that does per write what a claim does: it is loaded,
triggers one event carrying the act's fields, and is saved. `RawApp` persists it with the
library settings the Ledger itself runs with on that kind of store (`ledger_settings`): the
persistence module and its settings (on PostgreSQL the Ledger's one-round-trip recorder,
its pool and timeouts) and the aggregate cache (its size, fast-forward and deep copy). So a
baseline write loads its note from the cache and fast-forwards it, as the Ledger does a
claim, instead of replaying its whole history: like for like.

`concurrent_writes` and `batched_writes` are the baselines of the HTTP writes (row 2): what a
user would write with the library instead of the ledger's group commit, that is writer
threads each doing load+trigger+save, and one writer saving many notes per transaction.
bench/child.py runs them in a process of their own, tuned as `claims serve` tunes its own.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError

from bench.loadgen import assertion_fields
from store.event_store import ledger_env
from store.settings import Database

Json = dict[str, Any]

OPEN_BATCH = 500  # notes saved per transaction when a store is filled
CONFLICT_RETRIES = 20  # as the Ledger's: a write that keeps meeting newer versions gives up
MAX_ERRORS = 100  # a writer thread stops after this many failures (a store that went away)


class Note(Aggregate):
    """One proposition and the acts said about it, with no rules at all."""

    @event("Opened")
    def __init__(self, key: str, statement: str) -> None:
        self.key = key
        self.statement = statement
        self.acts = 0

    @event("Noted")
    def note(self, act: Json) -> None:
        self.acts += 1


def ledger_settings(url: str) -> dict[str, str]:
    """The library settings the Ledger runs with on the store at `url` (`ledger_env`, the one
    function `open_ledger` takes them from), so that a baseline cannot drift from them."""
    return ledger_env(Database.from_url(url))


class RawApp(Application[UUID]):
    """The raw library with the Ledger's library settings (`ledger_settings`): the baseline app."""

    # Its own name, so its own tables, and on PostgreSQL its own NOTIFY channel: a ledger
    # server listening for "ledger_events" is not woken by the baseline's writes.
    name = "RawBench"

    def __init__(self, url: str) -> None:
        super().__init__(env=ledger_settings(url))

    def open_notes(self, count: int, history: int = 0) -> list[UUID]:
        """`count` new notes, each with `history` acts already noted (so as long as the claims
        the ledger is measured on), saved OPEN_BATCH notes per transaction."""
        ids: list[UUID] = []
        for start in range(0, count, OPEN_BATCH):
            notes = [Note(key=f"note-{i}", statement=f"Proposition number {i}")
                     for i in range(start, min(count, start + OPEN_BATCH))]
            for note in notes:
                for h in range(history):
                    note.note(assertion_fields(f"{note.key}-history-{h}"))
            self.save(*notes)
            ids += [n.id for n in notes]
        return ids

    def add_note(self, note_id: UUID, act: Json) -> None:
        """Load, trigger one event, save: one transaction per write."""
        note: Note = self.repository.get(note_id)
        note.note(act)
        self.save(note)

    def save_lines_in_batches(self, lines: Iterable[Json], batch: int) -> int:
        """Fixture lines as Note events, saved `batch` lines at a time; returns how many."""
        notes: dict[str, Note] = {}
        touched: dict[str, Note] = {}
        count = 0
        for line in lines:
            if line["op"] == "register":
                note = Note(key=line["key"], statement=line["statement"])
                notes[line["key"]] = note
            else:
                note = notes[line["claim"]]
                note.note(line)
            touched[note.key] = note
            count += 1
            if count % batch == 0:
                self.save(*touched.values())
                touched.clear()
        if touched:
            self.save(*touched.values())
        return count


@dataclass
class RawWrites:
    """One timed run of raw writes: `writers` threads, each saving `batch` notes per transaction."""

    writers: int
    batch: int
    writes: int = 0
    seconds: float = 0.0
    conflicts: int = 0  # saves refused because another writer saved the note first (then retried)
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.writes / self.seconds if self.seconds > 0 else 0.0

    def failed(self) -> str | None:
        """Why the run does not count (failures above 1% of its writes), else None."""
        if self.writes == 0 or len(self.errors) > max(10, self.writes // 100):
            return (f"{len(self.errors)} failed raw writes against {self.writes} saved: "
                    f"{'; '.join(self.errors[:2]) or 'none saved'}")
        return None


def concurrent_writes(app: RawApp, ids: Sequence[UUID], writers: int, seconds: float, prefix: str) -> RawWrites:
    """`writers` threads for `seconds`, each writing to a random note (as the load tool picks a
    random claim per request) with load+trigger+save, one transaction per write; a save that
    meets a newer version is loaded and tried again, as the Ledger does."""
    run = RawWrites(writers=writers, batch=1)
    lock = threading.Lock()
    clock: list[float] = []

    def start_clock() -> None:  # run by the barrier once every thread is ready, before any goes
        clock.append(time.perf_counter())

    barrier = threading.Barrier(writers, action=start_clock)

    def writer(number: int) -> None:
        rng = random.Random(number)
        written = conflicts = 0
        errors: list[str] = []
        barrier.wait()
        deadline = clock[0] + seconds
        while time.perf_counter() < deadline and len(errors) < MAX_ERRORS:
            note_id = rng.choice(ids)
            act = assertion_fields(f"{prefix}-{number}-{written}-{len(errors)}")
            for _ in range(CONFLICT_RETRIES):
                try:
                    app.add_note(note_id, act)
                    written += 1
                    break
                except IntegrityError:
                    conflicts += 1
                except Exception as e:  # counted and reported: the run fails when they are many
                    errors.append(f"{type(e).__name__}: {str(e).strip()[:200]}")
                    break
            else:
                errors.append(f"gave up after {CONFLICT_RETRIES} conflicts")
        with lock:
            run.writes += written
            run.conflicts += conflicts
            run.errors += errors

    threads = [threading.Thread(target=writer, args=(n,), name=f"raw-writer-{n}") for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.seconds = time.perf_counter() - clock[0]  # until the last write in flight at the deadline ended
    return run


def batched_writes(app: RawApp, ids: Sequence[UUID], batch: int, seconds: float, prefix: str) -> RawWrites:
    """One writer for `seconds`: `batch` distinct random notes loaded, one event triggered on
    each, all saved in one transaction (as the group writer commits a batch of requests)."""
    run = RawWrites(writers=1, batch=batch)
    rng = random.Random(0)
    pool = list(ids)
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline and len(run.errors) < MAX_ERRORS:
        try:
            notes: list[Note] = [app.repository.get(note_id) for note_id in rng.sample(pool, batch)]
            for i, note in enumerate(notes):
                note.note(assertion_fields(f"{prefix}-{run.writes + i}-{len(run.errors)}"))
            app.save(*notes)
            run.writes += batch
        except Exception as e:  # counted and reported: the run fails when they are many
            run.errors.append(f"{type(e).__name__}: {str(e).strip()[:200]}")
    run.seconds = time.perf_counter() - started
    return run


def scan_notifications(recorder: Any, batch: int = 1000) -> int:
    """The library reading a whole notification log in batches, no decoding; returns how many."""
    count = 0
    after = 0
    while True:
        notifications = recorder.select_notifications(after + 1, batch)
        if not notifications:
            return count
        count += len(notifications)
        after = notifications[-1].id
