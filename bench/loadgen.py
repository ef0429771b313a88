"""A small HTTP/1.1 load generator, run in processes of its own (the fallback when wrk is absent,
and the open-loop generator for a steady rate, which wrk cannot do).

    python -m bench.loadgen SPEC.json   # prints one JSON line of results

SPEC: {"port", "connections", "seconds", "processes", "rate" (null: closed loop; else requests/s
in total, sent on schedule whatever the answers take), "kind" ("get": GET a random one of
"paths", with the bearer "token" if given; "assert": POST an assertion with a fresh act_id to a random claim key of "paths"),
"token", "prefix"}. Keep-alive connections, raw asyncio streams: little CPU per request.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
Json = dict[str, Any]


def assertion_fields(act_id: str) -> Json:
    """The assertion every benchmark write records (in process and over HTTP alike)."""
    return {
        "act_id": act_id,
        "party": {"id": "bench-writer", "name": "Bench Writer"},
        "source": {"outlet": "Benchmark Wire", "url": "https://example.org/bench"},
        "quote": "This is what the benchmark says, once per request.",
    }


def assertion_body(act_id: str) -> bytes:
    return json.dumps(assertion_fields(act_id), separators=(",", ":")).encode()


class Requests:
    def __init__(self, spec: Json, worker: int) -> None:
        self.kind = spec["kind"]
        self.paths: list[str] = spec["paths"]
        self.token = spec.get("token", "")
        self.prefix = f"{spec.get('prefix', 'w')}-{worker}"
        self.host = f"127.0.0.1:{spec['port']}"
        self.rng = random.Random(worker)
        self.sent = 0

    def next(self) -> bytes:
        self.sent += 1
        target = self.rng.choice(self.paths)
        if self.kind == "get":
            auth = f"Authorization: Bearer {self.token}\r\n" if self.token else ""
            return f"GET {target} HTTP/1.1\r\nHost: {self.host}\r\n{auth}\r\n".encode()
        body = assertion_body(f"{self.prefix}-{self.sent}")
        head = (
            f"POST /v1/claims/{target}/assertions HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Authorization: Bearer {self.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    found = CONTENT_LENGTH.search(head)
    if found is not None:
        return status, await reader.readexactly(int(found.group(1)))
    if b"chunked" in head.lower():
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                return status, b"".join(chunks)
            chunks.append(data[:-2])
    return status, b""


async def run_worker(spec: Json, worker: int, connections: int, start_at: float) -> Json:
    requests = Requests(spec, worker)
    rate = spec.get("rate")
    per_worker_rate = None if rate is None else rate / spec["processes"]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    late = broken = 0
    await asyncio.sleep(max(0.0, start_at - time.time()))
    t0 = time.perf_counter()
    deadline = t0 + spec["seconds"]
    slot = 0

    async def connection() -> None:
        nonlocal slot, late, broken
        reader, writer = await asyncio.open_connection("127.0.0.1", spec["port"])
        try:
            while True:
                if per_worker_rate is not None:
                    due = t0 + slot / per_worker_rate
                    slot += 1
                    wait = due - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    elif wait < -0.01:
                        late += 1
                if time.perf_counter() >= deadline:
                    return
                started = time.perf_counter()
                writer.write(requests.next())
                status, body = await read_response(reader)
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status >= 400 and len(errors) < 3:
                    errors.append(f"{status} {body[:300].decode(errors='replace')}")
        except (OSError, asyncio.IncompleteReadError) as e:
            broken += 1
            errors.append(f"connection error: {e!r}")
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return {"latencies": latencies, "statuses": statuses, "errors": errors, "late": late, "broken": broken,
            "seconds": time.perf_counter() - t0}


def worker_main(spec: Json, worker: int, connections: int, start_at: float) -> Json:
    return asyncio.run(run_worker(spec, worker, connections, start_at))


def run(spec: Json) -> Json:
    processes = max(1, min(spec["processes"], spec["connections"]))
    spec = {**spec, "processes": processes}
    shares = [spec["connections"] // processes + (1 if i < spec["connections"] % processes else 0)
              for i in range(processes)]
    start_at = time.time() + 0.5
    with ProcessPoolExecutor(processes) as pool:
        results = list(pool.map(worker_main, [spec] * processes, range(processes), shares, [start_at] * processes))
    latencies = sorted(x for r in results for x in r["latencies"])
    statuses: dict[str, int] = {}
    for r in results:
        for code, n in r["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    seconds = max(r["seconds"] for r in results)
    n = len(latencies)

    def pct(p: float) -> float | None:
        return latencies[min(n - 1, max(0, math.ceil(n * p / 100) - 1))] if n else None

    return {
        "tool": "python", "requests": n, "seconds": seconds,
        "non2xx": sum(v for k, v in statuses.items() if not k.startswith("2")),
        "statuses": statuses, "errors": [e for r in results for e in r["errors"]][:5],
        "late": sum(r["late"] for r in results), "socket_errors": sum(r["broken"] for r in results),
        "p50_ms": pct(50), "p99_ms": pct(99), "mean_ms": sum(latencies) / n if n else None,
    }


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as f:
        spec = json.load(f)
    print(json.dumps(run(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
