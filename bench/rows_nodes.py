"""Row 14: several nodes on one PostgreSQL ledger (docs/operations.md, "Several machines").

Engine failover: two `claims serve` processes on a fresh schema, writes streaming into one
of them from a client thread; the node whose engine leads (its /healthz says `lease: leader`)
is SIGKILLed, and the time is taken from the kill until the other node's engine leads and
has applied a position past the one it saw at the kill. The killed node is started again (it
stands by) and the next kill takes whichever leads. p50 and p99 over the kills; goal: < 5 s.

Write rate with two nodes beside one: the same closed-loop clients (threads, one connection
each, assertions on random claims of their own), all on one node, then half on each of two.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid

from bench.context import Context
from bench.harness import (
    CouldNotRun,
    Figure,
    Server,
    could_not_run,
    http_json,
    ledger_server,
    make_token,
    percentile,
    reason,
    start_ledger_server,
)

ROW = 14
GOAL = "p99 < 5 s"
CLIENTS = 16
CLAIMS = 50


def failover(ctx: Context) -> list[Figure]:
    name = "projection engine failover after SIGKILL of the leader, postgres"
    try:
        return [_failover(ctx, name)]
    except Exception as e:
        return [could_not_run(ROW, name, reason(e), goal=GOAL)]


def two_nodes(ctx: Context) -> list[Figure]:
    name = f"HTTP writes, {CLIENTS} clients, two nodes vs one, postgres"
    try:
        return [_two_nodes(ctx, name)]
    except Exception as e:
        return [could_not_run(ROW, name, reason(e), goal=">= 1x")]


def _nodes(ctx: Context, label: str) -> tuple[list[Server], str, list[str]]:
    """Two nodes on a fresh schema, the second started once the first has made the tables;
    a recorder's token and the keys of CLAIMS claims registered."""
    url = ctx.stores.url("postgres", f"{label}-{uuid.uuid4().hex[:6]}")
    workdir = ctx.stores.dir / f"{label}-{uuid.uuid4().hex[:6]}"
    workdir.mkdir()
    nodes = [ledger_server(url, workdir) for _ in range(2)]
    for node in nodes:
        node.env.update(LEDGER_SIGNING_KEY_FILE=str(workdir / "ledger-signing-key.pem"),
                        LEDGER_LEASE_RETRY_SECONDS="0.5")
    start_ledger_server(nodes[0])
    token = make_token(url, "recorder", workdir)
    keys = [_register(nodes[0], token, f"{label}-{i}-{uuid.uuid4().hex[:6]}") for i in range(CLAIMS)]
    start_ledger_server(nodes[1])
    return nodes, token, keys


def _failover(ctx: Context, name: str) -> Figure:
    kills = 5 if ctx.quick else 20
    if ctx.remaining() < kills * 8 + 30:
        raise CouldNotRun(f"about {kills * 8 + 30} s needed, {max(0.0, ctx.remaining()):.0f} s of the budget left")
    nodes, token, keys = _nodes(ctx, "failover")
    stop = threading.Event()
    taken: list[float] = []
    applying: list[float] = []
    try:
        writers = [threading.Thread(target=_write_loop, args=(node, token, keys, stop, [0]), daemon=True)
                   for node in nodes]
        for w in writers:
            w.start()
        for _ in range(kills):
            time.sleep(1.0)  # writes land; the standby is a standby
            leader = next((n for n in nodes if _health(n).get("lease") == "leader"), None)
            if leader is None:
                raise CouldNotRun("no node's engine leads")
            other = nodes[1 - nodes.index(leader)]
            seen = _position(other)
            killed = time.perf_counter()
            assert leader.proc is not None
            leader.proc.kill()
            leader.proc.wait()
            while _health(other).get("lease") != "leader":
                _give_up_after(killed, "the other engine to lead")
                time.sleep(0.01)
            taken.append(time.perf_counter() - killed)
            while _position(other) <= seen:
                _give_up_after(killed, "the other engine to apply the log")
                time.sleep(0.01)
            applying.append(time.perf_counter() - killed)
            leader.start("/healthz")
    finally:
        stop.set()
        for node in nodes:
            node.stop()
    p50, p99 = percentile(applying, 50), percentile(applying, 99)
    return Figure(
        ROW, name, data=f"{kills} kills, 2 nodes (`claims serve`, one process each), writes streaming into both, "
        "LEDGER_LEASE_RETRY_SECONDS 0.5",
        ours=p50, unit="s p50", goal=GOAL, met=p99 < 5.0, lower_is_better=True,
        notes=f"kill to the new leader applying past the position seen at the kill: p99 {p99:.2f} s; kill to "
        f"the lease taken p50 {percentile(taken, 50):.2f} s, p99 {percentile(taken, 99):.2f} s",
    )


def _two_nodes(ctx: Context, name: str) -> Figure:
    seconds = 5.0 if ctx.quick else 15.0
    if ctx.remaining() < seconds * 2 + 40:
        raise CouldNotRun(f"about {seconds * 2 + 40:.0f} s needed, {max(0.0, ctx.remaining()):.0f} s left")
    nodes, token, keys = _nodes(ctx, "nodes")
    try:
        one = _rate([nodes[0]] * CLIENTS, token, keys, seconds)
        two = _rate([nodes[i % 2] for i in range(CLIENTS)], token, keys, seconds)
    finally:
        for node in nodes:
            node.stop()
    return Figure(
        ROW, name, data=f"{CLIENTS} closed-loop clients (threads, one connection each) for {seconds:g} s; "
        "2 `claims serve` processes (one process each) on one PostgreSQL",
        ours=two, unit="writes/s", baseline=one, baseline_name="the same clients on one node", goal=">= 1x",
        met=two >= one, notes="the client threads share the benchmark's one process: on 2 cores, clients, "
        "nodes and PostgreSQL compete for the same CPU",
    )


def _rate(targets: list[Server], token: str, keys: list[str], seconds: float) -> float:
    stop = threading.Event()
    counts = [[0] for _ in targets]
    threads = [threading.Thread(target=_write_loop, args=(node, token, keys, stop, count), daemon=True)
               for node, count in zip(targets, counts, strict=True)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(30)
    return sum(c[0] for c in counts) / (time.perf_counter() - started)


def _write_loop(node: Server, token: str, keys: list[str], stop: threading.Event, done: list[int]) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        body = json.dumps({"party": {"id": "bench-party", "name": "Bench Party"}, "said_at": "2015-09-14",
                           "quote": f"bench {n}"}).encode()
        request = urllib.request.Request(
            f"{node.base}/v1/claims/{keys[n % len(keys)]}/assertions", data=body, method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                if response.status == 201:
                    done[0] += 1
        except (urllib.error.URLError, OSError):  # the node was killed: the others go on
            time.sleep(0.05)


def _register(node: Server, token: str, key: str) -> str:
    body = json.dumps({"statement": f"Bench claim {key} holds.", "key": key}).encode()
    request = urllib.request.Request(
        f"{node.base}/v1/claims", data=body, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 201:
            raise CouldNotRun(f"a registration answered {response.status}")
    return key


def _health(node: Server) -> dict[str, object]:
    try:
        _, body = http_json(f"{node.base}/healthz", timeout=2)
    except (OSError, ValueError):
        return {}
    projections = body.get("projections") if isinstance(body, dict) else None
    return projections if isinstance(projections, dict) else {}


def _position(node: Server) -> int:
    position = _health(node).get("position")
    return position if isinstance(position, int) else -1


def _give_up_after(since: float, what: str, seconds: float = 30.0) -> None:
    if time.perf_counter() - since > seconds:
        raise CouldNotRun(f"waited {seconds:g} s for {what}")
