"""The ledger as real processes a test can kill, restart and read the logs of.

`LedgerServer` runs `claims serve` in its own process group on a fixed port, so a
restart comes back where clients already point; everything it prints is kept in one
log file across restarts. Tokens are made straight in the ledger's database (what
`claims token create` does, without paying a process start per role).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from store.db import ReadStore
from store.settings import Database
from store.tokens import Role, TokenStore
from tests.cli.test_serve import CLAIMS, free_port

START_TIMEOUT = 60.0


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g} s waiting until {what}")
        time.sleep(interval)


def make_token(database_url: str, role: str, label: str | None = None) -> tuple[str, str]:
    """(token id, token) of a new token with `role` in the ledger at `database_url`."""
    store = ReadStore(Database.from_url(database_url), pool_size=1)
    try:
        tokens = TokenStore(store)
        tokens.ensure_table()
        record, token = tokens.create(Role(role), label=label or f"reliability {role}")
    finally:
        store.close()
    return record.token_id, token


@dataclass
class LedgerServer:
    """`claims serve --port P [args]` on `database_url`, restartable on the same port."""

    database_url: str
    workdir: Path
    args: tuple[str, ...] = ()
    extra_env: dict[str, str] = field(default_factory=dict)
    log_level: str = "warning"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    # One client for the probes (making a client per call costs ~50 ms); a fresh connection
    # each time, so a restart leaves no dead connection behind.
    http: httpx.Client = field(
        default_factory=lambda: httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0)),
        repr=False,
    )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / f"serve-{self.port}.log"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ, "LEDGER_DATABASE_URL": self.database_url,
            "LEDGER_SIGNING_KEY_FILE": str(self.workdir / "ledger-signing-key.pem"), **self.extra_env,
        }

    def start(self, *, healthy: bool = True) -> None:
        """Start and wait until it answers /healthz (with 200 when `healthy`)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*CLAIMS, "serve", "--port", str(self.port), "--log-level", self.log_level, *self.args],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.starts += 1

        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"claims serve exited with {self.process.returncode}:\n{self.logs()[-3000:]}")
            try:
                status = self.http.get(f"{self.base}/healthz", timeout=2).status_code
            except httpx.TransportError:
                return False
            return status == 200 or not healthy

        wait_until(up, START_TIMEOUT, f"claims serve answers on {self.base}")

    def kill(self) -> None:
        """SIGKILL the server and every process it started: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(30)

    def stop(self) -> None:
        """A graceful stop (SIGTERM), a kill when it does not end in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
        else:
            self.kill()  # anything of its group still left

    def restart_after_kill(self) -> None:
        self.kill()
        self.start()

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def claims(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A `claims` command on the same database, as its own process."""
        return subprocess.run([*CLAIMS, *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def health(self) -> dict[str, Any]:
        body = self.http.get(f"{self.base}/healthz").json()
        assert isinstance(body, dict)
        return body

    def wait_projected(self, timeout: float = 60) -> None:
        """Until the projections hold every event in the store."""

        def caught_up() -> bool:
            projections = self.health()["projections"]
            return projections["lag"] == 0 and projections["position"] == projections["head"]

        wait_until(caught_up, timeout, "the server's projections caught up")

    def head(self) -> int:
        """The newest log position, as the server sees it."""
        return int(self.health()["projections"]["head"])


def open_ledger_at(database_url: str, start_at: float) -> str:
    """Open the ledger (and close it) at wall-clock time `start_at`, as every process of a
    starting server does; "ok", or the error it met."""
    from service.runtime import Runtime

    time.sleep(max(0.0, start_at - time.time()))
    try:
        Runtime.open(database_url, pool_size=1).close()
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return "ok"
