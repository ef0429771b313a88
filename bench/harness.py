"""What every benchmark row shares: figures and the table, the machine, fresh stores, servers.

Nothing here measures by itself; the rows (rows_*.py) do, each beside its baseline.
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
POSTGRES_URL = os.environ.get("LEDGER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


class CouldNotRun(Exception):
    """A row (or part of one) that cannot be measured here; the message says why."""


# Figures and the table.
@dataclass
class Figure:
    """One line of the table: our figure beside its baseline, measured in the same run."""

    row: int
    name: str
    data: str = ""
    ours: float | None = None
    unit: str = ""
    baseline: float | None = None
    baseline_name: str = ""
    goal: str = ""
    met: bool | None = None
    notes: str = ""
    error: str | None = None
    # For figures where smaller is better (latencies), the ratio is baseline/ours.
    lower_is_better: bool = False

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.baseline is None or self.ours == 0 or self.baseline == 0:
            return None
        return self.baseline / self.ours if self.lower_is_better else self.ours / self.baseline

    def cells(self) -> list[str]:
        return [" ".join(c.split()) for c in self._cells()]  # one line each, whatever errors say

    def _cells(self) -> list[str]:
        if self.error is not None:
            return [f"{self.row}. {self.name}", self.data or "-", "could not run", "-", "-", self.goal or "-",
                    "-", self.error]
        ours = "-" if self.ours is None else f"{number(self.ours)} {self.unit}".strip()
        if self.baseline is None:
            baseline = self.baseline_name or "-"
        else:
            baseline = f"{number(self.baseline)} {self.unit}".strip()
            if self.baseline_name:
                baseline += f" ({self.baseline_name})"
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}"
        met = "-" if self.met is None else ("yes" if self.met else "NO")
        return [f"{self.row}. {self.name}", self.data or "-", ours, baseline, ratio, self.goal or "-", met,
                self.notes]


def could_not_run(row: int, name: str, reason: str, data: str = "", goal: str = "") -> Figure:
    return Figure(row, name, data=data, goal=goal, error=reason)


def reason(error: Exception) -> str:
    """Why a figure could not be measured; an unexpected error's traceback goes to stderr too."""
    if isinstance(error, CouldNotRun):
        return str(error)
    traceback.print_exception(error, file=sys.stderr)
    return f"{type(error).__name__}: {str(error).strip()}"


def number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


HEADERS = ["figure", "data", "ours", "baseline", "ratio", "goal", "met", "notes"]


def text_table(figures: Sequence[Figure]) -> str:
    rows = [HEADERS, *[f.cells() for f in figures]]
    # Notes can be long: every column but the last is padded.
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS) - 1)]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
        if n == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 5)
    return "\n".join(lines)


def markdown_table(figures: Sequence[Figure]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(cell(c) for c in f.cells()) + " |" for f in figures]
    return "\n".join(lines)


# The machine.
def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            postgres = f"PostgreSQL {row[0] if row else '?'}"
    except psycopg.Error as e:
        postgres = f"unreachable ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = "?"
    import sqlite3

    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": ram,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "postgres": postgres,
        "os": f"{platform.system()} {platform.release()}",
        "commit": commit or "?",
    }


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "?"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# Fresh stores.
def postgres_problem() -> str | None:
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        return f"PostgreSQL at {POSTGRES_URL} is unreachable: {str(e).strip() or type(e).__name__}"
    return None


class Stores:
    """Fresh SQLite files and PostgreSQL schemas for one run; all removed at the end."""

    def __init__(self) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        self.dir = Path(tempfile.mkdtemp(prefix=f"claims-bench-{self.run_id}-"))
        self.schemas: list[str] = []

    def url(self, backend: str, label: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{self.dir / f'{label}.db'}"
        # Other work on this machine may restart PostgreSQL: wait a little before giving up.
        deadline = time.monotonic() + 30
        while (problem := postgres_problem()) is not None and time.monotonic() < deadline:
            time.sleep(1)
        if problem is not None:
            raise CouldNotRun(problem)
        schema = f"bench_{self.run_id}_{label}".lower().replace("-", "_")
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        self.schemas.append(schema)
        return f"{POSTGRES_URL}?schema={schema}"

    def cleanup(self) -> None:
        if self.schemas:
            try:
                with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                    for schema in self.schemas:
                        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            except psycopg.Error as e:
                print(f"warning: could not drop schemas {self.schemas}: {e}", file=sys.stderr)
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


# Subprocesses.
def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PATH"] = str(VENV_BIN) + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


def claims_command() -> list[str]:
    exe = VENV_BIN / "claims"
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from cli.main import main; main()"]


@dataclass
class ChildResult:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    max_rss_mib: float


def peak_rss_mib(pid: int | str = "self") -> float:
    """VmHWM: the peak RSS of the process's own memory since its exec.

    Not ru_maxrss: Linux carries the parent's peak across fork and exec into it, so
    every child of a big benchmark process would report at least the benchmark's size.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def run_measured(args: Sequence[str], env: dict[str, str], cwd: Path, timeout: float) -> ChildResult:
    """Run a child process: its wall time and its peak RSS (VmHWM, sampled every 20 ms)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(args), env=env, cwd=cwd, stdout=out, stderr=err)
        deadline = started + timeout
        peak = 0.0
        try:
            while True:
                peak = max(peak, peak_rss_mib(proc.pid))
                pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    proc.kill()
                    pid, status, _ = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.02)
        except BaseException:  # the benchmark is stopping: the child must not hold its stores
            proc.kill()
            proc.wait()
            raise
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return ChildResult(proc.returncode, stdout, stderr, seconds, peak)


def run_child_task(task: str, *args: str, cwd: Path, timeout: float = 900) -> tuple[dict[str, Any], ChildResult]:
    """Run one `bench.child` task in its own process; its JSON answer and its rusage."""
    result = run_measured([sys.executable, "-m", "bench.child", task, *args], child_env(), cwd, timeout)
    if result.returncode != 0:
        raise CouldNotRun(f"child {task} exited {result.returncode}: {tail(result.stderr)}")
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    # The child's own last reading is exact; the sampled one covers a child that died early.
    result.max_rss_mib = max(result.max_rss_mib, float(answer.get("peak_rss_mib", 0)))
    return answer, result


def tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return " / ".join(kept)[:400] or "(no output)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, timeout: float = 5.0, token: str = "") -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body or b"null")
        except ValueError:
            return e.code, None


@dataclass
class Server:
    """A server subprocess on a free local port; stopped with SIGTERM (then SIGKILL)."""

    args: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    name: str
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="bench-server-", suffix=".log")[1]))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str, timeout: float = 60.0, ready: Callable[[int, Any], bool] | None = None) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.args, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(ready_path, timeout, ready)
        except BaseException:  # not ready, or the benchmark is stopping: no server outlives it
            self.stop()
            raise

    def _wait_ready(self, ready_path: str, timeout: float, ready: Callable[[int, Any], bool] | None) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CouldNotRun(f"{self.name} exited {self.proc.returncode} at start: {tail(self.log_text())}")
            try:
                status, body = http_json(self.base + ready_path, timeout=2)
                last = f"{status} {str(body)[:200]}"
                if status == 200 and (ready is None or ready(status, body)):
                    return
            except (OSError, ValueError) as e:
                last = str(e)
            time.sleep(0.2)
        raise CouldNotRun(f"{self.name} was not ready within {timeout:g} s (last answer: {last})")

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.log.unlink(missing_ok=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def served(workers: int) -> str:
    """How a figure's server ran: `claims serve` as it starts by default, or with --workers N."""
    return "one process" if workers == 1 else f"--workers {workers}"


def ledger_server(url: str, cwd: Path, *, threads: int | None = None, workers: int = 1) -> Server:
    """`claims serve` on a free port: the API and the projection engine in one process, or
    `workers` API processes and a projection process."""
    port = free_port()
    env = child_env(LEDGER_DATABASE_URL=url)
    if threads is not None:
        env["LEDGER_API_THREADS"] = str(threads)
    return Server(
        [*claims_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         *(["--workers", str(workers)] if workers > 1 else [])],
        env, cwd, port, "claims serve" + (f" --workers {workers}" if workers > 1 else ""),
    )


def start_ledger_server(server: Server, timeout: float = 120.0) -> None:
    """Start it and wait until the projections have caught up with the log (lag 0)."""

    def caught_up(status: int, body: Any) -> bool:
        return isinstance(body, dict) and (body.get("projections") or {}).get("lag") == 0

    server.start("/healthz", timeout=timeout, ready=caught_up)


def bare_server(cwd: Path, *, starlette: bool = False) -> Server:
    """A bare baseline (bench/bare_app.py) under the same uvicorn settings as `claims serve`: the
    FastAPI app, or the bare Starlette one (the like-for-like baseline of the fast lane)."""
    port = free_port()
    target = "bench.bare_app:starlette_app" if starlette else "bench.bare_app:app"
    return Server(
        [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning", "--timeout-graceful-shutdown", "10"],
        child_env(), cwd, port, "bare Starlette" if starlette else "bare FastAPI",
    )


def make_token(url: str, role: str, cwd: Path) -> str:
    """`claims token create --role R`: the token is the one line on stdout."""
    result = subprocess.run(
        [*claims_command(), "token", "create", "--role", role, "--label", "benchmark"],
        env=child_env(LEDGER_DATABASE_URL=url), cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )
    token = result.stdout.strip()
    if result.returncode != 0 or not token or "\n" in token:
        raise CouldNotRun(f"`claims token create` failed ({result.returncode}): {tail(result.stderr)}")
    return token


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by nearest rank; values need not be sorted."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]
