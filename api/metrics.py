"""Prometheus metrics: requests by route template and status, latency, writes, projection lag.

Each app has its own registry (tests build many apps in one process). Under
`claims serve --workers N` the workers share PROMETHEUS_MULTIPROC_DIR, and a scrape of
any worker reports the sum over all of them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from domain.ledger import Outcome
from service.follower import Follower
from store.lease import SOLE, Lease
from store.replicas import ReadRouter

log = logging.getLogger("claims.api")

METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
# (projection position, log head) read at scrape time.
PositionProbe = Callable[[], tuple[int, int]]


class ProjectionCollector(Collector):
    def __init__(self, probe: PositionProbe) -> None:
        self.probe = probe

    def collect(self) -> Iterator[Metric]:
        try:
            position, head = self.probe()
        except Exception as e:  # a scrape must answer even while the database is down
            log.warning("projection metrics unavailable: %s", e)
            return
        yield GaugeMetricFamily("claims_projection_position", "Last log position applied to the read models",
                                value=position)
        yield GaugeMetricFamily("claims_log_head_position", "Newest position in the event log", value=head)
        yield GaugeMetricFamily("claims_projection_lag_events", "Events written but not yet projected",
                                value=max(0, head - position))


class StreamCollector(Collector):
    """The Server-Sent Event streams of this process (service/follower.py): how many are open,
    and how many it ended with `event: dropped` because their client read too slowly."""

    def __init__(self, follower: Follower) -> None:
        self.follower = follower

    def collect(self) -> Iterator[Metric]:
        open_ = GaugeMetricFamily("claims_streams_open", "Server-Sent Event streams open in this process",
                                  labels=["stream"])
        drops = CounterMetricFamily("claims_stream_drops", "Streams this process ended with `event: dropped`: their"
                                    " client read too slowly for LEDGER_STREAM_BUFFER_EVENTS/_BYTES", labels=["stream"])
        for kind, subs in self.follower.subscribers.items():
            open_.add_metric([kind], float(len(subs)))
            drops.add_metric([kind], float(self.follower.drops[kind]))
        yield from (open_, drops)


class LeaseCollector(Collector):
    """Whether this process holds a job's lease (store/lease.py): 1 leads, 0 stands by; and how
    often it took it. Not reported on SQLite, where there is no lease to hold."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease

    def collect(self) -> Iterator[Metric]:
        if self.lease.role == SOLE:
            return
        name = self.lease.job.split()[0]
        leader = GaugeMetricFamily("claims_lease_leader", "1 when this process holds the job's lease and does the"
                                   " job, 0 when it stands by", labels=["lease"])
        leader.add_metric([name], 1.0 if self.lease.held else 0.0)
        acquired = CounterMetricFamily("claims_lease_acquired", "Times this process took the job's lease",
                                       labels=["lease"])
        acquired.add_metric([name], float(self.lease.acquired))
        yield from (leader, acquired)


class ReplicaCollector(Collector):
    """Each hot standby's lag behind the primary, and whether reads go to it (store/replicas.py)."""

    def __init__(self, replicas: ReadRouter) -> None:
        self.replicas = replicas

    def collect(self) -> Iterator[Metric]:
        seconds = GaugeMetricFamily("claims_replica_lag_seconds", "Seconds the standby is behind the primary",
                                    labels=["replica"])
        size = GaugeMetricFamily("claims_replica_lag_bytes", "WAL bytes the standby has not replayed yet",
                                 labels=["replica"])
        usable = GaugeMetricFamily("claims_replica_usable", "1 when reads go to the standby (within the lag"
                                   " allowed), 0 when it is behind or unreachable", labels=["replica"])
        for lag in self.replicas.lags():
            if lag.lag_seconds is not None:
                seconds.add_metric([lag.name], lag.lag_seconds)
            if lag.lag_bytes is not None:
                size.add_metric([lag.name], float(lag.lag_bytes))
            usable.add_metric([lag.name], 1.0 if lag.usable(self.replicas.max_lag_seconds) else 0.0)
        yield from (seconds, size, usable)


class ApiMetrics:
    def __init__(self, probe: PositionProbe) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "claims_http_requests", "HTTP requests answered", ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "claims_http_request_duration_seconds", "Time to answer an HTTP request", ["method", "route"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.events_written = Counter(
            "claims_events_written", "Events committed by this API", registry=self.registry
        )
        self.writes_forwarded = Counter(
            "claims_writes_forwarded", "Writes this API worker sent to the writer host (--workers N)",
            registry=self.registry,
        )
        self.write_batch = Histogram(
            "claims_write_batch_commands", "Commands per group-commit transaction",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500), registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.projection = ProjectionCollector(probe)
        self.registry.register(self.projection)
        self.collectors: list[Collector] = [self.projection]  # read at scrape time, per process

    def add_collector(self, collector: Collector) -> None:
        """A collector of this process's state (e.g. its witnesses), reported beside the others."""
        self.registry.register(collector)
        self.collectors.append(collector)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "other"
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:  # labels() validates and locks: once per method, route and status
            children = self._children[key] = (
                self.requests.labels(method, route, str(status)), self.latency.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def observe_commit(self, outcomes: Sequence[Outcome]) -> None:
        self.write_batch.observe(len(outcomes))
        created = sum(1 for o in outcomes if o.created)
        if created:
            self.events_written.inc(created)

    def render(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            for collector in self.collectors:
                registry.register(collector)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
