"""Idempotency-Key: a retried write answers with the first response and writes nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from api.idempotency import derived_act_id, run_once
from api.problems import Problem
from domain.commands import RecordAct
from domain.errors import StoreUnavailable, UnknownClaim, VersionMismatch
from domain.ledger import Outcome
from store.db import ReadStore
from store.idempotency import TABLE, IdempotencyStore, KeptResponse
from store.settings import Database
from tests.api import story
from tests.api.conftest import Api

Json = dict[str, Any]


def test_a_retried_registration_returns_the_first_response_and_writes_nothing(api: Api) -> None:
    headers = {"Idempotency-Key": "reg-0001"}
    first = api.post("/v1/claims", story.registration(), headers=headers)
    retry = api.post("/v1/claims", story.registration(), headers=headers)
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert api.services.runtime.ledger.max_position() == 1


def test_a_retried_act_returns_the_first_response_and_writes_nothing(api: Api) -> None:
    api.register()
    body = story.elton_asserts()
    del body["act_id"]
    headers = {"Idempotency-Key": "elton-instagram-2015-09-14"}
    first = api.post(f"/v1/claims/{story.KEY}/assertions", body, headers=headers)
    retry = api.post(f"/v1/claims/{story.KEY}/assertions", dict(reversed(body.items())), headers=headers)
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert api.services.runtime.ledger.max_position() == 2


def test_the_same_key_with_a_different_body_is_a_422(api: Api) -> None:
    api.register()
    headers = {"Idempotency-Key": "one-key"}
    api.post(f"/v1/claims/{story.KEY}/assertions", story.elton_asserts(), headers=headers)
    other = api.post(f"/v1/claims/{story.KEY}/assertions", story.elton_asserts(note="edited"), headers=headers)
    assert other.status_code == 422
    assert other.json()["type"].endswith(":idempotency-key-reused")
    elsewhere = api.post(f"/v1/claims/{story.KEY}/denials", story.elton_asserts(), headers=headers)
    assert elsewhere.status_code == 422
    assert api.services.runtime.ledger.max_position() == 2


def test_keys_belong_to_one_token(api: Api) -> None:
    api.register()
    headers = {"Idempotency-Key": "shared-key"}
    body = story.elton_asserts()
    del body["act_id"]
    mine = api.post(f"/v1/claims/{story.KEY}/assertions", body, role="recorder", headers=headers)
    theirs = api.post(f"/v1/claims/{story.KEY}/assertions", body, role="editor", headers=headers)
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["act_id"] != theirs.json()["act_id"]


def test_a_refused_request_is_not_kept_so_its_retry_is_answered_afresh(api: Api) -> None:
    headers = {"Idempotency-Key": "early-assertion"}
    too_early = api.post(f"/v1/claims/{story.KEY}/assertions", story.elton_asserts(), headers=headers)
    assert too_early.status_code == 404
    api.register()
    retry = api.post(f"/v1/claims/{story.KEY}/assertions", story.elton_asserts(), headers=headers)
    assert retry.status_code == 201


def denial_committed_unanswered(api: Api, key: str) -> tuple[Json, str, Outcome]:
    """The seed claim registered, then Peskov's denial committed as a POST with `key` (and no
    act_id) would have committed it, with no answer kept: (the POST's body, its act_id, the
    outcome)."""
    api.register()
    body = story.peskov_denies()
    del body["act_id"]
    principal = api.services.tokens.authenticate(api.token("recorder"))
    assert principal is not None
    act_id = derived_act_id(principal.token_id, key)
    committed = api.services.runtime.ledger.execute_one(RecordAct.build("deny", story.KEY, {**body, "act_id": act_id}))
    return body, act_id, committed


def test_a_retry_after_a_crash_before_the_key_was_kept_is_an_idempotent_act_retry(api: Api) -> None:
    """The server committed the act, then died before keeping the response: the retry
    finds no kept response, but the act_id derived from the key makes it the same act."""
    key = "peskov-denial-attempt-1"
    body, act_id, committed = denial_committed_unanswered(api, key)
    retry = api.post(f"/v1/claims/{story.KEY}/denials", body, headers={"Idempotency-Key": key})
    assert retry.status_code == 200
    assert retry.json() == {"act_id": act_id, "version": committed.version, "position": committed.position}
    assert api.services.runtime.ledger.max_position() == committed.position


def test_a_retry_answers_where_the_act_is_in_the_log_though_nothing_is_projected(
    api_without_projections: Api,
) -> None:
    """The first attempt's answer was lost, later writes moved the log on, and the
    projections are behind: the retry still answers with the act's own position (an
    auditor asks for its inclusion proof with it), read from the event store."""
    api = api_without_projections
    key = "lost-answer"
    body, act_id, committed = denial_committed_unanswered(api, key)
    for n in range(3):
        assert api.post("/v1/claims", {"statement": f"Later claim {n}", "key": f"later-{n}"}).status_code == 201
    head = api.services.runtime.ledger.max_position()
    assert committed.position is not None and head == committed.position + 3
    retry = api.post(f"/v1/claims/{story.KEY}/denials", body, headers={"Idempotency-Key": key})
    assert retry.status_code == 200
    assert retry.json() == {"act_id": act_id, "version": committed.version, "position": committed.position}
    registration = api.post("/v1/claims", {"statement": "Later claim 0", "key": "later-0"})
    assert registration.status_code == 200 and registration.json()["position"] == committed.position + 1
    assert api.services.runtime.ledger.max_position() == head


def test_concurrent_requests_with_one_key_write_once(api: Api) -> None:
    api.register()
    body = story.elton_asserts()
    del body["act_id"]
    answers = []

    def send() -> None:
        answers.append(api.post(f"/v1/claims/{story.KEY}/assertions", body, headers={"Idempotency-Key": "race"}))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {r.status_code for r in answers} <= {200, 201}
    assert len({r.json()["act_id"] for r in answers}) == 1
    assert api.services.runtime.ledger.max_position() == 2


def test_an_idempotency_key_must_be_visible_ascii(api: Api) -> None:
    api.register()
    response = api.post(f"/v1/claims/{story.KEY}/assertions", story.elton_asserts(),
                        headers={"Idempotency-Key": "has space"})
    assert response.status_code == 422
    assert response.json()["type"].endswith(":invalid-idempotency-key")


def test_a_key_reserved_by_a_request_still_in_flight_refuses_a_different_request(api: Api) -> None:
    """Another API process holds the key for a different act and has not finished."""
    api.register()
    key = "in-flight-elsewhere"
    principal = api.services.tokens.authenticate(api.token("recorder"))
    assert principal is not None
    assert api.services.idempotency.reserve(principal.token_id, key, "the other request's fingerprint")
    other = api.post(f"/v1/claims/{story.KEY}/assertions", story.elton_asserts(), headers={"Idempotency-Key": key})
    assert other.status_code == 422
    assert other.json()["type"].endswith(":idempotency-key-reused")
    assert "in use by a different request" in other.json()["detail"]
    assert api.services.runtime.ledger.max_position() == 1


# -- The store itself, on a real database ---------------------------------------------------------

SCOPE = "token-1"
KEY = "key-1"


@pytest.fixture
def idempotency(database_url: str) -> Iterator[IdempotencyStore]:
    store = ReadStore(Database.from_url(database_url), pool_size=2)
    kept = IdempotencyStore(store)
    kept.ensure_table()
    yield kept
    store.close()


@pytest.fixture
def other_process(database_url: str) -> Iterator[IdempotencyStore]:
    """The same table seen through connections of its own, as another API process sees it."""
    store = ReadStore(Database.from_url(database_url), pool_size=1)
    yield IdempotencyStore(store)
    store.close()


class Write:
    """A write that counts its calls and answers, raises, or first runs `meanwhile`."""

    def __init__(self, status: int = 201, body: Json | None = None, *, raises: Exception | None = None,
                 meanwhile: Any = None) -> None:
        self.status = status
        self.body = body if body is not None else {"act_id": "a1", "version": 2, "position": 2}
        self.raises = raises
        self.meanwhile = meanwhile
        self.calls = 0

    def __call__(self) -> tuple[int, Json]:
        self.calls += 1
        if self.meanwhile is not None:
            self.meanwhile()
        if self.raises is not None:
            raise self.raises
        return self.status, self.body


def test_a_new_key_is_reserved_written_and_kept(idempotency: IdempotencyStore) -> None:
    write = Write()
    response, replayed = run_once(idempotency, SCOPE, KEY, "fp", write)
    assert (response.status, response.body, replayed, write.calls) == (201, write.body, False, 1)
    assert idempotency.lookup(SCOPE, KEY) == KeptResponse(201, write.body, "fp")
    again = Write()
    assert run_once(idempotency, SCOPE, KEY, "fp", again) == (KeptResponse(201, write.body, "fp"), True)
    assert again.calls == 0


def test_a_key_reserved_for_a_different_request_is_a_422_and_nothing_is_written(
    idempotency: IdempotencyStore,
) -> None:
    assert idempotency.reserve(SCOPE, KEY, "theirs")
    assert not idempotency.reserve(SCOPE, KEY, "mine")
    write = Write()
    with pytest.raises(Problem) as refused:
        run_once(idempotency, SCOPE, KEY, "mine", write)
    assert refused.value.status == 422 and refused.value.code == "idempotency-key-reused"
    assert "in use by a different request" in refused.value.detail
    assert write.calls == 0
    held = idempotency.lookup(SCOPE, KEY)
    assert held is not None and held.pending and held.fingerprint == "theirs"


def test_a_key_reserved_for_the_same_request_is_written_and_the_reservation_completed(
    idempotency: IdempotencyStore,
) -> None:
    """An identical request in flight elsewhere, or one whose server died after reserving."""
    assert idempotency.reserve(SCOPE, KEY, "fp")
    write = Write(200)
    response, replayed = run_once(idempotency, SCOPE, KEY, "fp", write)
    assert (response.status, replayed, write.calls) == (200, False, 1)
    assert idempotency.lookup(SCOPE, KEY) == KeptResponse(200, write.body, "fp")


def test_the_first_identical_request_to_complete_the_reservation_is_the_response_kept(
    idempotency: IdempotencyStore, other_process: IdempotencyStore,
) -> None:
    first = {"act_id": "a1", "version": 2, "position": 2}
    assert idempotency.reserve(SCOPE, KEY, "fp")
    write = Write(200, meanwhile=lambda: other_process.keep(SCOPE, KEY, KeptResponse(201, first, "fp")))
    response, replayed = run_once(idempotency, SCOPE, KEY, "fp", write)
    assert (response, replayed) == (KeptResponse(201, first, "fp"), True)
    assert idempotency.lookup(SCOPE, KEY) == KeptResponse(201, first, "fp")


def test_a_refused_write_gives_its_key_back(idempotency: IdempotencyStore) -> None:
    with pytest.raises(UnknownClaim):
        run_once(idempotency, SCOPE, KEY, "fp", Write(raises=UnknownClaim("no claim has the key 'x'")))
    assert idempotency.lookup(SCOPE, KEY) is None
    response, replayed = run_once(idempotency, SCOPE, KEY, "fp", Write(404, {"detail": "no claim"}))
    assert (response.status, replayed) == (404, False)
    assert idempotency.lookup(SCOPE, KEY) is None
    write = Write()
    assert run_once(idempotency, SCOPE, KEY, "another request", write)[0].status == 201
    assert write.calls == 1


def test_a_write_that_may_have_been_recorded_keeps_its_key_reserved_for_its_retry(
    idempotency: IdempotencyStore,
) -> None:
    """A 503 (the database went away, the writer timed out mid-commit) says nothing about the write."""
    with pytest.raises(StoreUnavailable):
        run_once(idempotency, SCOPE, KEY, "fp", Write(raises=StoreUnavailable("the write did not finish")))
    held = idempotency.lookup(SCOPE, KEY)
    assert held is not None and held.pending
    with pytest.raises(Problem):
        run_once(idempotency, SCOPE, KEY, "another request", Write())
    retry = Write(200)
    assert run_once(idempotency, SCOPE, KEY, "fp", retry) == (KeptResponse(200, retry.body, "fp"), False)


def test_an_identical_request_refused_after_the_first_was_kept_answers_with_the_kept_response(
    idempotency: IdempotencyStore, other_process: IdempotencyStore,
) -> None:
    """Two identical writes with If-Match: the second sees the claim moved on (412), by the first."""
    first = {"act_id": "a1", "version": 4, "position": 9}
    assert idempotency.reserve(SCOPE, KEY, "fp")
    write = Write(raises=VersionMismatch(3, 4),
                  meanwhile=lambda: other_process.keep(SCOPE, KEY, KeptResponse(201, first, "fp")))
    assert run_once(idempotency, SCOPE, KEY, "fp", write) == (KeptResponse(201, first, "fp"), True)


def test_a_refused_request_leaves_a_reservation_it_does_not_hold(idempotency: IdempotencyStore) -> None:
    """An identical request may still be writing under the reservation."""
    assert idempotency.reserve(SCOPE, KEY, "fp")
    with pytest.raises(VersionMismatch):
        run_once(idempotency, SCOPE, KEY, "fp", Write(raises=VersionMismatch(3, 4)))
    held = idempotency.lookup(SCOPE, KEY)
    assert held is not None and held.pending


def test_reservations_age_out_with_the_time_to_live(idempotency: IdempotencyStore) -> None:
    assert idempotency.reserve(SCOPE, KEY, "fp")
    run_once(idempotency, SCOPE, "kept", "fp", Write())
    idempotency.reserve(SCOPE, "fresh", "fp")
    with idempotency.store.transaction() as cur:
        cur.execute(f"UPDATE {TABLE} SET created = ? WHERE key IN (?, ?)",
                    (int(time.time()) - idempotency.ttl_seconds - 10, KEY, "kept"))
    assert idempotency.purge() == 2
    assert idempotency.lookup(SCOPE, KEY) is None and idempotency.lookup(SCOPE, "kept") is None
    assert idempotency.lookup(SCOPE, "fresh") is not None
