"""The benchmark's data: synthetic fixtures from the generator, imported once per backend and size.

The import that makes a dataset is row 3's measurement; later rows reuse the dataset
(rebuild, verify, proofs, servers), and build it themselves when row 3 was not run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import Stores
from domain.errors import StoreUnavailable
from fixtures.generator import generate, write_fixture
from fixtures.replay import ImportReport, import_fixture
from store.event_store import open_ledger
from store.settings import Database

# Generated histories hold about this many lines (events) per claim (measured: 113,729 for 10,000).
EVENTS_PER_CLAIM = 11.37
SEED = 20150914
SAMPLE_CLAIMS = 2000
Json = dict[str, Any]


def size_label(events: int) -> str:
    if events >= 1_000_000 and events % 1_000_000 == 0:
        return f"{events // 1_000_000}M"
    if events >= 1000:
        return f"{events // 1000}k"
    return str(events)


@dataclass
class Fixture:
    path: Path
    claims: int
    lines: int = 0
    keys: list[str] = field(default_factory=list)  # some claim keys, in registration order
    as_of: dict[str, str] = field(default_factory=dict)  # key -> the recorded_at of its middle event


@dataclass
class Dataset:
    backend: str
    url: str
    fixture: Fixture
    report: ImportReport
    attempts: int = 1  # 2 when a PostgreSQL restart broke the first import

    @property
    def events(self) -> int:
        return self.report.events

    def describe(self) -> str:
        retried = ", imported on the 2nd attempt after a PostgreSQL restart" if self.attempts > 1 else ""
        return f"{self.events:,} events, {self.fixture.claims:,} claims ({self.backend}{retried})"


class Datasets:
    def __init__(self, stores: Stores) -> None:
        self.stores = stores
        self._fixtures: dict[int, Fixture] = {}
        self._datasets: dict[tuple[str, int], Dataset] = {}
        self.generated_per_second: float | None = None

    def fixture(self, events: int) -> Fixture:
        """Generated fixture lines for about `events` events (whole claim histories)."""
        if events not in self._fixtures:
            claims = max(1, round(events / EVENTS_PER_CLAIM))
            fixture = Fixture(self.stores.dir / f"fixture-{claims}.jsonl", claims)
            started = time.perf_counter()
            fixture.lines = write_fixture(fixture.path, _sampling(generate(claims, SEED), fixture))
            self.generated_per_second = fixture.lines / (time.perf_counter() - started)
            self._fixtures[events] = fixture
        return self._fixtures[events]

    def get(self, backend: str, events: int) -> Dataset | None:
        return self._datasets.get((backend, events))

    def dataset(self, backend: str, events: int) -> Dataset:
        """The fixture of that size imported into a fresh store (once per run)."""
        found = self.get(backend, events)
        if found is not None:
            return found
        fixture = self.fixture(events)
        for attempt in (1, 2):
            url = self.stores.url(backend, f"data_{size_label(events)}")
            ledger = open_ledger(Database.from_url(url))
            try:
                report = import_fixture(ledger, fixture.path)
                break
            except StoreUnavailable:
                # Others on this machine restart PostgreSQL now and then; the import is atomic.
                if attempt == 2 or backend != "postgres":
                    raise
            finally:
                ledger.close()
        dataset = Dataset(backend, url, fixture, report, attempts=attempt)
        self._datasets[(backend, events)] = dataset
        return dataset


def _sampling(lines: Iterator[Json], fixture: Fixture) -> Iterator[Json]:
    """Pass the lines through, keeping the keys of the first claims and the middle of their histories."""
    times: dict[str, list[str]] = {}
    for line in lines:
        if line["op"] == "register":
            if len(times) < SAMPLE_CLAIMS:
                times[line["key"]] = [line["recorded_at"]]
        elif line["claim"] in times:
            times[line["claim"]].append(line["recorded_at"])
        yield line
    fixture.keys = list(times)
    fixture.as_of = {key: stamps[len(stamps) // 2] for key, stamps in times.items()}
