"""The raw `eventsourcing` library doing the same work as the ledger, as a baseline.

`Note` is the smallest aggregate that does per write what a claim does: it is loaded,
triggers one event carrying the act's fields, and is saved. `RawApp` persists it with
exactly the library settings the ledger's own database URL maps to.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from store.settings import Database

Json = dict[str, Any]


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


class RawApp(Application[UUID]):
    name = "RawBench"

    def __init__(self, url: str) -> None:
        super().__init__(env=Database.from_url(url).library_env())

    def open_notes(self, count: int) -> list[UUID]:
        notes = [Note(key=f"note-{i}", statement=f"Proposition number {i}") for i in range(count)]
        self.save(*notes)
        return [n.id for n in notes]

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
