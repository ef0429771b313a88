"""What a ledger must promise, checked against its database after the fact.

Every check reads the store itself (not the API), so it holds whatever the server did.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from api.idempotency import derived_act_id
from audit.verify import verify_store
from domain.values import claim_id_for_key
from service.runtime import Runtime
from store.event_store import open_ledger
from store.settings import Database
from tests.reliability.workload import Answer


@dataclass(frozen=True)
class StoredEvent:
    position: int
    claim_id: str
    version: int
    type: str
    act_id: str | None


def stored_events(database_url: str) -> list[StoredEvent]:
    """Every event in the store, in log order."""
    ledger = open_ledger(Database.from_url(database_url))
    try:
        found: list[StoredEvent] = []
        after = 0
        while logged := ledger.read_log(after, 5000):
            found += [
                StoredEvent(e.position, e.claim_id, e.version, e.type, json.loads(e.data_json).get("act_id"))
                for e in logged
            ]
            after = logged[-1].position
        return found
    finally:
        ledger.close()


def claim_id_of(ref: str) -> str:
    return str(claim_id_for_key(ref))


def assert_versions_contiguous(events: Iterable[StoredEvent]) -> None:
    """Each claim's versions run 1, 2, 3, ... in log order, with no gap and no repeat."""
    versions: dict[str, list[int]] = defaultdict(list)
    for e in events:
        versions[e.claim_id].append(e.version)
    for claim_id, seen in versions.items():
        assert seen == list(range(1, len(seen) + 1)), f"claim {claim_id} has versions {seen}"


def expected_act_id(answer: Answer, token_id: str) -> str | None:
    """The act_id a write made (or would make): the client's, or the one derived from its key."""
    body_act = answer.write.body.get("act_id")
    if body_act is not None:
        return str(body_act)
    if answer.write.idempotency_key is not None:
        return derived_act_id(token_id, answer.write.idempotency_key)
    return None


def assert_acknowledged_writes_stored(answers: Iterable[Answer], events: list[StoredEvent]) -> int:
    """Every 2xx write is in the store at the version and position it was answered with.

    Returns how many acknowledged writes were checked.
    """
    by_act = {(e.claim_id, e.act_id): e for e in events if e.act_id is not None}
    registered = {e.claim_id: e for e in events if e.version == 1}
    checked = 0
    for answer in answers:
        if not answer.ok:
            continue
        assert answer.body is not None
        checked += 1
        if answer.write.kind == "claims":
            event = registered.get(answer.body["id"])
            assert event is not None, f"acknowledged registration {answer.body} is not in the store"
            assert (event.version, event.position) == (1, answer.body["position"]), (answer.body, event)
            continue
        claim_id = claim_id_of(answer.write.claim)
        stored = by_act.get((claim_id, answer.body["act_id"]))
        assert stored is not None, f"acknowledged act {answer.write.path} {answer.body} is not in the store"
        assert (stored.version, stored.position) == (answer.body["version"], answer.body["position"]), (
            f"{answer.write.path} was answered {answer.body} but the store has version {stored.version} "
            f"at position {stored.position}"
        )
    return checked


def assert_each_act_stored_once(events: Iterable[StoredEvent]) -> None:
    """No act is recorded twice (an act_id is unique within its claim)."""
    counts = Counter((e.claim_id, e.act_id) for e in events if e.act_id is not None)
    repeated = {k: n for k, n in counts.items() if n > 1}
    assert not repeated, f"acts stored more than once: {repeated}"


def assert_refused_writes_not_stored(answers: Iterable[Answer], events: list[StoredEvent], token_id: str) -> int:
    """A write refused with a 4xx left nothing behind; returns how many refusals were checked."""
    stored = {(e.claim_id, e.act_id) for e in events}
    checked = 0
    for answer in answers:
        if answer.status is None or not 400 <= answer.status < 500 or answer.write.kind == "claims":
            continue
        act_id = expected_act_id(answer, token_id)
        if act_id is None:
            continue
        checked += 1
        assert (claim_id_of(answer.write.claim), act_id) not in stored, (
            f"{answer.write.path} was refused with {answer.status} but its act {act_id} is in the store"
        )
    return checked


def assert_projections_equal_a_fresh_rebuild(database_url: str, head: int) -> None:
    """The projections reached `head`, and `claims verify`'s checks hold: hash chains, Merkle
    root, every read-model table equal to a fresh rebuild."""
    runtime = Runtime.open(database_url, pool_size=2)
    try:
        report = verify_store(runtime)
    finally:
        runtime.close()
    assert report.ok, "\n".join(report.lines())
    assert report.projections_compared and report.projected_position == head, "\n".join(report.lines())
