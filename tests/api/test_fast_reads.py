"""The one-statement lookups of the hot paths (api/lookups.py): same answers, and they survive a restart."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from api.schemas import ClaimView
from domain.settings import Database
from tests.api import story
from tests.api.conftest import Api, open_api
from tests.api.proxy import Proxy
from tests.conftest import POSTGRES_URL, drop_schema, require_postgres


def test_a_claim_read_now_is_byte_for_byte_what_its_response_model_serialises(api: Api) -> None:
    written = api.register(statement="Ёлки-палки: «Путин позвонил Элтону Джону» \u2014 14.09.2015")
    last = api.act("denials", story.peskov_denies(on_behalf_of={"id": "vladimir-putin", "name": "Влади́мир Пу́тин"}))
    for ref in (story.KEY, written["id"], written["id"].upper()):
        response = api.get(f"/v1/claims/{ref}", min_position=last["position"])
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["etag"] == '"2"'
        assert response.content == ClaimView.model_validate_json(response.content).model_dump_json().encode()


@pytest.fixture
def proxied(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Api, Proxy]]:
    require_postgres()
    real = Database.from_url(POSTGRES_URL)
    proxy = Proxy((real.host, real.port))
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = f"postgresql://{real.user}@127.0.0.1:{proxy.port}/{real.dbname}?schema={schema}"
    monkeypatch.setenv("LEDGER_PG_CONNECT_TIMEOUT", "1")
    try:
        for api in open_api(url):
            yield api, proxy
            proxy.restore()
    finally:
        proxy.close()
        drop_schema(f"{POSTGRES_URL}?schema={schema}")


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
