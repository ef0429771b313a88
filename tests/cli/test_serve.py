"""`claims serve` as a real process: writes and reads over real HTTP, then stops cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.api import story

CLAIMS = [str(Path(sys.executable).with_name("claims"))]
if not Path(CLAIMS[0]).exists():
    CLAIMS = [sys.executable, "-c", "from cli.main import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@contextmanager
def serving(
    database_url: str, *args: str, claims: Sequence[str] = CLAIMS, environ: Mapping[str, str] = os.environ,
    cwd: Path | None = None,
) -> Iterator[tuple[subprocess.Popen[str], str, dict[str, str]]]:
    port = free_port()
    env = {**environ, "LEDGER_DATABASE_URL": database_url}
    process = subprocess.Popen(
        [*claims, "serve", "--port", str(port), "--log-level", "warning", *args], env=env, cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "claims serve did not come up"
            time.sleep(0.2)
        yield process, base, env
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def write_and_read(base: str, env: dict[str, str]) -> None:
    made = subprocess.run([*CLAIMS, "token", "create", "--role", "recorder"], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.post("/v1/claims", json=story.registration(), headers=headers).status_code == 201
        denial = http.post(f"/v1/claims/{story.KEY}/denials", json=story.peskov_denies(), headers=headers)
        assert denial.status_code == 201, denial.text
        claim = http.get(f"/v1/claims/{story.KEY}", params={"min_position": denial.json()["position"]})
        assert claim.status_code == 200, claim.text
        assert claim.json()["status"] == "denied"


@pytest.mark.slow
def test_claims_serve_runs_the_whole_ledger_in_one_process(database_url: str) -> None:
    with serving(database_url) as (process, base, env):
        write_and_read(base, env)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert base in out
    assert "claims token create --role recorder" in out


@pytest.mark.slow
@pytest.mark.postgres
def test_claims_serve_with_workers_runs_api_workers_and_a_projection_process_stopped_together(
    tmp_path: Path,
) -> None:
    from tests.conftest import drop_schema, new_database_url

    url = new_database_url("postgres", tmp_path)
    try:
        with serving(url, "--workers", "2") as (process, base, env):
            children = children_of(process.pid)
            assert len([c for c in children if alive(c)]) >= 3  # 2 API workers + projections
            write_and_read(base, env)
            metrics = httpx.get(f"{base}/metrics", timeout=5).text
            assert "claims_http_requests_total" in metrics
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=40)
        assert process.returncode == 0
        deadline = time.monotonic() + 10
        while any(alive(c) for c in children):
            assert time.monotonic() < deadline, "a child outlived claims serve"
            time.sleep(0.1)
    finally:
        drop_schema(url)


@pytest.mark.slow
def test_when_one_process_dies_claims_serve_stops_the_rest(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with serving(url, "--workers", "2") as (process, _, _):
        children = [c for c in children_of(process.pid) if alive(c)]
        spawned = [c for c in children if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
        os.kill(spawned[0], signal.SIGKILL)  # the first one started: the projection process
        _, err = process.communicate(timeout=40)
    assert process.returncode == 1
    assert "stopping everything: projections exited (-9)" in err
    deadline = time.monotonic() + 10
    while any(alive(c) for c in children):
        assert time.monotonic() < deadline, "a child outlived claims serve"
        time.sleep(0.1)


@pytest.mark.slow
def test_claims_project_follows_the_log_until_interrupted(tmp_path: Path) -> None:
    from projections.queries import ReadModels
    from store.db import ReadStore
    from store.event_store import open_ledger
    from store.settings import Database

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(Database.from_url(url))
    try:
        written = ledger.register_claim(story.STATEMENT, story.KEY)
    finally:
        ledger.close()
    process = subprocess.Popen([*CLAIMS, "project"], env={**os.environ, "LEDGER_DATABASE_URL": url},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    store = ReadStore(Database.from_url(url))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if ReadModels(store).position() >= (written.position or 0):
                    break
            except Exception:  # tables not made yet
                pass
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "claims project did not project the claim"
            time.sleep(0.1)
        assert ReadModels(store).claim(story.KEY) is not None
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=20)
        assert process.returncode == 0
    finally:
        store.close()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
