"""Retrying a retraction or a void over HTTP: by its act_id, or by its Idempotency-Key.

A client that got no answer sends the same act again. Whether the retry names the act
(the same act_id and content: the ledger answers 200 with the act it holds) or carries the
same Idempotency-Key (the kept response, replayed), it answers like the first request, the
claim's version does not move and the store holds the act once: even when other acts were
recorded in between, and even when another process of the ledger answers the retry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from store.idempotency import TABLE as IDEMPOTENCY_TABLE
from tests.api import story
from tests.api.conftest import Api, open_api

Json = dict[str, Any]

# (route, body, role): the acts retried, on the seed story (registered, Elton John asserts,
# Peskov denies on behalf of Putin).
RETRACTION = ("retractions", {"retracts": "elton-instagram", "party": story.ELTON, "said_at": "2015-09-16",
                              "reason": "It was a prank call", "act_id": "elton-retracts"}, "recorder")
VOID = ("voids", {"voids": "peskov-tass", "reason": "Recorded against the wrong claim", "act_id": "void-peskov"},
        "editor")
ACTS = pytest.mark.parametrize(("route", "body", "role"), [RETRACTION, VOID], ids=["retraction", "void"])


def without_act_id(body: Json) -> Json:
    return {k: v for k, v in body.items() if k != "act_id"}


def events_of(api: Api, act_id: str) -> list[Json]:
    """The claim's stored events (as its history serves them, every event projected) with this act_id."""
    head = api.services.runtime.ledger.max_position()
    history = api.read(f"/v1/claims/{story.KEY}/history", head).json()["events"]
    return [e for e in history if e["act_id"] == act_id]


def claim_version(api: Api) -> int:
    head = api.services.runtime.ledger.max_position()
    response = api.read(f"/v1/claims/{story.KEY}", head)
    assert response.headers["ETag"] == f'"{response.json()["version"]}"'
    return int(response.json()["version"])


def something_else_happens(api: Api) -> None:
    """Another act on the claim between the first request and its retry."""
    api.act("assertions", story.elton_asserts(act_id="elton-bbc", said_at="2015-09-17", quote="It was real"))


@ACTS
def test_an_act_sent_again_with_its_act_id_answers_200_with_the_first_act_and_stores_it_once(
    api: Api, route: str, body: Json, role: str,
) -> None:
    api.seed()
    first = api.post(f"/v1/claims/{story.KEY}/{route}", body, role=role)
    assert first.status_code == 201, first.text
    assert (first.json()["act_id"], first.json()["version"]) == (body["act_id"], 4)
    something_else_happens(api)
    before = (claim_version(api), api.services.runtime.ledger.max_position())

    retry = api.post(f"/v1/claims/{story.KEY}/{route}", dict(reversed(body.items())), role=role)
    assert retry.status_code == 200, retry.text
    assert retry.json() == first.json()  # act_id, version and position of the first
    assert (claim_version(api), api.services.runtime.ledger.max_position()) == before
    [stored] = events_of(api, body["act_id"])
    assert (stored["version"], stored["position"]) == (first.json()["version"], first.json()["position"])


@ACTS
def test_an_act_retried_with_its_idempotency_key_answers_the_first_response_and_stores_it_once(
    api: Api, route: str, body: Json, role: str,
) -> None:
    """Without an act_id: the act's id is derived from the key, and the retry is the kept response."""
    api.seed()
    headers = {"Idempotency-Key": f"{route}-0001"}
    sent = without_act_id(body)
    first = api.post(f"/v1/claims/{story.KEY}/{route}", sent, role=role, headers=headers)
    assert first.status_code == 201, first.text
    assert first.json()["act_id"].startswith("idem-") and first.json()["version"] == 4
    something_else_happens(api)
    before = (claim_version(api), api.services.runtime.ledger.max_position())

    retry = api.post(f"/v1/claims/{story.KEY}/{route}", sent, role=role, headers=headers)
    assert retry.status_code == 201, retry.text
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json() == first.json()
    assert (claim_version(api), api.services.runtime.ledger.max_position()) == before
    [stored] = events_of(api, first.json()["act_id"])
    assert (stored["version"], stored["position"]) == (first.json()["version"], first.json()["position"])


@ACTS
def test_an_act_retried_with_its_idempotency_key_and_act_id_after_the_key_expired_is_still_recorded_once(
    api: Api, route: str, body: Json, role: str,
) -> None:
    """The kept response gone (keys age out), the same key and act fall back on the act_id:
    200 with the first act, nothing stored."""
    api.seed()
    headers = {"Idempotency-Key": f"{route}-0002"}
    first = api.post(f"/v1/claims/{story.KEY}/{route}", body, role=role, headers=headers)
    assert first.status_code == 201, first.text
    with api.services.runtime.store.transaction() as cur:
        cur.execute(f"DELETE FROM {IDEMPOTENCY_TABLE}")
    before = (claim_version(api), api.services.runtime.ledger.max_position())

    retry = api.post(f"/v1/claims/{story.KEY}/{route}", body, role=role, headers=headers)
    assert retry.status_code == 200, retry.text
    assert retry.json() == first.json()
    assert (claim_version(api), api.services.runtime.ledger.max_position()) == before
    assert len(events_of(api, body["act_id"])) == 1


@pytest.fixture
def other_process(api: Api, fast_lane: bool) -> Iterator[Api]:
    """A second app on the same database: its writer has never seen the claim and loads it from the store."""
    yield from open_api(api.url, fast_lane=fast_lane)


@ACTS
def test_an_act_retried_on_another_process_of_the_ledger_answers_like_the_first(
    api: Api, other_process: Api, route: str, body: Json, role: str,
) -> None:
    api.seed()
    by_id = api.post(f"/v1/claims/{story.KEY}/{route}", body, role=role)
    assert by_id.status_code == 201, by_id.text
    before = api.services.runtime.ledger.max_position()

    retry = other_process.post(f"/v1/claims/{story.KEY}/{route}", body, role=role)
    assert retry.status_code == 200, retry.text
    assert retry.json() == by_id.json()
    assert api.services.runtime.ledger.max_position() == before
    assert claim_version(other_process) == by_id.json()["version"]
    assert len(events_of(other_process, body["act_id"])) == 1
