"""Row 11: Server-Sent Event streams.

(1) 500 concurrent subscribers of /v1/claims/stream on one `claims serve` process while
    200 writes/s land: delivery latency from a write's acknowledgement to its receipt,
    the server's memory per subscriber, and the closed-loop write rate with them beside
    the rate without (both backends).
(2) Catch-up over /v1/events/stream from 0 over the main dataset, beside the NDJSON feed
    (`GET /v1/events`, `Accept: application/x-ndjson`) in the same run (SQLite).

The subscribers and the writer run in processes of their own (`python -m bench.rows_streams
subscribe|write SPEC`), raw asyncio sockets, so their parsing does not share the benchmark's
interpreter lock; the two processes time with CLOCK_MONOTONIC, which is system-wide.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.context import Context, LedgerService
from bench.harness import (
    CouldNotRun,
    Figure,
    child_env,
    could_not_run,
    http_json,
    make_token,
    number,
    percentile,
    reason,
    tail,
)
from bench.load import closed_loop
from bench.loadgen import assertion_body

SUBSCRIBERS = 500
SAMPLED = 50  # subscribers whose every receipt is timed (the others count what they get)
# Streams opened before the memory baseline: the first streams also warm what every request
# does (the request threads and their read-store connections), which is not per stream.
WARM = 50
WRITE_RATE = 200.0
WRITE_CONNECTIONS = 8
LATENCY_GOAL_MS = 250.0
MEMORY_GOAL_KIB = 100.0
RATE_GOAL = 0.8
CATCH_UP_GOAL = 50_000
CATCH_UP_RATIO_GOAL = 0.5
ID = re.compile(rb"(?:^|\n)id: (\d+)\n")
ITEM = b'{"position":'
Json = dict[str, Any]


# Row 11 (1).
def subscribers(ctx: Context) -> list[Figure]:
    figures: list[Figure] = []
    for backend in ("sqlite", "postgres"):
        try:
            figures += _subscribers(ctx, backend, ctx.service(backend))
        except Exception as e:
            figures.append(could_not_run(11, f"claim stream delivery p99, {SUBSCRIBERS} subscribers, {backend}",
                                         reason(e), goal=f"p99 < {LATENCY_GOAL_MS:g} ms"))
    return figures


def _subscribers(ctx: Context, backend: str, service: LedgerService) -> list[Figure]:
    server = service.server
    assert server.proc is not None
    port, keys, token = server.port, service.dataset.fixture.keys, service.token
    seconds = ctx.sizes.lag_seconds
    prefix = f"st-{backend[:2]}-{ctx.stores.run_id}"
    alone = closed_loop(port, "assert", keys, WRITE_CONNECTIONS, ctx.sizes.http_seconds, token=token,
                        prefix=f"{prefix}-alone")
    alone.check("writes without subscribers")
    paced_alone = _run_child("write", {"port": port, "token": token, "keys": keys, "rate": WRITE_RATE,
                                       "seconds": seconds, "prefix": f"{prefix}-paced-alone"},
                             ctx.stores.dir, seconds + 60)
    status, health = http_json(f"{server.base}/healthz")
    if status != 200:
        raise CouldNotRun(f"/healthz answered {status}")
    spec = {"port": port, "warm": WARM, "count": SUBSCRIBERS, "sample": SAMPLED, "after": health["projections"]["head"]}
    listeners = subprocess.Popen(
        [sys.executable, "-m", "bench.rows_streams", "subscribe", _spec_file(spec, ctx.stores.dir)], env=child_env(),
        cwd=ctx.stores.dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert listeners.stdout is not None and listeners.stdin is not None and listeners.stderr is not None
        rss: list[float] = []
        for _ in range(2):  # the warm-up streams, then the measured ones
            ready = listeners.stdout.readline().decode().strip()
            if ready != "ready":
                raise CouldNotRun(f"the subscribers did not connect: {ready or tail(listeners.stderr.read().decode())}")
            time.sleep(1.0)  # settled: every stream caught up and waiting
            rss.append(_rss_kib(server.proc.pid))
            if len(rss) == 1:
                listeners.stdin.write(b"go\n")
                listeners.stdin.flush()
        rss_before, rss_with = rss
        acks = _run_child("write", {"port": port, "token": token, "keys": keys, "rate": WRITE_RATE,
                                    "seconds": seconds, "prefix": f"{prefix}-paced"}, ctx.stores.dir, seconds + 60)
        time.sleep(1.0)  # the last writes reach the subscribers
        loaded = closed_loop(port, "assert", keys, WRITE_CONNECTIONS, ctx.sizes.http_seconds, token=token,
                             prefix=f"{prefix}-with")
        loaded.check("writes with subscribers")
        out, err = listeners.communicate(timeout=120)  # closes its stdin: the subscribers stop
        if listeners.returncode != 0:
            raise CouldNotRun(f"the subscribers failed: {tail(err.decode())}")
        received = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        if listeners.poll() is None:
            listeners.kill()
            listeners.wait()
    written: list[list[float]] = acks["acks"]
    warm = written[0][1] + 1.0 if written else 0.0  # skip the first second: connections, caches
    latencies: list[float] = []
    missing = 0
    for times in received["sampled"]:
        for position, acked in written:
            if acked < warm:
                continue
            got = times.get(str(int(position)))
            if got is None:
                missing += 1
            else:
                latencies.append(max(0.0, (got - acked) * 1000))
    if len(latencies) < 100:
        raise CouldNotRun(f"only {len(latencies)} deliveries were timed ({missing} not received)")
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    per_subscriber = (rss_with - rss_before) / SUBSCRIBERS
    rate = len(written) / seconds
    data = (f"{SUBSCRIBERS} subscribers of /v1/claims/stream on one process; {len(written):,} assertions at "
            f"{rate:,.0f}/s for {seconds:g} s; store: {service.dataset.describe()}")
    counts = received["counts"]
    coalesced = f"; {missing:,} of {missing + len(latencies):,} timed receipts coalesced into a later view" if missing else ""
    return [
        Figure(11, f"claim stream delivery p99, {backend}", data=data, ours=p99, unit="ms",
               baseline_name="- (absolute goal)", goal=f"p99 < {LATENCY_GOAL_MS:g} ms",
               met=p99 < LATENCY_GOAL_MS, lower_is_better=True,
               notes=f"p50 {number(p50)} ms; write acknowledged -> event received, {SAMPLED} of the "
               f"subscribers timed, {len(latencies):,} deliveries{coalesced}; events per subscriber "
               f"{min(counts):,}-{max(counts):,}"),
        Figure(11, f"server memory per stream subscriber, {backend}", data=data, ours=per_subscriber, unit="KiB",
               baseline_name="- (absolute goal)", goal=f"< {MEMORY_GOAL_KIB:g} KiB", met=per_subscriber < MEMORY_GOAL_KIB,
               lower_is_better=True,
               notes=f"VmRSS of the server {rss_before / 1024:,.0f} MiB with {WARM} streams open, "
               f"{rss_with / 1024:,.0f} MiB with {SUBSCRIBERS} more connected and caught up, / {SUBSCRIBERS}"),
        Figure(11, f"write rate at {WRITE_RATE:g}/s asked, with {SUBSCRIBERS} stream subscribers, {backend}",
               data=f"assertions sent on schedule (open loop) for {seconds:g} s each way", ours=rate,
               unit="writes/s", baseline=len(paced_alone["acks"]) / seconds,
               baseline_name="the same without subscribers", goal=f">= {RATE_GOAL:g}x",
               met=rate >= RATE_GOAL * len(paced_alone["acks"]) / seconds,
               notes=f"acknowledged writes per second; failures {acks['failures']} with, "
               f"{paced_alone['failures']} without"),
        Figure(11, f"closed-loop write rate with {SUBSCRIBERS} stream subscribers, {backend}",
               data=f"{WRITE_CONNECTIONS} closed-loop clients for {ctx.sizes.http_seconds:g} s each way",
               ours=loaded.rate, unit="writes/s", baseline=alone.rate, baseline_name="the same without subscribers",
               notes=f"the most the process takes: each write is also sent to each of the {SUBSCRIBERS} subscribers "
               "as its claim's new view, by the same process on the same cores as the "
               "subscribers' own process"),
    ]


def _rss_kib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1])
    raise CouldNotRun(f"no VmRSS for process {pid}")


def _spec_file(spec: Json, directory: Path) -> str:
    """A child's task spec, in a file: the claim keys of the main dataset are more than one
    command-line argument may hold (the kernel's 128 KiB)."""
    path = directory / f"streams-spec-{uuid.uuid4().hex}.json"
    path.write_text(json.dumps(spec))
    return str(path)


def _run_child(task: str, spec: Json, cwd: Path, timeout: float) -> Json:
    done = subprocess.run([sys.executable, "-m", "bench.rows_streams", task, _spec_file(spec, cwd)], env=child_env(),
                          cwd=cwd, capture_output=True, timeout=timeout)
    if done.returncode != 0:
        raise CouldNotRun(f"{task} exited {done.returncode}: {tail(done.stderr.decode())}")
    answer = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert isinstance(answer, dict)
    return answer


# Row 11 (2).
def catch_up(ctx: Context) -> list[Figure]:
    name = "event stream catch-up from 0, sqlite"
    goal = f">= {CATCH_UP_RATIO_GOAL:g}x the NDJSON feed and >= {CATCH_UP_GOAL:,}/s"
    try:
        service = ctx.service("sqlite")
        auditor = make_token(service.dataset.url, "auditor", ctx.stores.dir)
        status, health = http_json(f"{service.server.base}/healthz")
        if status != 200:
            raise CouldNotRun(f"/healthz answered {status}")
        head = int(health["projections"]["head"])
        port = service.server.port
        feed_events, feed_seconds = _read_all(port, "/v1/events", auditor, "application/x-ndjson", None)
        sse_events, sse_seconds = _read_all(port, "/v1/events/stream", auditor, "text/event-stream", head)
        if sse_events != head or feed_events != head:
            raise CouldNotRun(f"of {head:,} events, the stream sent {sse_events:,} and the feed {feed_events:,}")
    except Exception as e:
        return [could_not_run(11, name, reason(e), goal=goal)]
    ours, baseline = head / sse_seconds, head / feed_seconds
    return [Figure(
        11, name, data=f"{head:,} events; store: {service.dataset.describe()}", ours=ours, unit="events/s",
        baseline=baseline, baseline_name="GET /v1/events as NDJSON, same run", goal=goal,
        met=ours >= CATCH_UP_RATIO_GOAL * baseline and ours >= CATCH_UP_GOAL,
        notes="from the request to the last event received, raw socket reader",
    )]


def _read_all(port: int, path: str, token: str, accept: str, last: int | None) -> tuple[int, float]:
    """(items, seconds): the whole answer, or the stream up to id `last`; an item of either is
    a feed item, `{"position":...`."""
    marker = None if last is None else b"id: %d\n" % last
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nAccept: {accept}\r\n"
                     "Connection: close\r\n\r\n".encode())
        count, carried = 0, b""
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            window = carried + chunk
            count += window.count(ITEM) - carried.count(ITEM)
            if marker is not None and marker in window:
                break
            carried = window[-64:]
    return count, time.perf_counter() - started


# The child processes.
class _Subscriber(asyncio.Protocol):
    """One stream, read by callbacks (the cheapest way asyncio has): it counts the events it
    gets and, when sampled, when each id arrived."""

    def __init__(self, request: bytes, times: dict[str, float] | None) -> None:
        self.request = request
        self.times = times
        self.count = 0
        self.started = asyncio.Event()
        self.carried = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]  # a stream transport (uvloop's is not an asyncio.Transport)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.started.is_set() and b"retry: " in data:
            self.started.set()
        window = self.carried + data
        if self.times is None:
            self.count += window.count(b"\nid: ") - self.carried.count(b"\nid: ")
        else:
            ids = ID.findall(window)
            self.count += len(ids) - len(ID.findall(self.carried))
            for found in ids:
                self.times.setdefault(found.decode(), now)
        self.carried = window[-64:]


async def _subscribe(spec: Json) -> Json:
    """`warm` streams of /v1/claims/stream, then, on a line from stdin, `count` more; prints
    "ready" once each group has started, then reads until stdin closes. The first `sample`
    of the `count` record when each id arrived."""
    port, after, sample = int(spec["port"]), int(spec["after"]), int(spec["sample"])
    request = f"GET /v1/claims/stream HTTP/1.1\r\nHost: bench\r\nLast-Event-ID: {after}\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    warm = [_Subscriber(request, None) for _ in range(int(spec["warm"]))]
    subscribers = [_Subscriber(request, {} if n < sample else None) for n in range(int(spec["count"]))]
    go, stop = asyncio.Event(), asyncio.Event()

    def commands() -> None:  # a line: connect the subscribers; the end of stdin: stop
        sys.stdin.readline()
        loop.call_soon_threadsafe(go.set)
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=commands, daemon=True).start()
    transports = []
    for group in (warm, subscribers):
        if group is subscribers:
            await go.wait()
        for sub in group:
            transport, _ = await loop.create_connection(lambda sub=sub: sub, "127.0.0.1", port)  # type: ignore[misc]
            transports.append(transport)
        await asyncio.wait_for(asyncio.gather(*(sub.started.wait() for sub in group)), 60)
        print("ready", flush=True)
    await stop.wait()
    for transport in transports:
        transport.close()
    return {"counts": [sub.count for sub in subscribers],
            "sampled": [sub.times for sub in subscribers if sub.times is not None]}


async def _write(spec: Json) -> Json:
    """Assertions at a steady `rate` (open loop) on keep-alive connections; each one's log
    position and when its answer arrived."""
    port, token, keys = int(spec["port"]), str(spec["token"]), list(spec["keys"])
    rate, seconds, prefix = float(spec["rate"]), float(spec["seconds"]), str(spec["prefix"])
    connections: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(WRITE_CONNECTIONS):
        connections.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    acks: list[tuple[int, float]] = []
    failures = 0

    async def send(n: int) -> None:
        nonlocal failures
        reader, writer = await connections.get()
        body = assertion_body(f"{prefix}-{n}")
        writer.write((f"POST /v1/claims/{keys[n % len(keys)]}/assertions HTTP/1.1\r\nHost: bench\r\n"
                      f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))  # type: ignore[union-attr]
        answer = await reader.readexactly(length)
        acked = time.monotonic()
        connections.put_nowait((reader, writer))
        if head.startswith(b"HTTP/1.1 201"):
            acks.append((int(json.loads(answer)["position"]), acked))
        else:
            failures += 1

    began = time.monotonic()
    tasks = []
    for n in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
        tasks.append(asyncio.create_task(send(n)))
    await asyncio.gather(*tasks)
    return {"acks": acks, "failures": failures}


def main(argv: list[str]) -> int:
    task, spec = argv[0], json.loads(Path(argv[1]).read_text())
    with contextlib.suppress(ImportError):  # uvloop comes with uvicorn[standard]
        import uvloop

        uvloop.install()
    if task == "subscribe":
        print(json.dumps(asyncio.run(_subscribe(spec))))
    elif task == "write":
        print(json.dumps(asyncio.run(_write(spec))))
    else:
        print(f"unknown task {task}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
