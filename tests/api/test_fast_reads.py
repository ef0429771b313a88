"""The one-statement lookups of the hot paths (api/lookups.py): same answers, and they survive a restart."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator

import pytest

from api.app import LedgerAPI
from api.lookups import Lookups
from api.schemas import ClaimView
from tests.api import story
from tests.api.conftest import Api, open_api_through_proxy
from tests.api.proxy import Proxy


def lane_answers(api: Api) -> int | None:
    """How many requests the app's fast lane answered itself; None when it runs without one."""
    assert isinstance(api.app, LedgerAPI)
    return None if api.app.fast_lane is None else api.app.fast_lane.answered


def test_a_claim_read_now_is_byte_for_byte_what_its_response_model_serialises(api: Api, fast_lane: bool) -> None:
    written = api.register(statement="Ёлки-палки: «Путин позвонил Элтону Джону» \u2014 14.09.2015")
    last = api.act("denials", story.peskov_denies(on_behalf_of={"id": "vladimir-putin", "name": "Влади́мир Пу́тин"}))
    # With min_position the read goes through FastAPI (the lane leaves every query parameter
    # to it); once the write is projected, the same read without one is the lane's to answer.
    by_fastapi = api.get(f"/v1/claims/{story.KEY}", min_position=last["position"])
    assert by_fastapi.status_code == 200
    answered = lane_answers(api)
    for ref in (story.KEY, written["id"], written["id"].upper()):
        response = api.get(f"/v1/claims/{ref}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["etag"] == '"2"'
        assert response.content == ClaimView.model_validate_json(response.content).model_dump_json().encode()
        assert response.content == by_fastapi.content
    if fast_lane:  # the three reads were the lane's
        assert answered is not None and lane_answers(api) == answered + 3
    else:  # no lane: FastAPI answered them all
        assert (answered, lane_answers(api)) == (None, None)


@pytest.fixture
def proxied(monkeypatch: pytest.MonkeyPatch, fast_lane: bool) -> Iterator[tuple[Api, Proxy]]:
    yield from open_api_through_proxy(monkeypatch, fast_lane=fast_lane)


@pytest.mark.postgres
def test_lookups_on_connections_a_restart_broke_are_retried_on_new_ones(proxied: tuple[Api, Proxy]) -> None:
    api, proxy = proxied
    position = api.register()["position"]
    assert api.get(f"/v1/claims/{story.KEY}", min_position=position).status_code == 200
    proxy.cut()  # every open connection breaks, as when the database restarts
    proxy.restore()
    assert api.get(f"/v1/claims/{story.KEY}").status_code == 200
    written = api.post(f"/v1/claims/{story.KEY}/assertions", story.elton_asserts())  # the token lookup too
    assert written.status_code == 201, written.text


def test_the_fast_lane_answers_a_plain_write_exactly_as_the_full_route(api: Api, fast_lane: bool) -> None:
    api.register()
    api.register(statement="Another proposition", key="another-claim")
    answered = lane_answers(api)
    plain = api.post(f"/v1/claims/{story.KEY}/assertions", story.elton_asserts())  # the fast lane
    after_plain = lane_answers(api)
    full = api.post("/v1/claims/another-claim/assertions", story.elton_asserts(),
                    headers={"If-Match": "*"})  # the same request to the ordinary handler
    assert lane_answers(api) == after_plain  # If-Match is left to FastAPI
    assert plain.status_code == full.status_code == 201
    assert plain.headers["content-type"] == full.headers["content-type"]
    assert re.sub(rb"\d+", b"N", plain.content) == re.sub(rb"\d+", b"N", full.content)
    retry = api.post(f"/v1/claims/{story.KEY}/assertions", story.elton_asserts())
    assert (retry.status_code, retry.json()) == (200, plain.json())  # an idempotent retry, with its position
    if fast_lane:  # the plain write and its retry were the lane's, the If-Match one FastAPI's
        assert answered is not None and (after_plain, lane_answers(api)) == (answered + 1, answered + 2)
    else:
        assert (answered, after_plain, lane_answers(api)) == (None, None, None)


def test_lookups_asked_together_each_get_their_own_answer(api: Api) -> None:
    first = api.register()
    uuid_key = str(uuid.uuid4())  # a key shaped like an id is found as a key
    api.register(statement="A claim imported with a UUID for a key", key=uuid_key)
    last = api.register(statement="A third claim", key="third-claim")
    api.get(f"/v1/claims/{story.KEY}", min_position=last["position"])
    refs = [story.KEY, first["id"], uuid_key, "third-claim", "no-such-claim", str(uuid.uuid4()), "x\x00y"] * 5
    lookups = Lookups(api.services.runtime.database, 2)

    async def ask() -> list[tuple[bytes, int] | None]:
        try:
            return await asyncio.gather(*(lookups.claim_view(ref) for ref in refs))
        finally:
            await lookups.aclose()

    found = asyncio.run(ask())
    keys = [None if f is None else json.loads(f[0])["key"] for f in found]
    assert keys == [story.KEY, story.KEY, uuid_key, "third-claim", None, None, None] * 5
