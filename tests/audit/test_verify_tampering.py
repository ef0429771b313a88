"""`claims verify` on a store edited behind the ledger's back, beyond a deleted newest event:
a deleted middle event (left as a gap, or hidden by renumbering and re-chaining the rest)
and a claim registered twice (a second registration appended, or made of a later event).

The edits are what someone with write access to the event table could do; each test runs
on SQLite and PostgreSQL, through `verify_store` and the `claims verify` command.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner, Result

import cli.audit  # noqa: F401 - registers the commands
from audit.verify import Finding, VerifyReport, verify_store
from cli.main import app
from service.runtime import Runtime
from tests.audit.test_verify import claim_id, execute_on_store, rehash, seed, stored_id
from tests.story import CLAIM_KEY

# The seed story's log: the first claim's four events at positions 1, 2, 4 and 6, the
# second claim's two at 3 and 5 (tests/audit/test_verify.py `seed`).
POSITION_OF_VERSION = {1: 1, 2: 2, 3: 4, 4: 6}
WHERE = " WHERE originator_id = ? AND originator_version = ?"


@pytest.fixture
def runtime(database_url: str) -> Iterator[Runtime]:
    rt = Runtime.open(database_url)
    seed(rt)  # projected: the tampering below comes after the projections applied the log
    yield rt
    rt.close()


def stored(rt: Runtime, version: int, claim: str = CLAIM_KEY) -> tuple[str, dict[str, Any]]:
    """(topic, state fields) of one stored event."""
    (topic, state), = execute_on_store(rt, "SELECT topic, state FROM {events}" + WHERE, (stored_id(rt, claim), version))
    return str(topic), orjson.loads(bytes(state))


def renumber(rt: Runtime, version: int, to: int, kind: str, prev_hash: str) -> str:
    """Move an event of the first claim to version `to`, chained to `prev_hash` and rehashed,
    so its own hash, version and chain hold again; its new hash."""
    _, fields = stored(rt, version)
    fields["prev_hash"] = prev_hash
    rehash(fields, claim_id(rt), to, kind)
    execute_on_store(rt, "UPDATE {events} SET originator_version = ?, state = ?" + WHERE,
                     (to, orjson.dumps(fields), stored_id(rt, CLAIM_KEY), version))
    return str(fields["hash"])


def delete(rt: Runtime, version: int) -> None:
    execute_on_store(rt, "DELETE FROM {events}" + WHERE, (stored_id(rt, CLAIM_KEY), version))


def checks_of(report: VerifyReport) -> list[str]:
    return [f.check for f in report.findings]


def only(report: VerifyReport, check: str) -> list[Finding]:
    return [f for f in report.findings if f.check == check]


def claims_verify(rt: Runtime) -> Result:
    return CliRunner().invoke(app, ["verify"], env={"LEDGER_DATABASE_URL": rt.database.url})


# -- A deleted middle event ------------------------------------------------------------------------


def test_a_deleted_middle_event_is_named_by_the_version_rule_the_merkle_root_and_the_projections(
    runtime: Runtime,
) -> None:
    delete(runtime, 2)  # Elton John's assertion, position 2 of 6
    report = verify_store(runtime)
    cid = claim_id(runtime)

    [gap] = only(report, "version")
    assert (gap.claim_id, gap.key, gap.version, gap.position) == (cid, CLAIM_KEY, 3, POSITION_OF_VERSION[3])
    assert gap.detail == "version 3 follows version 1 in the log; a claim's versions run 1, 2, 3, ..."
    [merkle] = only(report, "merkle")
    assert "the projections' Merkle log holds 6 leaves but the store has only 5 events" in merkle.detail
    history = [f for f in only(report, "projection") if f.detail.startswith("rm_history has a row")]
    assert [(f.claim_id, f.version, f.position) for f in history] == [(cid, 2, POSITION_OF_VERSION[2])]
    assert set(checks_of(report)) == {"version", "merkle", "projection"}, report.lines()
    assert (report.events, report.claims) == (5, 2)

    command = claims_verify(runtime)
    assert command.exit_code == 1, command.output
    assert f"[version] claim {CLAIM_KEY} ({cid}), version 3, position 4: version 3 follows version 1" in command.stdout


def test_a_deleted_middle_event_hidden_by_renumbering_and_rechaining_the_rest_is_caught_by_the_merkle_root(
    runtime: Runtime,
) -> None:
    """A thorough forger closes the gap: versions 3 and 4 become 2 and 3, each chained to the
    one before and rehashed. Every claim's chain holds; the projections' tree does not."""
    _, registration = stored(runtime, 1)
    delete(runtime, 2)
    moved = renumber(runtime, 3, 2, "Denied", registration["hash"])
    renumber(runtime, 4, 3, "Retracted", moved)
    report = verify_store(runtime)
    cid = claim_id(runtime)

    assert only(report, "event-hash") == only(report, "version") == only(report, "chain") == [], report.lines()
    [merkle] = only(report, "merkle")
    assert "holds 6 leaves but the store has only 5 events: events were removed from the store" in merkle.detail
    history = {(f.claim_id, f.version, f.position) for f in only(report, "projection") if "rm_history" in f.detail}
    # The projections hold the history as recorded: the rebuild has each moved event at another version.
    assert {(cid, 2, POSITION_OF_VERSION[2]), (cid, 3, POSITION_OF_VERSION[3]), (cid, 4, POSITION_OF_VERSION[4])} <= history
    assert set(checks_of(report)) == {"merkle", "projection"}, report.lines()

    command = claims_verify(runtime)
    assert command.exit_code == 1, command.output
    assert "[merkle] the projections' Merkle log holds 6 leaves but the store has only 5 events" in command.stdout


# -- A claim registered twice ----------------------------------------------------------------------


def registration_again(rt: Runtime, version: int, prev_hash: str, timestamp: Any) -> dict[str, Any]:
    """The claim's registration made again as event `version`: chained, hashed, its statement
    changed (what a forger gains by registering a claim again)."""
    _, fields = stored(rt, 1)
    fields.update(prev_hash=prev_hash, timestamp=timestamp,
                  data_json=fields["data_json"].replace("Putin telephoned", "Putin never telephoned"))
    rehash(fields, claim_id(rt), version, "ClaimRegistered")
    return fields


def test_a_second_registration_appended_to_a_claim_is_named_by_the_type_rule(runtime: Runtime) -> None:
    topic, _ = stored(runtime, 1)
    _, newest = stored(runtime, 4)
    forged = registration_again(runtime, 5, newest["hash"], newest["timestamp"])
    execute_on_store(runtime, "INSERT INTO {events} (originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?)",
                     (stored_id(runtime, CLAIM_KEY), 5, topic, orjson.dumps(forged)))
    report = verify_store(runtime)
    cid = claim_id(runtime)

    [twice] = report.findings  # its hash, version and chain hold: the type rule alone catches it
    assert (twice.check, twice.claim_id, twice.key, twice.version, twice.position) == ("type", cid, CLAIM_KEY, 5, 7)
    assert twice.detail == "ClaimRegistered after the claim's first event: a claim is registered once"
    assert (report.events, report.claims) == (7, 2)

    command = claims_verify(runtime)
    assert command.exit_code == 1, command.output
    assert f"[type] claim {CLAIM_KEY} ({cid}), version 5, position 7: ClaimRegistered after" in command.stdout


def test_a_later_event_rewritten_into_a_second_registration_is_named_and_verify_does_not_crash(
    runtime: Runtime,
) -> None:
    """Peskov's denial (version 3, already projected) becomes the claim's registration again,
    hashed and chained to version 2. Only the type rule and the next version's chain break;
    the rebuild the projections are compared with then meets the claim's subjects twice."""
    topic, _ = stored(runtime, 1)
    _, assertion = stored(runtime, 2)
    _, denial = stored(runtime, 3)
    forged = registration_again(runtime, 3, assertion["hash"], denial["timestamp"])
    execute_on_store(runtime, "UPDATE {events} SET topic = ?, state = ?" + WHERE,
                     (topic, orjson.dumps(forged), stored_id(runtime, CLAIM_KEY), 3))
    cid = claim_id(runtime)

    command = claims_verify(runtime)
    assert command.exception is None or isinstance(command.exception, SystemExit), (
        f"claims verify crashed instead of reporting: {command.exception!r}\n{command.output}"
    )
    assert command.exit_code == 1, command.output
    assert f"[type] claim {CLAIM_KEY} ({cid}), version 3, position 4: ClaimRegistered after" in command.stdout
    assert f"[chain] claim {CLAIM_KEY} ({cid}), version 4, position 6" in command.stdout
