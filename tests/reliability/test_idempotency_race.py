"""One Idempotency-Key, two different requests, two API processes, the same instant.

Two `claims serve` processes share one ledger (a SQLite file, or a PostgreSQL schema). For
each pair, two clients, one per server, send different requests with the same key at the
same moment (a barrier releases both). Exactly one may be written and answered 2xx; the
other must be answered 422 and write nothing, whichever server it reached and whenever.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from api.idempotency import derived_act_id
from store.event_store import open_ledger
from store.settings import Database
from tests.reliability.checks import claim_id_of
from tests.reliability.conftest import StartServer
from tests.reliability.server import make_token
from tests.reliability.workload import HOT_KEY, HOT_STATEMENT, PARTIES, Json

PAIRS_PER_KIND = 40


@dataclass(frozen=True)
class Pair:
    """Two different requests sent with one key: `kind` says what the ledger would hold."""

    kind: str  # "claim": two registrations; "act": two acts with their act_ids; "derived": without
    key: str
    path: str
    bodies: tuple[Json, Json]
    answers: list[tuple[int, Json]]


def pairs(n: int) -> list[Pair]:
    made: list[Pair] = []
    for i in range(n):
        made.append(Pair("claim", f"race-claim-{i}", "/v1/claims", (
            {"statement": f"Race claim {i}, as the first client put it", "key": f"race-{i}-first"},
            {"statement": f"Race claim {i}, as the second client put it", "key": f"race-{i}-second"},
        ), []))
        act = {"party": PARTIES[0], "said_at": "2015-09-14", "quote": f"Race act {i}"}
        made.append(Pair("act", f"race-act-{i}", f"/v1/claims/{HOT_KEY}/assertions", (
            {**act, "act_id": f"race-{i}-first"}, {**act, "act_id": f"race-{i}-second"},
        ), []))
        made.append(Pair("derived", f"race-derived-{i}", f"/v1/claims/{HOT_KEY}/denials", (
            {**act, "note": "first"}, {**act, "note": "second"},
        ), []))
    return made


def client_loop(base: str, token: str, side: int, work: list[Pair], barrier: threading.Barrier,
                errors: list[str]) -> None:
    """Send side `side` of every pair, each at the same moment as the other side."""
    with httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {token}"}) as http:
        http.get("/healthz")  # the connection is open before the first pair
        for pair in work:
            barrier.wait(30)
            try:
                response = http.post(pair.path, json=pair.bodies[side], headers={"Idempotency-Key": pair.key})
                pair.answers.append((side, {"status": response.status_code, **response.json()}))
            except Exception as e:  # recorded: the other side must not wait for this one forever
                errors.append(f"{pair.key} side {side}: {e!r}")


def race(bases: tuple[str, str], token: str, work: list[Pair]) -> list[str]:
    barrier = threading.Barrier(2)
    errors: list[str] = []
    threads = [
        threading.Thread(target=client_loop, args=(bases[side], token, side, work, barrier, errors))
        for side in (0, 1)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


def wrong_pairs(work: list[Pair], token_id: str, stored: Callable[[Pair, int], int]) -> list[str]:
    """What went wrong with each pair: not one 2xx and one 422, or not exactly one written."""
    wrong = []
    for pair in work:
        by_side = dict(pair.answers)
        statuses = sorted(a["status"] for a in by_side.values())
        winners = [side for side, a in by_side.items() if 200 <= a["status"] < 300]
        losers = [a for a in by_side.values() if a["status"] == 422
                  and a.get("type", "").endswith(":idempotency-key-reused")]
        written = [stored(pair, side) for side in (0, 1)]
        if len(by_side) != 2 or len(winners) != 1 or len(losers) != 1:
            details = [(a["status"], a.get("type", ""), a.get("detail", "")) for a in by_side.values()]
            wrong.append(f"{pair.key}: answered {statuses}, written {written}: {details}")
        elif written[winners[0]] != 1 or written[1 - winners[0]] != 0:
            wrong.append(f"{pair.key}: side {winners[0]} won, written {written}")
        elif pair.kind == "derived" and by_side[winners[0]]["act_id"] != derived_act_id(token_id, pair.key):
            wrong.append(f"{pair.key}: the act written is not the key's act: {by_side[winners[0]]}")
    return wrong


@pytest.mark.slow
def test_two_servers_answering_two_different_requests_with_one_key_at_once_write_one_and_refuse_the_other(
    database_url: str, start_server: StartServer
) -> None:
    token_id, token = make_token(database_url, "recorder")
    first = start_server(database_url)
    second = start_server(database_url)
    registered = httpx.post(f"{first.base}/v1/claims", json={"statement": HOT_STATEMENT, "key": HOT_KEY},
                            headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert registered.status_code == 201, registered.text

    work = pairs(PAIRS_PER_KIND)
    errors = race((first.base, second.base), token, work)
    assert not errors, errors

    events = logged_events(database_url)
    claims = {claim_id for claim_id, _ in events}
    acts: dict[str, list[Json]] = defaultdict(list)
    for _, data in events:
        acts[data.get("act_id", "")].append(data)

    def stored(pair: Pair, side: int) -> int:
        """How many times the ledger holds what side `side` of the pair asked for."""
        body = pair.bodies[side]
        if pair.kind == "claim":
            return int(claim_id_of(body["key"]) in claims)
        act_id = body["act_id"] if pair.kind == "act" else derived_act_id(token_id, pair.key)
        return sum(data.get("note") == body.get("note") for data in acts[act_id])

    wrong = wrong_pairs(work, token_id, stored)
    assert not wrong, f"{len(wrong)} of {len(work)} pairs went wrong:\n" + "\n".join(wrong[:20])
    assert len(events) == 1 + len(work)  # the hot claim, then one write per pair


def logged_events(database_url: str) -> list[tuple[str, Json]]:
    """(claim id, data) of every event in the store, in log order."""
    ledger = open_ledger(Database.from_url(database_url))
    try:
        found: list[tuple[str, Json]] = []
        after = 0
        while logged := ledger.read_log(after, 5000):
            found += [(str(e.claim_id), json.loads(e.data_json)) for e in logged]
            after = logged[-1].position
        return found
    finally:
        ledger.close()
