"""Row 14: several nodes on one PostgreSQL ledger (docs/operations.md, "Several machines").

Engine failover: two `claims serve` processes on a fresh schema, writes streaming into one
of them from a client thread; the node whose engine leads (its /healthz says `lease: leader`)
is SIGKILLed, and the time is taken from the kill until the other node's engine leads and
has applied a position past the one it saw at the kill. The killed node is started again (it
stands by) and the next kill takes whichever leads. p50 and p99 over the kills; goal: < 5 s.

Write rate with two nodes beside one: the same closed-loop clients (threads, one connection
each, assertions on random claims of their own), all on one node, then half on each of two.

Reads from a hot standby: a private primary and its streaming standby (initdb, pg_basebackup
-R, on free ports; PostgreSQL's server programs needed), one `claims serve` reading from the
primary and one with LEDGER_READ_DATABASE_URL naming the standby, both on the same ledger;
closed-loop `GET /v1/claims/{id}` on each in turn, in the same run. Both must answer the same
claims at the same versions (the standby's node reading from the standby all along): the row is
about correctness; on one machine the standby adds no CPU, only on its own machine does it
take the primary's read load.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.context import Context
from bench.harness import (
    CouldNotRun,
    Figure,
    Server,
    could_not_run,
    free_port,
    http_json,
    ledger_server,
    make_token,
    number,
    percentile,
    reason,
    start_ledger_server,
    tail,
)
from bench.load import closed_loop

ROW = 14
GOAL = "p99 < 5 s"
CLIENTS = 16
CLAIMS = 50
READ_CONNECTIONS = 8
READ_GOAL = ">= 0.8x"
PG_USER = "postgres"  # initdb and the server refuse to run as root: they run as this user then


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


def standby_reads(ctx: Context) -> list[Figure]:
    name = f"HTTP reads GET /v1/claims/{{id}}, {READ_CONNECTIONS} connections, from a hot standby vs the primary"
    try:
        return [_standby_reads(ctx, name)]
    except Exception as e:
        return [could_not_run(ROW, name, reason(e), goal=READ_GOAL)]


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


def _standby_reads(ctx: Context, name: str) -> Figure:
    seconds = 5.0 if ctx.quick else 15.0
    if ctx.remaining() < seconds * 2 + 60:
        raise CouldNotRun(f"about {seconds * 2 + 60:.0f} s needed, {max(0.0, ctx.remaining()):.0f} s left")
    workdir = ctx.stores.dir / f"standby-{uuid.uuid4().hex[:6]}"
    workdir.mkdir()
    with _private_pair() as (primary_port, standby_port):
        url = f"postgresql://postgres@127.0.0.1:{primary_port}/postgres?schema=bench"
        nodes = [ledger_server(url, workdir) for _ in range(2)]
        for node in nodes:
            node.env.update(LEDGER_SIGNING_KEY_FILE=str(workdir / "ledger-signing-key.pem"))
        nodes[1].env.update(LEDGER_READ_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{standby_port}/postgres",
                            LEDGER_READ_MAX_LAG_SECONDS="60")
        try:
            start_ledger_server(nodes[0])
            token = make_token(url, "recorder", workdir)
            keys = [_register(nodes[0], token, f"standby-{i}") for i in range(CLAIMS)]
            start_ledger_server(nodes[1])
            paths = [f"/v1/claims/{key}" for key in keys]
            _wait_same(nodes, paths)  # the standby's projections hold every claim
            _standby_serves(nodes[1])
            alone = closed_loop(nodes[0].port, "get", paths, READ_CONNECTIONS, seconds)
            alone.check("reads from the primary")
            standby = closed_loop(nodes[1].port, "get", paths, READ_CONNECTIONS, seconds)
            standby.check("reads from the standby")
            _standby_serves(nodes[1])
            _wait_same(nodes, paths)
        finally:
            for node in nodes:
                node.stop()
    ratio = standby.rate / alone.rate if alone.rate else 0.0
    return Figure(
        ROW, name, data=f"{CLAIMS} claims; {READ_CONNECTIONS} closed-loop connections ({alone.tool}) for "
        f"{seconds:g} s each; `claims serve` (one process) with LEDGER_READ_DATABASE_URL naming a private streaming "
        "standby, beside one reading from its primary",
        ours=standby.rate, unit="reads/s", baseline=alone.rate, baseline_name="the same reads from the primary",
        goal=READ_GOAL, met=ratio >= 0.8,
        notes=f"p99 {number(standby.p99_ms or 0)} ms from the standby, {number(alone.p99_ms or 0)} ms from the "
        f"primary ({standby.tool}); both nodes answered every claim at the same version. Both read a claim by"
        " the event loop's batched lookup (api/lookups.py), on the standby the router chose by its last lag"
        " measure. On 2 cores the node, its clients and both PostgreSQL servers share the CPU: a standby adds"
        " capacity only on a machine of its own",
    )


def _standby_serves(node: Server) -> None:
    """The node's reads go to its standby (/healthz: the standby ok, not counting as behind)."""
    _, health = http_json(f"{node.base}/healthz")
    replicas = health.get("replicas") if isinstance(health, dict) else None
    if not replicas or replicas[0].get("status") != "ok":
        raise CouldNotRun(f"the standby does not serve this node's reads: {replicas}")


def _wait_same(nodes: list[Server], paths: list[str], seconds: float = 30.0) -> None:
    """Until both nodes answer every claim at the same version (ETag)."""
    since = time.perf_counter()
    while True:
        versions = [[_etag(node, path) for path in paths] for node in nodes]
        if versions[0] == versions[1] and None not in versions[0]:
            return
        _give_up_after(since, "the standby's node to answer every claim as the primary's does", seconds)
        time.sleep(0.2)


def _etag(node: Server, path: str) -> str | None:
    try:
        with urllib.request.urlopen(node.base + path, timeout=5) as response:
            return str(response.headers.get("ETag")) if response.status == 200 else None
    except (urllib.error.URLError, OSError):
        return None


def _pg_bin() -> Path:
    candidates = [os.environ.get("LEDGER_TEST_PG_BIN", "")]
    if shutil.which("pg_config"):
        found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(found.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    for candidate in filter(None, candidates):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_basebackup").exists():
            return Path(candidate)
    raise CouldNotRun("PostgreSQL's server programs (initdb, pg_ctl, pg_basebackup) are not installed")


def _pg(bindir: Path, program: str, *args: str) -> None:
    as_user = ["runuser", "-u", PG_USER, "--"] if os.geteuid() == 0 else []
    done = subprocess.run([*as_user, str(bindir / program), *args], capture_output=True, text=True, timeout=120,
                          check=False)
    if done.returncode != 0:
        raise CouldNotRun(f"{program} failed ({done.returncode}): {tail(done.stdout + done.stderr)}")


def _pg_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="claims-bench-pg-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam(PG_USER)
        os.chown(root, owner.pw_uid, owner.pw_gid)
    return root


def _pg_start(bindir: Path, root: Path, port: int, **settings: str) -> None:
    options = " ".join([f"-p {port}", f"-k {root}", "-c listen_addresses=127.0.0.1",
                        *(f"-c {k}={v}" for k, v in settings.items())])
    _pg(bindir, "pg_ctl", "start", "-w", "-t", "60", "-D", str(root / "data"), "-l", str(root / "server.log"),
        "-o", options)


@contextmanager
def _private_pair() -> Iterator[tuple[int, int]]:
    """A private primary and its streaming hot standby on free ports: (primary's port, standby's)."""
    bindir = _pg_bin()
    roots: list[Path] = []
    try:
        primary, standby = _pg_root(), _pg_root()
        roots += [primary, standby]
        primary_port, standby_port = free_port(), free_port()
        _pg(bindir, "initdb", "-D", str(primary / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync")
        with (primary / "data" / "pg_hba.conf").open("a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        _pg_start(bindir, primary, primary_port, wal_level="replica", max_wal_senders="4")
        _pg(bindir, "pg_basebackup", "-D", str(standby / "data"), "-R", "-X", "stream", "-c", "fast",
            "-h", "127.0.0.1", "-p", str(primary_port), "-U", "postgres")
        _pg_start(bindir, standby, standby_port, hot_standby="on")
        yield primary_port, standby_port
    finally:
        for root in reversed(roots):
            if (root / "data" / "postmaster.pid").exists():
                try:
                    _pg(bindir, "pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(root / "data"))
                except CouldNotRun as e:
                    print(f"warning: a private PostgreSQL did not stop: {e}")
            shutil.rmtree(root, ignore_errors=True)
