"""Load from outside the server process: wrk when installed, else bench.loadgen.

Both give the same figures (requests/s, p50/p99 latency, non-2xx answers) for the same
request mixes: GETs of random paths, or POSTed assertions with unique act_ids.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import CouldNotRun, child_env, tail
from bench.loadgen import assertion_body

WRK_SCRIPT = r"""
local kind = "%(kind)s"
local paths = { %(paths)s }
local token = %(token)s
local prefix = %(prefix)s
local sent = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  math.randomseed(tid * 7919 + 17)
end

function request()
  local target = paths[math.random(#paths)]
  if kind == "get" then
    if token ~= "" then
      return wrk.format("GET", target, {["Authorization"] = "Bearer " .. token})
    end
    return wrk.format("GET", target)
  end
  sent = sent + 1
  local act_id = string.format("%%s-%%d-%%d", prefix, tid, sent)
  local body = string.format(%(body)s, act_id)
  return wrk.format("POST", "/v1/claims/" .. target .. "/assertions", {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
  }, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%%d,"duration_us":%%d,"non2xx":%%d,"socket_errors":%%d,' ..
    '"p50_us":%%d,"p99_us":%%d,"mean_us":%%.1f}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


@dataclass
class LoadResult:
    tool: str
    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50_ms: float | None
    p99_ms: float | None
    detail: str = ""

    @property
    def rate(self) -> float:
        return (self.requests - self.non2xx) / self.seconds if self.seconds > 0 else 0.0

    def check(self, what: str) -> None:
        """Refuse a run that mostly failed: its rate would measure errors, not work."""
        if self.requests == 0 or self.non2xx + self.socket_errors > max(10, self.requests // 100):
            raise CouldNotRun(
                f"{what}: {self.non2xx} non-2xx and {self.socket_errors} socket errors in "
                f"{self.requests} requests ({self.tool}) {self.detail}".strip()
            )


def tool() -> str:
    """wrk when installed, unless BENCH_LOAD_TOOL=python asks for the Python generator."""
    if os.environ.get("BENCH_LOAD_TOOL", "").lower() == "python":
        return "python"
    return "wrk" if shutil.which("wrk") else "python"


def _lua_string(value: str) -> str:
    return json.dumps(value)  # our values are ASCII: JSON string escapes are Lua's too


def _wrk(port: int, kind: str, paths: list[str], connections: int, seconds: float, token: str,
         prefix: str) -> LoadResult:
    template = assertion_body("ACTID").decode().replace("%", "%%").replace("ACTID", "%s")
    script = WRK_SCRIPT % {
        "kind": kind, "paths": ", ".join(_lua_string(p) for p in paths), "token": _lua_string(token),
        "prefix": _lua_string(prefix), "body": _lua_string(template),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        script_path = f.name
    threads = min(2, connections)
    try:
        result = subprocess.run(
            ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
             "--timeout", "10s", "-s", script_path, f"http://127.0.0.1:{port}/"],
            capture_output=True, text=True, timeout=seconds + 60, check=False,
        )
    finally:
        Path(script_path).unlink(missing_ok=True)
    line = next((x for x in result.stdout.splitlines() if x.startswith("BENCHJSON ")), None)
    if result.returncode != 0 or line is None:
        raise CouldNotRun(f"wrk failed ({result.returncode}): {tail(result.stderr or result.stdout)}")
    data = json.loads(line.removeprefix("BENCHJSON "))
    return LoadResult(
        "wrk", data["requests"], data["duration_us"] / 1e6, data["non2xx"], data["socket_errors"],
        data["p50_us"] / 1000, data["p99_us"] / 1000,
    )


class PythonLoad:
    """bench.loadgen in its own processes; started now, results on wait()."""

    def __init__(self, spec: dict[str, Any]) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(spec, f)
            self.spec_path = f.name
        self.seconds = spec["seconds"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen", self.spec_path],
            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def wait(self) -> LoadResult:
        try:
            out, err = self.proc.communicate(timeout=self.seconds + 60)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            Path(self.spec_path).unlink(missing_ok=True)
        if self.proc.returncode != 0 or not out.strip():
            raise CouldNotRun(f"the Python load generator failed ({self.proc.returncode}): {tail(err)}")
        data = json.loads(out.strip().splitlines()[-1])
        detail = "; ".join(data["errors"][:2])
        if data.get("late"):
            detail = f"{data['late']} requests sent >10 ms late; " + detail
        return LoadResult(
            "python", data["requests"], data["seconds"], data["non2xx"], data["socket_errors"],
            data["p50_ms"], data["p99_ms"], detail,
        )


def python_load(port: int, kind: str, paths: list[str], connections: int, seconds: float, *,
                token: str = "", prefix: str = "w", rate: float | None = None) -> PythonLoad:
    return PythonLoad({
        "port": port, "kind": kind, "paths": paths, "connections": connections, "seconds": seconds,
        "processes": 2, "rate": rate, "token": token, "prefix": prefix,
    })


def closed_loop(port: int, kind: str, paths: list[str], connections: int, seconds: float, *,
                token: str = "", prefix: str = "w") -> LoadResult:
    """`connections` clients, each sending its next request as soon as the last is answered."""
    if tool() == "wrk":
        return _wrk(port, kind, paths, connections, seconds, token, prefix)
    return python_load(port, kind, paths, connections, seconds, token=token, prefix=prefix).wait()
