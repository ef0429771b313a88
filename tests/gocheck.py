"""Go's reference transparency-log code as an independent checker (tests/go/main.go).

`go_check` is a session-scoped fixture: it builds the program once per test session, into a
temporary directory, offline (GOPATH mode against Debian's golang-golang-x-mod-dev, which
`.ci/run` installs; the first build fills Go's build cache, about ten seconds), and hands
back a runner. When Go or that package is missing the tests
that need it are skipped, and fail under CI, where they must run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent / "go"
GOPATH = Path(os.environ.get("LEDGER_TEST_GOPATH", "/usr/share/gocode"))
X_MOD = GOPATH / "src" / "golang.org" / "x" / "mod" / "sumdb"
BUILD_TIMEOUT = 300.0


@dataclass(frozen=True)
class GoCheck:
    """The built checker: `run("tlog-check", "--url", url, ...)`."""

    binary: Path

    def run(self, *args: str, stdin: bytes = b"", timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binary), *args], input=stdin, capture_output=True, timeout=timeout, check=False,
        )
        return subprocess.CompletedProcess(
            result.args, result.returncode, result.stdout.decode(errors="replace"),
            result.stderr.decode(errors="replace"),
        )


def missing() -> str | None:
    """Why the checker cannot be built here, or None."""
    if shutil.which("go") is None:
        return "the go command is not installed (apt-get install golang-go)"
    if not (X_MOD / "tlog" / "tile.go").exists() or not (X_MOD / "note" / "note.go").exists():
        return f"golang.org/x/mod/sumdb is not in {GOPATH} (apt-get install golang-golang-x-mod-dev)"
    return None


def build(out: Path, env_extra: Sequence[tuple[str, str]] = ()) -> Path:
    """Build tests/go into `out`/gocheck, with no network: GOPATH mode, GOPROXY off."""
    binary = out / "gocheck"
    env = {
        **os.environ, "GOPATH": str(GOPATH), "GO111MODULE": "off", "GOPROXY": "off", "GOFLAGS": "",
        "CGO_ENABLED": "0", **dict(env_extra),
    }
    if not any(env.get(name) for name in ("GOCACHE", "XDG_CACHE_HOME", "HOME")):
        env["GOCACHE"] = str(out / "cache")  # else Go's own build cache: a second session builds in a second
    result = subprocess.run(
        ["go", "build", "-o", str(binary), "."], cwd=SOURCE, env=env, capture_output=True, text=True,
        timeout=BUILD_TIMEOUT, check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"go build of tests/go failed:\n{result.stdout}{result.stderr}")
    return binary


@pytest.fixture(scope="session")
def go_check(tmp_path_factory: pytest.TempPathFactory) -> GoCheck:
    why = missing()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"Go's reference check cannot run: {why}")
        pytest.skip(why)
    return GoCheck(build(tmp_path_factory.mktemp("gocheck")))
