"""Idempotency-Key: a retried write answers with the first response and writes nothing."""

from __future__ import annotations

import threading

from api.idempotency import derived_act_id
from domain.commands import RecordAct
from tests.api import story
from tests.api.conftest import Api


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


def test_a_retry_after_a_crash_before_the_key_was_kept_is_an_idempotent_act_retry(api: Api) -> None:
    """The server committed the act, then died before keeping the response: the retry
    finds no kept response, but the act_id derived from the key makes it the same act."""
    api.register()
    body = story.peskov_denies()
    del body["act_id"]
    key = "peskov-denial-attempt-1"
    principal = api.services.tokens.authenticate(api.token("recorder"))
    assert principal is not None
    act_id = derived_act_id(principal.token_id, key)
    committed = api.services.runtime.ledger.execute_one(
        RecordAct.build("deny", story.KEY, {**body, "act_id": act_id})
    )
    retry = api.post(f"/v1/claims/{story.KEY}/denials", body, headers={"Idempotency-Key": key})
    assert retry.status_code == 200
    assert retry.json() == {"act_id": act_id, "version": committed.version, "position": committed.position}
    assert api.services.runtime.ledger.max_position() == committed.position


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
