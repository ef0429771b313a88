"""`claims audit` on first use (no checkpoint kept yet): with nothing to be consistent with,
the audit rests on three checks of what the server serves, and each catches a tampering
the other two let through:

1. the Merkle root of the feed's first `tree_size` events equals the signed checkpoint's;
2. the feed's event hashes, versions and chains hold (audit/chain.py);
3. every claim the server serves equals the fold of its events in the feed.

The servers are real (`claims serve`, tests/audit/test_audit.py). A server that tampers is
either a proxy in front of an honest one that rewrites its answers in flight, or an honest
server on a database someone rewrote (and whose projections, checkpoint included, were
rebuilt from it, so it signs the rewritten tree). Each test asserts the one problem found
and so that the other checks held, and that no checkpoint was saved.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from audit.remote import AuditReport, audit_ledger
from domain.values import claim_id_for_key
from service.runtime import Runtime
from tests.audit.proxy import Rewrite, TamperingProxy
from tests.audit.test_audit import SECOND_KEY, Server, rebuild_projections, seed, start_server
from tests.audit.test_verify import changed_quote, execute_on_store, rehash, rewrite_state, stored_id
from tests.conftest import new_database_url
from tests.story import CLAIM_KEY

FIRST = str(claim_id_for_key(CLAIM_KEY))
SECOND = str(claim_id_for_key(SECOND_KEY))
FIRST_USE = "no checkpoint kept yet: trusting the server's public key on first use"
# The seed (tests/audit/test_audit.py): positions 1, 2, 4, 6 are the first claim's versions
# 1-4 (registered, Elton John asserts, Peskov denies, Elton John retracts); 3 and 5 the second's.
DENIAL_POSITION, SECOND_ASSERTION_POSITION = 4, 5

def feed_items(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def as_feed(items: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(item, separators=(",", ":"), ensure_ascii=False) + "\n" for item in items).encode()


def on_feed(change: Callable[[list[dict[str, Any]]], None]) -> Rewrite:
    """A rewrite of the NDJSON feed (the stream `claims audit` reads) by `change`, in place."""

    def rewrite(path: str, body: bytes) -> bytes:
        if path != "/v1/events":
            return body
        items = feed_items(body)
        change(items)
        return as_feed(items)

    return rewrite


def at(items: list[dict[str, Any]], position: int) -> dict[str, Any]:
    [item] = [i for i in items if i["position"] == position]
    return item


def first_audit(base: str, server: Server, workdir: Path) -> tuple[AuditReport, Path]:
    server.wait_projected()
    kept = workdir / "kept" / "checkpoint.json"
    report = audit_ledger(base, kept, token=server.token)
    assert report.notes and report.notes[0].startswith(FIRST_USE), report.lines()
    return report, kept


def assert_caught_only_by(report: AuditReport, kept: Path, expected: str) -> None:
    """Exactly one problem, starting with `expected`: the other checks held. Nothing is saved."""
    assert len(report.problems) == 1 and report.problems[0].startswith(expected), report.lines()
    assert not report.ok and not report.saved and not kept.exists()
    assert report.lines()[-1] == "1 problem(s); the kept checkpoint is left as it was"


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One seeded, untouched server: the proxies in front of it do the tampering."""
    workdir = tmp_path_factory.mktemp("first-use")
    url = new_database_url("sqlite", workdir)
    seed(url)
    running = start_server(url, workdir)
    yield running
    running.stop()


@pytest.fixture
def tampering(honest: Server) -> Iterator[Callable[[Rewrite], TamperingProxy]]:
    proxies: list[TamperingProxy] = []

    def start(rewrite: Rewrite) -> TamperingProxy:
        proxies.append(TamperingProxy(honest.base, rewrite))
        return proxies[-1]

    yield start
    for proxy in proxies:
        proxy.close()


def test_through_a_proxy_that_changes_nothing_the_first_audit_passes_and_keeps_the_checkpoint(
    honest: Server, tampering: Callable[[Rewrite], TamperingProxy], tmp_path: Path,
) -> None:
    proxy = tampering(lambda path, body: body)
    report, kept = first_audit(proxy.base, honest, tmp_path)
    assert report.ok and report.saved, report.lines()
    assert (report.events, report.claims) == (6, 2)
    assert json.loads(kept.read_text())["tree_size"] == 6


# -- 1. The feed's Merkle root against the signed checkpoint ---------------------------------------


def test_on_first_use_a_feed_reordered_in_flight_is_caught_only_by_the_merkle_root_against_the_checkpoint(
    honest: Server, tampering: Callable[[Rewrite], TamperingProxy], tmp_path: Path,
) -> None:
    """Peskov's denial and Elton John's assertion on the second claim trade places in the feed
    (positions kept): every claim's chain and fold are as before, only the log order is not
    the one the ledger signed."""

    def swap(items: list[dict[str, Any]]) -> None:
        denial, assertion = at(items, DENIAL_POSITION), at(items, SECOND_ASSERTION_POSITION)
        for name in ("hash", "body"):
            denial[name], assertion[name] = assertion[name], denial[name]

    proxy = tampering(on_feed(swap))
    report, kept = first_audit(proxy.base, honest, tmp_path)
    assert proxy.changed >= 1
    assert_caught_only_by(report, kept, "the Merkle root of the feed's first 6 events is ")
    assert report.problems[0].endswith(
        f"not the checkpoint's {report.checkpoint['root_hash']}: the feed is not the tree the ledger signed"  # type: ignore[index]
    )


# -- 2. Hashes, versions and chains over the feed --------------------------------------------------


def test_on_first_use_an_event_changed_in_flight_is_caught_only_by_its_hash(
    honest: Server, tampering: Callable[[Rewrite], TamperingProxy], tmp_path: Path,
) -> None:
    """The denial's quote is changed in the feed, its hash left as signed: the tree and every
    claim's fold (a quote is no part of a claim's view) still hold."""

    def requote(items: list[dict[str, Any]]) -> None:
        at(items, DENIAL_POSITION)["body"]["data"]["quote"] = "It is true"

    proxy = tampering(on_feed(requote))
    report, kept = first_audit(proxy.base, honest, tmp_path)
    assert proxy.changed >= 1
    assert_caught_only_by(report, kept, f"position {DENIAL_POSITION} (claim {FIRST} version 3): "
                                        "the event was changed after it was recorded")


def rehashed_denial(rt: Runtime) -> None:
    """The denial's quote changed and the event rehashed: its own hash holds, the next
    version's prev_hash no longer does."""
    def change(fields: dict[str, Any]) -> None:
        changed_quote(fields)
        rehash(fields, FIRST, 3, "Denied")

    rewrite_state(rt, CLAIM_KEY, 3, change)


def deleted_assertion(rt: Runtime) -> None:
    """Elton John's assertion (version 2) removed: the claim's versions run 1, 3, 4."""
    execute_on_store(rt, "DELETE FROM {events} WHERE originator_id = ? AND originator_version = 2",
                     (stored_id(rt, CLAIM_KEY),))


@pytest.mark.slow
@pytest.mark.parametrize(("rewrite", "expected"), [
    (rehashed_denial, f"position 6 (claim {FIRST} version 4): prev_hash is "),
    (deleted_assertion, f"position 4 (claim {FIRST} version 3): version 3 follows version 1 in the log"),
], ids=["chain", "version"])
def test_on_first_use_a_store_rewritten_and_reprojected_is_caught_only_by_the_chain_rules(
    rewrite: Callable[[Runtime], None], expected: str, tmp_path: Path,
) -> None:
    """Someone with the database rewrites the event table under a running server and rebuilds
    its projections: the server then signs the rewritten tree (so its root holds) and serves
    claims folded from it (so they hold); only the chain rules see the seam."""
    url = new_database_url("sqlite", tmp_path)
    seed(url)
    server = start_server(url, tmp_path)
    try:
        server.wait_projected()
        rt = Runtime.open(url)
        try:
            rewrite(rt)
        finally:
            rt.close()
        rebuild_projections(url)
        report, kept = first_audit(server.base, server, tmp_path)
    finally:
        server.stop()
    assert_caught_only_by(report, kept, expected)


# -- 3. Served claims against the fold of the feed -------------------------------------------------


def on_claim(claim_id: str, change: Callable[[dict[str, Any]], None]) -> Rewrite:
    def rewrite(path: str, body: bytes) -> bytes:
        if path != f"/v1/claims/{claim_id}":
            return body
        view = json.loads(body)
        change(view)
        return json.dumps(view).encode()

    return rewrite


def on_list(change: Callable[[list[dict[str, Any]]], None]) -> Rewrite:
    def rewrite(path: str, body: bytes) -> bytes:
        if path != "/v1/claims":
            return body
        page = json.loads(body)
        change(page["items"])
        return json.dumps(page).encode()

    return rewrite


PHANTOM = str(claim_id_for_key("putin-never-phoned-anyone"))


def phantom_claim(items: list[dict[str, Any]]) -> None:
    items.append({**items[0], "id": PHANTOM, "key": "putin-never-phoned-anyone"})


@pytest.mark.parametrize(("rewrite", "expected"), [
    (on_claim(FIRST, lambda view: view.update(status="asserted")),
     f'claim {FIRST} ({CLAIM_KEY}): the server serves status = "asserted", the feed folds to "denied"'),
    (on_claim(SECOND, lambda view: view["counts"].update(assertions=2)),
     f"claim {SECOND} ({SECOND_KEY}): the server serves counts = "),
    (on_list(phantom_claim), f"claim {PHANTOM} is served but the feed holds no event of it"),
], ids=["status", "counts", "listed-without-events"])
def test_on_first_use_claims_served_unlike_the_feed_are_caught_only_by_the_claim_comparison(
    honest: Server, tampering: Callable[[Rewrite], TamperingProxy], tmp_path: Path, rewrite: Rewrite, expected: str,
) -> None:
    proxy = tampering(rewrite)
    report, kept = first_audit(proxy.base, honest, tmp_path)
    assert proxy.changed >= 1
    assert_caught_only_by(report, kept, expected)


def test_claims_audit_on_first_use_exits_1_naming_the_one_problem_and_saves_nothing(
    honest: Server, tampering: Callable[[Rewrite], TamperingProxy], tmp_path: Path,
) -> None:
    proxy = tampering(on_claim(FIRST, lambda view: view.update(status="asserted")))
    honest.wait_projected()
    kept = tmp_path / "checkpoint.json"
    run = honest.claims("audit", "--url", proxy.base, "--checkpoint", str(kept), "--token", honest.token)
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith(FIRST_USE)
    assert [line for line in lines if line.startswith("problem: ")] == [
        f'problem: claim {FIRST} ({CLAIM_KEY}): the server serves status = "asserted", the feed folds to "denied"'
    ]
    assert lines[-1] == "1 problem(s); the kept checkpoint is left as it was"
    assert not kept.exists()
