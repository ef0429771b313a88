"""`claims audit --watch --mirror DIR`: the monitor follows a real server, verifies each new
checkpoint, keeps DIR/status.json, and stops (or with --keep-going, goes on) at an inconsistency."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from domain.values import claim_id_for_key
from tests.audit.proxy import TamperingProxy
from tests.audit.test_audit import CLAIMS, Server, record_more, seed, start_server
from tests.conftest import new_database_url

WAIT = 30.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("monitor")
    url = new_database_url("sqlite", workdir)
    seed(url)
    running = start_server(url, workdir)
    running.wait_projected()
    yield running
    running.stop()


def status(directory: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((directory / "status.json").read_text()))
    except FileNotFoundError:
        return {}


def until(what: str, holds: Callable[[], bool], process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if holds():
            return
        if process.poll() is not None and not holds():
            raise AssertionError(f"the monitor exited ({process.returncode}) before {what}:\n{log.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"not within {WAIT} s: {what}\n{log.read_text()}")


def monitor(server: Server, base: str, directory: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [*CLAIMS, "audit", "--url", base, "--mirror", str(directory), "--watch", "--interval", "0.5", *extra],
            env={**server.env, "LEDGER_TOKEN": server.token}, stdout=out, stderr=subprocess.STDOUT,
        )


def rewrite_statement(claim_path: str) -> Callable[[str, bytes], bytes]:
    def rewrite(path: str, body: bytes) -> bytes:
        return body.replace(b"commented on", b"denied") if path == claim_path else body
    return rewrite


def test_the_monitor_verifies_each_new_checkpoint_and_stops_at_an_inconsistency(
    server: Server, tmp_path: Path
) -> None:
    proxy = TamperingProxy(server.base)
    mirror, log = tmp_path / "mirror", tmp_path / "monitor.log"
    process = monitor(server, proxy.base, mirror, log)
    try:
        size = server.get("/v1/audit/checkpoint").json()["tree_size"]
        until(f"tree size {size} verified", lambda: status(mirror).get("tree_size") == size, process, log)
        assert status(mirror)["ok"] is True and status(mirror)["problems"] == []

        record_more(server.database_url, 3, prefix="watched")
        until(f"tree size {size + 3} verified", lambda: status(mirror).get("tree_size") == size + 3, process, log)

        forged = str(claim_id_for_key("forged-0"))  # the proxy lies about it from its first event on
        proxy.rewrite = rewrite_statement(f"/v1/claims/{forged}")
        record_more(server.database_url, 1, prefix="forged")
        assert process.wait(WAIT) == 1, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        proxy.close()
    final = status(mirror)
    assert final["ok"] is False and final["tree_size"] == size + 3  # the last verified state
    assert any(f"claim {forged} (forged-0): the server serves statement" in p for p in final["problems"])
    assert f"problem: claim {forged} (forged-0)" in log.read_text()


def test_with_keep_going_the_monitor_reports_and_goes_on(server: Server, tmp_path: Path) -> None:
    proxy = TamperingProxy(server.base)
    mirror, log = tmp_path / "mirror", tmp_path / "monitor.log"
    process = monitor(server, proxy.base, mirror, log, "--keep-going", "--sample", "0")
    try:
        before = server.get("/v1/audit/checkpoint").json()["tree_size"]
        until(f"tree size {before} verified", lambda: status(mirror).get("tree_size") == before, process, log)
        claim = str(claim_id_for_key("kept-going-0"))
        proxy.rewrite = rewrite_statement(f"/v1/claims/{claim}")
        record_more(server.database_url, 1, prefix="kept-going")
        until("a problem reported", lambda: bool(status(mirror).get("problems")), process, log)
        assert status(mirror)["ok"] is False and status(mirror)["tree_size"] == before
        time.sleep(1.2)  # two more rounds at --interval 0.5: still watching
        assert process.poll() is None, log.read_text()

        proxy.rewrite = lambda path, body: body  # the server is honest again
        size = server.get("/v1/audit/checkpoint").json()["tree_size"]
        until("the honest tree verified", lambda: status(mirror).get("ok") is True, process, log)
        assert status(mirror)["tree_size"] == size == before + 1
    finally:
        process.terminate()
        process.wait(10)
        proxy.close()
    assert f"problem: claim {claim} (kept-going-0)" in log.read_text()
