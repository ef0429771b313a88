"""Row 10: from a new tree head to a checkpoint cosigned by two witnesses.

`claims serve` on a fresh SQLite ledger submits to two local `claims witness serve`
processes (LEDGER_WITNESS_INTERVAL 0.05 s). One claim is registered at a time, a little more
than the interval apart; after each, GET /v1/audit/checkpoint is polled until its tree
holds the write (the new tree head: the projections applied it) and then until the note
carries both witnesses' valid cosignatures. The figure is the second wait, p50 and p99; the
notes give the write's whole path, acknowledgement to cosigned checkpoint. No baseline: the
goal is absolute, a cosigned checkpoint within a second of the head (the default interval).
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from pathlib import Path

from audit.signing import load_keyring
from bench.context import Context
from bench.harness import (
    CouldNotRun,
    Figure,
    Server,
    child_env,
    claims_command,
    could_not_run,
    free_port,
    http_json,
    ledger_server,
    make_token,
    percentile,
    reason,
    start_ledger_server,
)
from cli.witness import witness_signer
from domain.note import Note, Verifier

ROW = 10
POLL_SECONDS = 0.002
WAIT_SECONDS = 10.0
INTERVAL = 0.05


def witness_latency(ctx: Context) -> list[Figure]:
    name = "new tree head to a checkpoint cosigned by 2 witnesses, sqlite"
    try:
        return [_measure(ctx, name)]
    except Exception as e:
        return [could_not_run(ROW, name, reason(e), goal="p99 < 1 s")]


def _witness(workdir: Path, number: int, log_key: str) -> tuple[Server, Verifier]:
    key = workdir / f"witness-{number}.pem"
    verifier = witness_signer(key, f"bench.witness/{number}").verifier
    port = free_port()
    server = Server(
        [*claims_command(), "witness", "serve", "--key", str(key), "--name", verifier.name, "--log", log_key,
         "--state", str(workdir / f"witness-{number}.db"), "--port", str(port), "--log-level", "warning"],
        child_env(), workdir, port, f"claims witness serve ({verifier.name})",
    )
    return server, verifier


def _measure(ctx: Context, name: str) -> Figure:
    samples = 30 if ctx.quick else 100
    if ctx.remaining() < samples * 0.2 + 30:
        raise CouldNotRun(f"about {samples * 0.2 + 30:.0f} s needed, {max(0.0, ctx.remaining()):.0f} s of the budget left")
    workdir = ctx.stores.dir / f"witness-{uuid.uuid4().hex[:6]}"
    workdir.mkdir()
    url = ctx.stores.url("sqlite", f"witnessed-{uuid.uuid4().hex[:6]}")
    key_file = workdir / "ledger-signing-key.pem"
    log_key = str(load_keyring(key_file).verifier)
    witnesses = [_witness(workdir, n, log_key) for n in (1, 2)]
    ledger = ledger_server(url, workdir)
    ledger.env.update(
        LEDGER_SIGNING_KEY_FILE=str(key_file), LEDGER_WITNESS_INTERVAL=str(INTERVAL),
        LEDGER_WITNESSES=",".join(f"{v} {s.base}" for s, v in witnesses),
    )
    verifiers = [v for _, v in witnesses]
    try:
        for server, _ in witnesses:
            server.start("/healthz")
        start_ledger_server(ledger)
        token = make_token(url, "recorder", workdir)
        after_head, after_ack, heads = [], [], []
        for i in range(samples + 3):  # the first three warm the path up
            size = _checkpoint(ledger)[0] + 1
            acknowledged = _register(ledger, token, i)
            head = _wait(ledger, size, [])
            cosigned = _wait(ledger, size, verifiers)
            if i >= 3:
                heads.append(head - acknowledged)
                after_head.append(cosigned - head)
                after_ack.append(cosigned - acknowledged)
            time.sleep(INTERVAL * 1.2)
    finally:
        ledger.stop()
        for server, _ in witnesses:
            server.stop()
    p50, p99 = percentile(after_head, 50), percentile(after_head, 99)
    return Figure(
        ROW, name, data=f"{samples} writes, one at a time, {INTERVAL * 1.2:.2f} s apart; 2 local witness processes",
        ours=p50 * 1000, unit="ms p50", goal="p99 < 1 s", met=p99 < 1.0,
        notes=f"p99 {p99 * 1000:.0f} ms; the write's acknowledgement to its tree head p50 "
        f"{percentile(heads, 50) * 1000:.0f} ms; acknowledgement to the cosigned checkpoint p50 "
        f"{percentile(after_ack, 50) * 1000:.0f} ms, p99 {percentile(after_ack, 99) * 1000:.0f} ms; "
        f"LEDGER_WITNESS_INTERVAL {INTERVAL} s; polled every {POLL_SECONDS * 1000:.0f} ms",
    )


def _register(ledger: Server, token: str, i: int) -> float:
    key = f"witnessed-{i}-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"statement": f"Bench claim {key} was witnessed.", "key": key, "subjects": ["bench"]}).encode()
    request = urllib.request.Request(
        f"{ledger.base}/v1/claims", data=body, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 201:
            raise CouldNotRun(f"a registration answered {response.status}")
    return time.perf_counter()


def _checkpoint(ledger: Server) -> tuple[int, Note]:
    status, body = http_json(f"{ledger.base}/v1/audit/checkpoint")
    if status != 200 or not isinstance(body, dict):
        raise CouldNotRun(f"GET /v1/audit/checkpoint answered {status}: {str(body)[:200]}")
    return int(body["tree_size"]), Note.parse(body["note"])


def _wait(ledger: Server, size: int, verifiers: list[Verifier]) -> float:
    """When the checkpoint held at least `size` events and valid cosignatures of all `verifiers`."""
    deadline = time.perf_counter() + WAIT_SECONDS
    while time.perf_counter() < deadline:
        found, note = _checkpoint(ledger)
        if found >= size and note.verified_by(verifiers) == verifiers:
            return time.perf_counter()
        time.sleep(POLL_SECONDS)
    raise CouldNotRun(f"waited {WAIT_SECONDS:g} s for a checkpoint of {size} events cosigned by {len(verifiers)}")
