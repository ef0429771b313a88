"""One benchmark run: its sizes (full or --quick), stores, datasets, servers, shared figures."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bench.data import Dataset, Datasets
from bench.harness import CouldNotRun, Server, Stores, ledger_server, make_token, start_ledger_server


@dataclass(frozen=True)
class Sizes:
    single_write_rounds: int
    single_claims: int
    http_seconds: float
    http_clients: tuple[int, ...]
    data_events: int  # the dataset most rows use, on both backends
    large_events: int  # the large SQLite dataset (rebuild RSS, verify, proofs), when the time budget allows
    budget_seconds: float  # the whole run; the large stage, last, shrinks to fit
    round_seconds: float  # each side of each round of row 1
    lag_seconds: float
    lag_rate: float
    read_seconds: float
    read_connections: int
    proofs: int
    reference_proofs: int


FULL = Sizes(
    single_write_rounds=3, single_claims=200, round_seconds=2.0,
    http_seconds=10, http_clients=(1, 8, 32), data_events=100_000, large_events=1_000_000, budget_seconds=1_500,
    lag_seconds=10, lag_rate=500, read_seconds=8, read_connections=16, proofs=500, reference_proofs=2,
)
QUICK = Sizes(
    single_write_rounds=2, single_claims=100, round_seconds=0.6,
    http_seconds=3, http_clients=(1, 8, 32), data_events=10_000, large_events=40_000, budget_seconds=170,
    lag_seconds=4, lag_rate=500, read_seconds=3, read_connections=16, proofs=200, reference_proofs=1,
)


@dataclass
class LedgerService:
    """`claims serve` on a dataset, with a recorder token."""

    server: Server
    dataset: Dataset
    token: str


# Sizes the large stage falls back to, as fractions of the planned size, when that would not fit.
LARGE_FALLBACKS = (1.0, 0.5, 0.3, 0.2)
# Large imports and rebuilds run slower per event than the main size's (measured: about 0.75x).
LARGE_SLOWDOWN = 1.35


@dataclass
class Context:
    quick: bool
    stores: Stores
    data: Datasets
    started: float = field(default_factory=time.monotonic)
    rates: dict[str, float] = field(default_factory=dict)  # this run's sqlite rates: rebuild, verify (events/s)
    peak_rss: dict[str, float] = field(default_factory=dict)  # the sqlite rebuild's, MiB: "small", "large"
    raw_single_writer: dict[str, float] = field(default_factory=dict)  # row 1's raw writes/s by backend
    scans: dict[str, float] = field(default_factory=dict)  # raw log scan events/s by dataset url
    services: dict[str, LedgerService] = field(default_factory=dict)

    _large: int | None = None
    large_note: str = ""

    @property
    def sizes(self) -> Sizes:
        return QUICK if self.quick else FULL

    def remaining(self) -> float:
        return self.sizes.budget_seconds - (time.monotonic() - self.started)

    def seconds_per_event(self) -> float:
        """Generating, importing and rebuilding one event, at this run's SQLite rates where known."""
        small = self.data.get("sqlite", self.sizes.data_events)
        generate = self.data.generated_per_second or 20_000
        imported = small.report.acts_per_second if small is not None else 8_000
        return 1 / generate + 1 / imported + 1 / self.rates.get("rebuild", 10_000)

    def large_size(self) -> int:
        """The large dataset's size: the planned one, or less when this run's rates say it would not
        fit in the time left (the figures say so)."""
        if self._large is None:
            planned, left = self.sizes.large_events, self.remaining()
            per_event = self.seconds_per_event() * LARGE_SLOWDOWN
            fitting = [int(planned * f) for f in LARGE_FALLBACKS if planned * f * per_event + 25 <= left]
            if not fitting or fitting[0] <= self.sizes.data_events:
                raise CouldNotRun(
                    f"the large dataset ({planned:,} events) would take about {planned * per_event:.0f} s at this "
                    f"run's rates and {left:.0f} s of the {self.sizes.budget_seconds:.0f} s budget are left"
                )
            self._large = fitting[0]
            if self._large < planned:
                self.large_note = (
                    f"{self._large:,} events, not {planned:,}: at this run's rates {planned:,} would take about "
                    f"{planned * per_event:.0f} s, {left:.0f} s of the budget were left; "
                )
        return self._large

    def service(self, backend: str) -> LedgerService:
        """The ledger served on this backend's main dataset, started on first use."""
        if backend not in self.services:
            dataset = self.data.dataset(backend, self.sizes.data_events)
            token = make_token(dataset.url, "recorder", self.stores.dir)
            server = ledger_server(dataset.url, self.stores.dir)
            start_ledger_server(server, timeout=600)
            self.services[backend] = LedgerService(server, dataset, token)
        return self.services[backend]

    def stop_service(self, backend: str) -> None:
        """Stop this backend's server (the next `service` starts it again)."""
        service = self.services.pop(backend, None)
        if service is not None:
            service.server.stop()

    def stop_services(self) -> None:
        for service in self.services.values():
            service.server.stop()
        self.services.clear()

    def close(self) -> None:
        self.stop_services()
        self.stores.cleanup()
