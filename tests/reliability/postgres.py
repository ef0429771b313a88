"""Stopping and starting the local PostgreSQL server, for outage tests.

The server is shared with other tests: it is always started again, and waited for until
it accepts connections, however the test ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from store.settings import Database
from tests.conftest import POSTGRES_URL, require_postgres
from tests.reliability.server import wait_until

READY_TIMEOUT = 60.0


def local_cluster() -> tuple[str, str]:
    """(version, name) of the cluster serving POSTGRES_URL; fails under CI, skips elsewhere, when
    it is not a local cluster this machine can stop and start."""
    require_postgres()
    database = Database.from_url(POSTGRES_URL)
    problem = None
    if database.host not in ("127.0.0.1", "localhost") or shutil.which("pg_ctlcluster") is None:
        problem = f"{POSTGRES_URL} is not a local cluster pg_ctlcluster can stop and start"
    else:
        listed = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False)
        for line in listed.stdout.splitlines():
            version, name, port = line.split()[:3]
            if int(port) == database.port:
                return version, name
        problem = f"no local cluster listens on port {database.port}"
    if os.environ.get("CI"):
        pytest.fail(problem)
    pytest.skip(problem)


def accepting(port: int) -> bool:
    return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)], check=False).returncode == 0


def pg_ctl(version: str, name: str, *action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, *action],
                          capture_output=True, text=True, timeout=READY_TIMEOUT, check=False)


@contextmanager
def postgres_stopped() -> Iterator[None]:
    """PostgreSQL stopped (fast: sessions are cut) inside the block, running again after it."""
    version, name = local_cluster()
    port = Database.from_url(POSTGRES_URL).port
    try:
        stopped = pg_ctl(version, name, "stop", "-m", "fast")
        assert stopped.returncode == 0, stopped.stderr
        assert not accepting(port)
        yield
    finally:
        if not accepting(port):
            pg_ctl(version, name, "start")
        wait_until(lambda: accepting(port), READY_TIMEOUT, "PostgreSQL accepts connections again", interval=0.2)
