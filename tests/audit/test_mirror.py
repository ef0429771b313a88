"""`claims audit --mirror DIR`: a verified local mirror, incremental audits, offline answers.

Every test audits a real server (`claims serve` in a subprocess) over HTTP; the hostile ones
edit its database or put the tampering proxy (tests/audit/proxy.py) in front of it. After
each failed audit the mirror must be exactly as the last verified audit left it.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli.audit  # noqa: F401 - registers the commands
from audit.chain import ChainCheck
from audit.mirror import FILE, Mirror, MirrorReport, audit_mirror
from cli.main import app
from domain.merkle import TreeHasher, leaf_hash, root_of
from store.event_store import open_ledger
from store.settings import Database
from tests.audit.proxy import TamperingProxy
from tests.audit.test_audit import (
    CLAIMS,
    SECOND_KEY,
    Server,
    forget_signed_trees,
    rebuild_projections,
    record_more,
    seed,
    sqlite_events,
    start_server,
)
from tests.conftest import drop_schema, new_database_url
from tests.story import CLAIM_KEY, ELTON, PESKOV

# The seed story's cuts, each asked of the server and of the mirror.
CUTS = [{}, {"version": 1}, {"version": 2}, {"version": 3}, {"said_as_of": "2015-09-14"},
        {"said_as_of": "2015-09-13"}, {"recorded_as_of": "2100-01-01"}]


def state(directory: Path) -> tuple[int, int, str | None, str | None, int]:
    """What a mirror holds: tree size, last position, root, kept checkpoint, events stored."""
    with sqlite3.connect(directory / FILE) as db:
        meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
        count = db.execute("SELECT count(*) FROM events").fetchone()[0]
    return (int(meta.get("tree_size", 0)), int(meta.get("last_position", 0)), meta.get("root_hash"),
            meta.get("kept"), count)


def audit(server: Server, directory: Path, base: str | None = None, **options: object) -> MirrorReport:
    server.wait_projected()
    return audit_mirror(base or server.base, directory, token=server.token, **options)  # type: ignore[arg-type]


def problems(report: MirrorReport) -> str:
    return "\n".join(report.problems)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    url = new_database_url("sqlite", tmp_path)
    seed(url)
    running = start_server(url, tmp_path)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """One seeded server and a mirror of it, for the tests that only read."""
    workdir = tmp_path_factory.mktemp("mirror")
    url = new_database_url("sqlite", workdir)
    seed(url)
    running = start_server(url, workdir)
    report = audit(running, workdir / "mirror")
    assert report.ok, report.lines()
    yield running, workdir / "mirror"
    running.stop()


# -- Going on from where the mirror stopped ----------------------------------------------------------


def test_a_resumed_tree_and_chain_check_reach_what_one_pass_reaches() -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(23)]
    for cut in range(len(leaves) + 1):
        first = TreeHasher()
        for leaf in leaves[:cut]:
            first.append(leaf)
        resumed = TreeHasher.resume(cut, first.subtrees)
        for leaf in leaves[cut:]:
            resumed.append(leaf)
        assert resumed.root() == root_of(leaves), cut
    with pytest.raises(ValueError, match="a tree of 5 leaves has 2 complete subtrees, not 1"):
        TreeHasher.resume(5, [bytes(32)])

    claim = "72c48e8a-f879-52ec-a580-e3a2e293ffdb"
    chain = ChainCheck.resume({claim: (2, "b" * 64)})
    assert chain.take(claim, 3, "Denied", "b" * 64, "c" * 64, "c" * 64) == ()
    broken = chain.take(claim, 5, "Denied", "c" * 64, "d" * 64, "d" * 64)
    assert [b.rule for b in broken] == ["version"] and "version 5 follows version 3" in broken[0].detail


# -- The first audit and the next ---------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_second_audit_fetches_and_folds_only_what_is_new(backend: str, tmp_path: Path) -> None:
    url = new_database_url(backend, tmp_path)
    seed(url)
    served = start_server(url, tmp_path)
    mirror = tmp_path / "mirror"
    try:
        first = audit(served, mirror)
        assert first.ok, first.lines()
        assert (first.new_events, first.mirrored, first.compared) == (6, 6, 2)
        assert state(mirror)[:3] == (6, 6, served.get("/v1/audit/checkpoint").json()["root_hash"])

        record_more(url, 5)
        second = audit(served, mirror, sample=1)
        assert second.ok, second.lines()
        assert (second.new_events, second.mirrored, second.touched, second.sampled) == (5, 11, 5, 1)
        assert "claims compared with the server: 6 (5 touched by the new events, 1 of the others)" in second.lines()
        assert state(mirror)[:3] == (11, 11, served.get("/v1/audit/checkpoint").json()["root_hash"])

        nothing = audit(served, mirror, full=True)  # nothing new; --full compares every claim
        assert nothing.ok and (nothing.new_events, nothing.compared) == (0, 7)
        assert state(mirror)[:3] == (11, 11, served.get("/v1/audit/checkpoint").json()["root_hash"])
    finally:
        served.stop()
        drop_schema(url)


def test_claims_audit_with_a_mirror_on_the_command_line(server: Server, tmp_path: Path) -> None:
    env = {**server.env, "LEDGER_TOKEN": server.token}
    kept = tmp_path / "checkpoint.json"
    command = [*CLAIMS, "audit", "--url", server.base, "--mirror", str(tmp_path / "m"), "--checkpoint", str(kept)]
    server.wait_projected()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mirror " in done.stdout and "6 new events verified, 6 in all" in done.stdout
    assert json.loads(kept.read_text())["tree_size"] == 6  # with --checkpoint the file is kept too
    again = subprocess.run([*command, "--sample", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "claims compared with the server: 0 (0 touched" in again.stdout, again.stdout


@pytest.mark.parametrize(("options", "says"), [
    (["--sample", "-1", "--mirror", "m"], "--sample -1"),
    (["--watch", "--checkpoint", "c.json"], "--watch works on a mirror"),
    (["--keep-going", "--mirror", "m"], "--keep-going is for the monitor"),
    ([], "give the kept checkpoint with --checkpoint FILE, or a mirror with --mirror DIR"),
])
def test_bad_options_are_refused_with_what_to_fix(shared: tuple[Server, Path], tmp_path: Path, options: list[str],
                                                  says: str) -> None:
    server, _ = shared
    done = subprocess.run([*CLAIMS, "audit", "--url", server.base, *options], env=server.env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert not (tmp_path / "m").exists()


# -- Offline answers ----------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["show", "history"])
def test_show_and_history_answer_from_the_mirror_as_the_server_does(shared: tuple[Server, Path], what: str) -> None:
    server, mirror = shared
    for ref in (CLAIM_KEY, SECOND_KEY):
        claim_id = server.get(f"/v1/claims/{ref}").json()["id"]
        for cut in CUTS:
            path = f"/v1/claims/{ref}" + ("/history" if what == "history" else "")
            answer = server.get(path, **cut)
            flags = [part for name, value in cut.items() for part in (f"--{name.replace('_', '-')}", str(value))]
            local = CliRunner().invoke(app, ["audit", what, ref if cut else claim_id, "--mirror", str(mirror), *flags])
            if answer.status_code == 404:
                assert local.exit_code == 1 and "holds no claim" in local.stderr, (ref, cut, local.stderr)
                continue
            assert answer.status_code == 200, answer.text
            assert local.exit_code == 0, local.stderr
            assert local.stdout_bytes == answer.content + b"\n", (ref, cut)


def test_show_refuses_bad_cuts_and_a_directory_without_a_mirror(shared: tuple[Server, Path], tmp_path: Path) -> None:
    _, mirror = shared
    bad = subprocess.run([*CLAIMS, "audit", "show", CLAIM_KEY, "--mirror", str(mirror), "--said-as-of", "yesterday"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--said-as-of" in bad.stderr, bad.stderr
    zero = subprocess.run([*CLAIMS, "audit", "show", CLAIM_KEY, "--mirror", str(mirror), "--version", "0"],
                          capture_output=True, text=True, timeout=60)
    assert zero.returncode == 2 and "--version must be 1 or more" in zero.stderr
    empty = subprocess.run([*CLAIMS, "audit", "history", CLAIM_KEY, "--mirror", str(tmp_path)],
                           capture_output=True, text=True, timeout=60)
    assert empty.returncode == 2 and "holds no mirror" in empty.stderr
    assert not (tmp_path / FILE).exists()


# -- Hostile servers: each caught, named, and the mirror left as it was ---------------------------


def test_old_events_reordered_on_the_server_are_named_and_the_mirror_kept(server: Server, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    assert audit(server, mirror).ok
    before = state(mirror)
    # Peskov's denial (position 4) and Elton John's assertion on the second claim (position 5)
    # change places: each claim's chain still holds, only the log order differs.
    for sql in ("UPDATE stored_events SET rowid = 100 WHERE rowid = 4",
                "UPDATE stored_events SET rowid = 4 WHERE rowid = 5",
                "UPDATE stored_events SET rowid = 5 WHERE rowid = 100"):
        sqlite_events(server.database_url, sql)
    rebuild_projections(server.database_url)
    forget_signed_trees(tmp_path)
    record_more(server.database_url, 2)
    report = audit(server, mirror)
    assert not report.ok
    found = problems(report)
    assert "an event the mirror verified was changed on the server: position 4 (claim " in found
    assert state(mirror) == before


def test_a_dropped_new_event_and_a_rewritten_view_of_a_touched_claim_are_named(server: Server, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    assert audit(server, mirror).ok
    before = state(mirror)
    ledger = open_ledger(Database.from_url(server.database_url))
    try:
        ledger.deny_claim(SECOND_KEY, act_id="putin-denies-meeting", party=PESKOV, said_at="2015-09-16")
        ledger.assert_claim(SECOND_KEY, act_id="elton-again", party=ELTON, said_at="2015-09-17")
    finally:
        ledger.close()
    second_id = server.get(f"/v1/claims/{SECOND_KEY}").json()["id"]

    def drop_first_new(path: str, body: bytes) -> bytes:
        if path != "/v1/events":
            return body
        return b"".join(line for line in body.splitlines(keepends=True) if b'"position":7' not in line)

    proxy = TamperingProxy(server.base, drop_first_new)
    try:
        dropped = audit(server, mirror, base=proxy.base)
        assert not dropped.ok
        assert f"(claim {second_id} version 4): version 4 follows version 2" in problems(dropped)
        assert state(mirror) == before

        def rewrite_view(path: str, body: bytes) -> bytes:
            return body.replace(b'"disputed"', b'"asserted"') if path == f"/v1/claims/{second_id}" else body

        proxy.rewrite = rewrite_view
        rewritten = audit(server, mirror, base=proxy.base, sample=0)
        assert not rewritten.ok
        assert f"claim {second_id} ({SECOND_KEY}): the server serves status = \"asserted\", the feed folds to " \
               "\"disputed\"" in problems(rewritten)
        assert state(mirror) == before
    finally:
        proxy.close()
    assert audit(server, mirror).ok  # the honest server: the mirror moves on from where it was
    assert state(mirror)[0] == 8


def test_a_forged_checkpoint_and_an_altered_mirror_are_refused(server: Server, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    assert audit(server, mirror).ok
    before = state(mirror)
    record_more(server.database_url, 2)
    forged_root = "ab" * 32

    def forge(path: str, body: bytes) -> bytes:
        if path not in ("/v1/audit/checkpoint", "/checkpoint"):
            return body
        checkpoint = json.loads(body)
        lines = checkpoint["note"].split("\n")
        old_root = checkpoint["root_hash"]
        lines[2] = base64.b64encode(bytes.fromhex(forged_root)).decode()
        checkpoint["note"], checkpoint["root_hash"] = "\n".join(lines), forged_root
        assert old_root != forged_root
        return json.dumps(checkpoint).encode()

    proxy = TamperingProxy(server.base, forge)
    try:
        forged = audit(server, mirror, base=proxy.base)
    finally:
        proxy.close()
    assert not forged.ok and "is not signed by the pinned key" in problems(forged)
    assert state(mirror) == before

    with sqlite3.connect(mirror / FILE) as db:  # someone edits the mirror's tree
        db.execute("UPDATE subtrees SET hash = ? WHERE level = 0", (bytes(32),))
    altered = audit(server, mirror)
    assert not altered.ok and "the mirror was altered; remove it to start again" in problems(altered)


# -- Crash safety -------------------------------------------------------------------------------


def test_killed_at_any_instant_the_next_audit_starts_from_the_last_verified_state(tmp_path: Path) -> None:
    url = new_database_url("sqlite", tmp_path)
    env_import = {"LEDGER_DATABASE_URL": url}
    fixture = tmp_path / "fixture.jsonl"
    made = subprocess.run([*CLAIMS, "generate", "--claims", "300", "--out", str(fixture)], capture_output=True,
                          text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    env = {**os.environ, **env_import}
    loaded = subprocess.run([*CLAIMS, "import", str(fixture)], env=env, capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    served = start_server(url, tmp_path)
    mirror = tmp_path / "mirror"
    command = [*CLAIMS, "audit", "--url", served.base, "--mirror", str(mirror), "--full"]
    run_env = {**served.env, "LEDGER_TOKEN": served.token}
    rng = random.Random(21)
    try:
        served.wait_projected()
        for attempt in range(6):
            if attempt == 3:
                record_more(url, 40, prefix="grown")
                served.wait_projected()
            process = subprocess.Popen(command, env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.3, 1.6))
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            if (mirror / FILE).exists():
                size, _, root, kept, count = state(mirror)
                assert count == size  # the events stored are the verified ones, no more
                if size:
                    assert kept is not None and json.loads(kept)["root_hash"] == root
                    local = Mirror(mirror)
                    try:
                        assert local.hasher().root().hex() == root
                    finally:
                        local.close()
        finished = subprocess.run(command, env=run_env, capture_output=True, text=True, timeout=120)
        assert finished.returncode == 0, finished.stdout + finished.stderr
        checkpoint = served.get("/v1/audit/checkpoint").json()
        assert state(mirror)[:3] == (checkpoint["tree_size"],) * 2 + (checkpoint["root_hash"],)
        fresh = audit(served, tmp_path / "fresh")  # a mirror made in one go holds the same
        assert fresh.ok and state(tmp_path / "fresh")[:3] == state(mirror)[:3]
    finally:
        served.stop()
