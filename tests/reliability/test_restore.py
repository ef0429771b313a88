"""A restore from a backup taken before the last writes, and the ledger that will not pretend.

A real `claims serve` signs a checkpoint, is backed up (a copy of its SQLite file, or
`pg_dump` of its PostgreSQL schema), takes more writes and signs a larger tree; the backup is
restored. The ledger's key file and, beside it, the largest tree it signed are not rewound:
the server refuses to sign or serve a checkpoint (503), and /healthz says why; `claims
recover` says so too, and with `--acknowledge-rollback` publishes a signed statement of what
was lost, after which the server signs again from the restored tree and serves the statement
at /v1/audit/rollbacks.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from domain.note import Checkpoint, Note, Verifier
from store.settings import Database
from tests.conftest import POSTGRES_URL, drop_schema, new_database_url
from tests.reliability.conftest import StartServer
from tests.reliability.private_postgres import require_server_programs
from tests.reliability.server import LedgerServer, make_token
from tests.reliability.workload import HOT_KEY, HOT_STATEMENT, PARTIES


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    made = new_database_url(str(request.param), tmp_path)
    yield made
    drop_schema(made)


class Backup:
    """A backup of the ledger's database, the way an operator takes one: a copy of the SQLite
    file (server stopped), or `pg_dump` of the schema, restored with `pg_restore`."""

    def __init__(self, url: str, where: Path) -> None:
        self.database = Database.from_url(url)
        self.where = where
        where.mkdir()

    def sqlite_files(self) -> list[Path]:
        path = Path(self.database.path)
        return sorted(path.parent.glob(path.name + "*"))

    def take(self) -> None:
        if self.database.backend == "sqlite":
            for path in self.sqlite_files():
                shutil.copy2(path, self.where / path.name)
            return
        self.pg("pg_dump", "-d", self.database.dbname, "-Fc", "-n", self.database.schema, "-f", str(self.where / "ledger.dump"))

    def restore(self) -> None:
        if self.database.backend == "sqlite":
            for path in self.sqlite_files():
                path.unlink()
            for path in self.where.iterdir():
                shutil.copy2(path, Path(self.database.path).parent / path.name)
            return
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{self.database.schema}" CASCADE')
        self.pg("pg_restore", "--exit-on-error", "-d", self.database.dbname, str(self.where / "ledger.dump"))

    def pg(self, program: str, *args: str) -> None:
        d = self.database
        done = subprocess.run(
            [str(require_server_programs() / program), "-h", d.host, "-p", str(d.port), "-U", d.user, *args],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def write(node: LedgerServer, token: str, *act_ids: str) -> None:
    with httpx.Client(base_url=node.base, timeout=10, headers={"Authorization": f"Bearer {token}"}) as http:
        if http.get(f"/v1/claims/{HOT_KEY}").status_code == 404:
            assert http.post("/v1/claims", json={"statement": HOT_STATEMENT, "key": HOT_KEY}).status_code == 201
        for act_id in act_ids:
            answer = http.post(f"/v1/claims/{HOT_KEY}/assertions",
                               json={"party": PARTIES[0], "said_at": "2015-09-14", "act_id": act_id})
            assert answer.status_code == 201, answer.text
    node.wait_projected()


def signed_size(node: LedgerServer) -> int:
    answer = node.http.get(f"{node.base}/v1/audit/checkpoint")
    assert answer.status_code == 200, answer.text
    return int(answer.json()["tree_size"])


def test_a_restore_that_lost_signed_events_stops_the_checkpoints_until_an_operator_acknowledges_it(
    url: str, start_server: StartServer, tmp_path: Path,
) -> None:
    _, token = make_token(url, "recorder")
    node = start_server(url)
    write(node, token, "a1", "a2")
    backed_up = signed_size(node)
    node.stop()
    backup = Backup(url, tmp_path / "backup")
    backup.take()
    node.start()
    write(node, token, "b1", "b2", "b3")
    lost = signed_size(node)
    assert lost == backed_up + 3
    node.stop()
    backup.restore()

    node.start(healthy=False)
    health = node.http.get(f"{node.base}/healthz")
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "unavailable" and body["checkpoints"]["status"] == "refused", body
    reason = body["checkpoints"]["reason"]
    assert f"the log holds {backed_up} events, not the tree of {lost} the ledger signed" in reason
    assert "claims recover --acknowledge-rollback" in reason
    for path in ("/v1/audit/checkpoint", "/checkpoint"):
        refused = node.http.get(f"{node.base}{path}")
        assert refused.status_code == 503, refused.text
        assert refused.json()["type"].endswith(":rolled-back")
    assert node.http.get(f"{node.base}/v1/audit/rollbacks").json() == {"rollbacks": []}

    told = node.claims("recover")
    assert told.returncode == 1 and "claims recover --acknowledge-rollback" in told.stderr, told.stderr
    recovered = node.claims("recover", "--acknowledge-rollback")
    assert recovered.returncode == 0, recovered.stderr
    assert f"resumed from the tree of {backed_up} events; the ledger had signed a tree of {lost}" in recovered.stdout

    # Serving again, without a restart: the statement is public and signed by the ledger's key.
    assert node.http.get(f"{node.base}/healthz").json()["checkpoints"] == {"status": "ok", "reason": None}
    assert signed_size(node) == backed_up
    statements = node.http.get(f"{node.base}/v1/audit/rollbacks").json()["rollbacks"]
    assert [(s["lost"]["size"], s["resumed"]["size"]) for s in statements] == [(lost, backed_up)]
    key = node.http.get(f"{node.base}/v1/audit/public-key").json()
    note = Note.parse(statements[0]["note"])
    verifier = Verifier.parse(key["verifier_key"])
    assert note.verified_by([verifier]) == [verifier]
    assert note.text.splitlines()[1] == "rollback statement"
    checkpoint = Checkpoint.parse(Note.parse(node.http.get(f"{node.base}/checkpoint").text).text)
    assert checkpoint.size == backed_up
    # And the ledger goes on from there.
    write(node, token, "c1")
    assert signed_size(node) == backed_up + 1
    assert node.claims("recover").stdout.startswith("nothing to recover")
