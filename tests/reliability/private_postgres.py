"""A private PostgreSQL cluster a test may crash: made with initdb in a temporary directory,
served on a free port, stopped (`pg_ctl stop -m fast`) or crashed (`-m immediate`), started
again, removed.

No test stops the shared server (the one POSTGRES_URL names): other tests use it at the same
time. A test that stops or crashes PostgreSQL, or runs it with settings of its own, makes its
own cluster here instead. Without PostgreSQL's server programs
(`initdb`, `pg_ctl`) the test fails under CI (CI=true) and is skipped elsewhere.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from tests.cli.test_serve import free_port
from tests.reliability.server import wait_until

READY_TIMEOUT = 60.0
OS_USER = "postgres"  # initdb and the server refuse to run as root: they run as this user then


def server_programs() -> Path | None:
    """The directory of initdb and pg_ctl: $LEDGER_TEST_PG_BIN, pg_config's, or the newest installed."""
    candidates = [os.environ.get("LEDGER_TEST_PG_BIN", "")]
    if shutil.which("pg_config"):
        found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(found.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    for candidate in filter(None, candidates):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


@dataclass
class PrivateCluster:
    """One cluster: `url(schema)` to reach it, `crash()` and `start()` to put it through a crash."""

    bindir: Path
    root: Path
    settings: dict[str, str]
    port: int = field(default_factory=free_port)
    starts: int = 0

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, schema: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres?schema={schema}"

    def run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        as_user = ["runuser", "-u", OS_USER, "--"] if os.geteuid() == 0 else []
        return subprocess.run([*as_user, str(self.bindir / program), *args], capture_output=True, text=True,
                              timeout=READY_TIMEOUT, check=False)

    def initdb(self) -> None:
        # --no-sync: the tests crash the server, never the machine, so what reached the
        # operating system survives; only what PostgreSQL still held in memory is lost.
        made = self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        assert made.returncode == 0, made.stdout + made.stderr

    def start(self) -> None:
        options = " ".join([f"-p {self.port}", f"-k {self.root}", "-c listen_addresses=127.0.0.1",
                            *(f"-c {name}={value}" for name, value in self.settings.items())])
        started = self.run("pg_ctl", "start", "-w", "-t", str(int(READY_TIMEOUT)), "-D", str(self.data),
                           "-l", str(self.log), "-o", options)
        assert started.returncode == 0, started.stdout + started.stderr + self.log_text()
        self.starts += 1
        wait_until(self.accepting, READY_TIMEOUT, "the private PostgreSQL accepts connections", interval=0.05)

    def crash(self) -> None:
        """`pg_ctl stop -m immediate`: every server process quits at once, nothing is flushed
        or checkpointed; the next start recovers from the write-ahead log on disk."""
        stopped = self.run("pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(self.data))
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not self.accepting()

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """`pg_ctl stop -m fast` (sessions are cut, the server shuts down cleanly) inside the
        block, running again after it however the block ends."""
        halted = self.run("pg_ctl", "stop", "-m", "fast", "-w", "-D", str(self.data))
        assert halted.returncode == 0, halted.stdout + halted.stderr
        assert not self.accepting()
        try:
            yield
        finally:
            self.start()

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.run("pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(self.data))

    def accepting(self) -> bool:
        try:
            with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                                 connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def private_cluster(**settings: str) -> Iterator[PrivateCluster]:
    """A running private cluster with these server settings (`name=value`), removed afterwards."""
    bindir = require_server_programs()
    root = cluster_root()
    cluster = PrivateCluster(bindir, root, settings)
    try:
        cluster.initdb()
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        print(f"--- the private PostgreSQL's log (shown when the test fails) ---\n{cluster.log_text()[-4000:]}")
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def private_pair(**settings: str) -> Iterator[tuple[PrivateCluster, PrivateCluster]]:
    """A private primary and its streaming hot standby (`pg_basebackup -R -X stream -c fast`,
    on a port of its own), both with these settings, removed afterwards."""
    with private_cluster(wal_level="replica", max_wal_senders="4", **settings) as primary:
        with (primary.data / "pg_hba.conf").open("a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        reloaded = primary.run("pg_ctl", "reload", "-D", str(primary.data))
        assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
        root = cluster_root()
        standby = PrivateCluster(primary.bindir, root, {"hot_standby": "on", **settings})
        try:
            copied = primary.run("pg_basebackup", "-D", str(standby.data), "-R", "-X", "stream", "-c", "fast",
                                 "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres")
            assert copied.returncode == 0, copied.stdout + copied.stderr
            standby.start()
            yield primary, standby
        finally:
            standby.stop()
            print(f"--- the standby's log (shown when the test fails) ---\n{standby.log_text()[-4000:]}")
            shutil.rmtree(root, ignore_errors=True)


def require_server_programs() -> Path:
    """initdb's and pg_ctl's directory; the test fails under CI, and is skipped elsewhere, without them."""
    bindir = server_programs()
    problem = None
    if bindir is None:
        problem = "PostgreSQL's server programs (initdb, pg_ctl) are not installed; set LEDGER_TEST_PG_BIN"
    elif os.geteuid() == 0 and (shutil.which("runuser") is None or not user_exists(OS_USER)):
        problem = f"running as root, a private cluster needs runuser and the {OS_USER!r} user"
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    assert bindir is not None
    return bindir


def cluster_root() -> Path:
    """A new directory for a cluster: not pytest's tmp_path, the cluster's user must be able to reach it."""
    root = Path(tempfile.mkdtemp(prefix="ledger-pg-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam(OS_USER)
        os.chown(root, owner.pw_uid, owner.pw_gid)
    return root


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
