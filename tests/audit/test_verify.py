"""`claims verify`: a changed, removed or reordered event and an altered projection row are each named."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import psycopg
import pytest
from typer.testing import CliRunner

import cli.audit  # noqa: F401 - registers the commands
from audit.verify import TABLES, VERIFY_PREFIX, Finding, VerifyReport, verify_store
from cli.main import app
from domain.canonical import body_text
from projections.merkle import MERKLE_TABLES
from projections.tables import BASES
from service.runtime import Runtime
from tests.story import CLAIM_KEY, ELTON, PESKOV, STATEMENT, elton_asserts, peskov_denies

SECOND_KEY = "elton-john-met-putin"


@pytest.fixture
def runtime(database_url: str) -> Iterator[Runtime]:
    rt = Runtime.open(database_url)
    yield rt
    rt.close()


def seed(rt: Runtime) -> None:
    """The seed story (register, Elton John asserts, Peskov denies, Elton John retracts) and a second claim."""
    rt.ledger.register_claim(STATEMENT, key=CLAIM_KEY, subjects=["Vladimir Putin", "Elton John"])
    rt.ledger.assert_claim(CLAIM_KEY, **elton_asserts())
    rt.ledger.register_claim("Elton John met Vladimir Putin in Moscow", key=SECOND_KEY)
    rt.ledger.deny_claim(CLAIM_KEY, **peskov_denies())
    rt.ledger.assert_claim(SECOND_KEY, act_id="elton-bbc", party=ELTON, said_at="2015-09-12")
    rt.ledger.retract_act(CLAIM_KEY, act_id="elton-retracts", retracts="elton-instagram", party=ELTON)
    rt.engine.catch_up()


def claim_id(rt: Runtime, key: str = CLAIM_KEY) -> str:
    return str(rt.ledger.resolve(key))


# -- Changing the event store behind the ledger's back ------------------------------------------


def execute_on_store(rt: Runtime, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run SQL on the event store's own table (`{events}` in `sql` names it), committed at once."""
    database = rt.database
    table = rt.ledger.recorder.events_table_name  # type: ignore[attr-defined]
    if database.backend == "sqlite":
        with sqlite3.connect(database.path) as conn:
            return conn.execute(sql.replace("{events}", table), params).fetchall()
    with psycopg.connect(**database.connect_kwargs(), autocommit=True) as pg:  # type: ignore[arg-type]
        cur = pg.execute(sql.replace("{events}", f'"{database.schema}".{table}').replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []


def stored_id(rt: Runtime, claim: str) -> Any:
    """The claim id as the store's table holds it (hex text on SQLite, uuid on PostgreSQL)."""
    uuid = rt.ledger.resolve(claim)
    return uuid.hex if rt.database.backend == "sqlite" else uuid


def rewrite_state(rt: Runtime, claim: str, version: int, change: Callable[[dict[str, Any]], None]) -> None:
    """Change the stored state of one event in place, as an attacker with database access would."""
    where = " WHERE originator_id = ? AND originator_version = ?"
    params = (stored_id(rt, claim), version)
    (state,), = execute_on_store(rt, "SELECT state FROM {events}" + where, params)
    fields = orjson.loads(bytes(state))
    change(fields)
    execute_on_store(rt, "UPDATE {events} SET state = ?" + where, (orjson.dumps(fields), *params))


def rehash(fields: dict[str, Any], claim: str, version: int, kind: str) -> None:
    """Give an altered event the hash of its new fields, hiding the change from its own hash check."""
    stamp = fields["timestamp"]["_data_"].replace("+00:00", "Z")
    text = body_text(claim_id=claim, version=version, type=kind, recorded_at=stamp,
                     prev_hash=fields["prev_hash"], data_json=fields["data_json"])
    fields["hash"] = hashlib.sha256(text.encode()).hexdigest()


def changed_quote(fields: dict[str, Any]) -> None:
    fields["data_json"] = fields["data_json"].replace("It is not true", "It is true")


def found(report: VerifyReport, check: str) -> list[Finding]:
    return [f for f in report.findings if f.check == check]


def tables_named(rt: Runtime, prefix: str) -> list[str]:
    with rt.store.reading() as cur:
        if cur.backend == "sqlite":
            rows = cur.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ?",
                               (f"{prefix}%",)).fetchall()
        else:
            rows = cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                               " AND tablename LIKE ?", (f"{prefix}%",)).fetchall()
    return [str(r[0]) for r in rows]


# -- A healthy store ----------------------------------------------------------------------------


def test_a_healthy_store_passes_every_check_and_leaves_no_temporary_tables(runtime: Runtime) -> None:
    seed(runtime)
    report = verify_store(runtime)
    assert report.ok, report.lines()
    assert (report.events, report.claims, report.merkle_checked_size) == (6, 2, 6)
    assert report.projections_compared and report.projected_position == 6
    with runtime.store.reading() as cur:
        assert report.root_hash == runtime.engine.merkle.root(cur, 6).hex()
    assert tables_named(runtime, VERIFY_PREFIX) == []


def test_events_not_yet_projected_are_hash_checked_and_not_taken_for_differences(runtime: Runtime) -> None:
    seed(runtime)
    runtime.ledger.deny_claim(SECOND_KEY, act_id="peskov-denies-meeting", party=PESKOV)
    report = verify_store(runtime)
    assert report.ok, report.lines()
    assert (report.events, report.merkle_checked_size, report.projected_position) == (7, 6, 6)
    assert any("events after position 6 (up to 7) were hash-checked but are not projected" in line
               for line in report.lines())


def test_every_read_model_table_but_tracking_is_compared_with_the_rebuild() -> None:
    assert {t.base for t in TABLES} == (set(BASES) - {"tracking"}) | set(MERKLE_TABLES)


# -- The event store tampered with --------------------------------------------------------------


def test_an_event_whose_stored_bytes_changed_is_named_by_claim_and_version(runtime: Runtime) -> None:
    seed(runtime)
    rewrite_state(runtime, CLAIM_KEY, 3, changed_quote)  # Peskov's denial
    report = verify_store(runtime)
    assert not report.ok
    [hash_problem] = found(report, "event-hash")
    assert (hash_problem.claim_id, hash_problem.key, hash_problem.version, hash_problem.position) == (
        claim_id(runtime), CLAIM_KEY, 3, 4
    )
    assert f"claim {CLAIM_KEY}" in hash_problem.describe() and "version 3" in hash_problem.describe()
    # The projections still hold what was recorded: the rebuild from the changed store differs.
    [history] = [f for f in found(report, "projection") if "rm_history" in f.detail]
    assert (history.version, history.position) == (3, 4)
    assert "body.data.quote is 'It is not true' but the rebuild has 'It is true'" in history.detail


def test_an_event_rewritten_with_a_matching_hash_breaks_the_chain_at_the_next_version(runtime: Runtime) -> None:
    seed(runtime)
    cid = claim_id(runtime)
    rewrite_state(runtime, CLAIM_KEY, 3, lambda f: (changed_quote(f), rehash(f, cid, 3, "Denied")))
    report = verify_store(runtime)
    assert found(report, "event-hash") == []
    [chain] = found(report, "chain")
    assert (chain.claim_id, chain.version) == (cid, 4)
    assert "the hash of version 3" in chain.detail


def test_the_newest_event_rewritten_with_a_matching_hash_is_caught_by_the_merkle_root(runtime: Runtime) -> None:
    seed(runtime)
    cid = claim_id(runtime)

    def retraction_reason(fields: dict[str, Any]) -> None:
        fields["data_json"] = fields["data_json"].replace('"reason":null', '"reason":"misquoted"')
        rehash(fields, cid, 4, "Retracted")

    rewrite_state(runtime, CLAIM_KEY, 4, retraction_reason)
    report = verify_store(runtime)
    assert found(report, "event-hash") == found(report, "chain") == []
    [merkle] = found(report, "merkle")
    assert "root of the first 6 events" in merkle.detail
    named = {(f.claim_id, f.version) for f in found(report, "projection")}
    assert (cid, 4) in named


def test_an_event_whose_data_is_not_canonical_json_is_caught(runtime: Runtime) -> None:
    seed(runtime)
    cid = claim_id(runtime)

    def spaced(fields: dict[str, Any]) -> None:
        fields["data_json"] = fields["data_json"].replace('"act_id":', '"act_id": ')
        rehash(fields, cid, 4, "Retracted")

    rewrite_state(runtime, CLAIM_KEY, 4, spaced)
    [encoding] = found(verify_store(runtime), "encoding")
    assert (encoding.claim_id, encoding.version) == (cid, 4)


def test_a_deleted_newest_event_is_caught(runtime: Runtime) -> None:
    seed(runtime)
    execute_on_store(runtime, "DELETE FROM {events} WHERE originator_id = ? AND originator_version = 4",
                     (stored_id(runtime, CLAIM_KEY),))
    report = verify_store(runtime)
    [merkle] = found(report, "merkle")
    assert "holds 6 leaves but the store has only 5 events" in merkle.detail
    lacking = [f for f in found(report, "projection") if "rm_history has a row" in f.detail]
    assert [(f.claim_id, f.version) for f in lacking] == [(claim_id(runtime), 4)]


def test_two_events_swapped_in_the_log_are_caught(sqlite_url: str) -> None:
    rt = Runtime.open(sqlite_url)
    try:
        seed(rt)
        # Peskov's denial (position 4) and Elton John's assertion on the second claim (position 5).
        execute_on_store(rt, "UPDATE {events} SET rowid = 100 WHERE rowid = 4")
        execute_on_store(rt, "UPDATE {events} SET rowid = 4 WHERE rowid = 5")
        execute_on_store(rt, "UPDATE {events} SET rowid = 5 WHERE rowid = 100")
        report = verify_store(rt)
    finally:
        rt.close()
    assert found(report, "event-hash") == found(report, "chain") == []
    assert len(found(report, "merkle")) == 1
    moved = {(f.key, f.version, f.position) for f in found(report, "projection") if "rm_history" in f.detail}
    assert {(CLAIM_KEY, 3, 4), (SECOND_KEY, 2, 5)} <= moved


def test_an_undecodable_stored_event_is_named_and_the_rest_still_checked(runtime: Runtime) -> None:
    seed(runtime)
    execute_on_store(runtime, "UPDATE {events} SET state = ? WHERE originator_id = ? AND originator_version = 2",
                     (b"not json", stored_id(runtime, SECOND_KEY)))
    report = verify_store(runtime)
    [decode] = found(report, "decode")
    assert (decode.claim_id, decode.version) == (claim_id(runtime, SECOND_KEY), 2)
    assert report.events == 6 and found(report, "event-hash") == []


# -- The projections tampered with --------------------------------------------------------------


def test_an_altered_projection_row_is_named_by_claim(runtime: Runtime) -> None:
    seed(runtime)
    with runtime.store.transaction() as cur:
        cur.execute("UPDATE rm_claims SET status = 'denied' WHERE key = ?", (SECOND_KEY,))
    report = verify_store(runtime)
    [altered] = found(report, "projection")
    assert (altered.claim_id, altered.key) == (claim_id(runtime, SECOND_KEY), SECOND_KEY)
    assert "rm_claims" in altered.detail and "status is 'denied' but the rebuild has 'asserted'" in altered.detail
    assert found(report, "merkle") == []


def test_altered_stances_subjects_history_and_merkle_rows_are_each_caught(sqlite_url: str) -> None:
    rt = Runtime.open(sqlite_url)
    try:
        seed(rt)
        cid = claim_id(rt)
        with rt.store.transaction() as cur:
            cur.execute("UPDATE rm_stances SET stance = 'asserts' WHERE holder_id = 'vladimir-putin'")
            cur.execute("DELETE FROM rm_subjects WHERE subject = 'Elton John'")
            cur.execute("UPDATE rm_history SET hash = ? WHERE position = 2", ("0" * 64,))
            cur.execute("UPDATE rm_merkle_leaves SET hash = ? WHERE leaf_index = 0", (b"\x01" * 32,))
            cur.execute("UPDATE rm_merkle_nodes SET hash = ? WHERE level = 2 AND idx = 0", (b"\x02" * 32,))
            cur.execute("INSERT INTO rm_search (statement, claim_id) VALUES ('Putin never called', 'x')")
        report = verify_store(rt)
    finally:
        rt.close()
    details = [f.describe() for f in found(report, "projection")]
    assert any("rm_stances" in d and "stance is 'asserts'" in d and CLAIM_KEY in d for d in details), details
    assert any("rm_subjects lacks a row" in d and "'Elton John'" in d for d in details), details
    assert any("rm_history" in d and "version 2" in d for d in details), details
    assert any("rm_merkle_leaves" in d and f"{CLAIM_KEY} ({cid}), version 1" in d for d in details), details
    assert any("rm_merkle_nodes row level=2, idx=0 (the subtree of leaves 0..3) differs" in d for d in details), details
    assert any("rm_search has a row" in d for d in details), details
    # The root of 6 leaves is read from the stored subtree of leaves 0-3, not from leaf 0.
    [merkle] = found(report, "merkle")
    assert "root of the first 6 events" in merkle.detail


# -- The command ---------------------------------------------------------------------------------


def test_claims_verify_exits_1_naming_the_problem_and_0_when_all_holds(sqlite_url: str) -> None:
    rt = Runtime.open(sqlite_url)
    try:
        seed(rt)
    finally:
        rt.close()
    runner = CliRunner()
    healthy = runner.invoke(app, ["verify"], env={"LEDGER_DATABASE_URL": sqlite_url})
    assert healthy.exit_code == 0, healthy.output
    assert "all checks hold" in healthy.stdout
    rt = Runtime.open(sqlite_url)
    try:
        rewrite_state(rt, CLAIM_KEY, 2, lambda f: f.update(data_json=f["data_json"].replace("Elton", "Eldon")))
    finally:
        rt.close()
    broken = runner.invoke(app, ["verify"], env={"LEDGER_DATABASE_URL": sqlite_url})
    assert broken.exit_code == 1
    assert f"[event-hash] claim {CLAIM_KEY}" in broken.stdout and "version 2" in broken.stdout


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"
