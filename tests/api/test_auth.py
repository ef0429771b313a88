"""Roles on every route, token lifecycle, and the `claims token` commands."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from api.routes.deps import ApiSettings
from cli import tokens as cli_tokens  # noqa: F401 - registers `claims token`
from cli.main import app as cli
from domain.ijson import MAX_SAFE_INTEGER
from store.db import ReadStore
from store.settings import Database, Settings
from store.tokens import AccessRefused, Credential, Role, TokenStore, token_hash
from tests.api import story
from tests.api.conftest import Api
from tests.conftest import new_database_url

K = story.KEY
# (method, path, body, role needed; None = a read, open unless read tokens are required)
ROUTES: list[tuple[str, str, dict[str, Any] | None, Role | None]] = [
    ("POST", "/v1/claims", story.registration(), Role.RECORDER),
    ("POST", f"/v1/claims/{K}/assertions", story.elton_asserts(), Role.RECORDER),
    ("POST", f"/v1/claims/{K}/denials", story.peskov_denies(), Role.RECORDER),
    ("POST", f"/v1/claims/{K}/retractions", {"retracts": "no-such-act", "party": story.ELTON}, Role.RECORDER),
    ("POST", f"/v1/claims/{K}/voids", {"voids": "no-such-act", "reason": "typo"}, Role.EDITOR),
    ("GET", "/v1/claims", None, None),
    ("GET", f"/v1/claims/{K}", None, None),
    ("GET", f"/v1/claims/{K}/history", None, None),
    ("GET", "/v1/parties/elton-john", None, None),
    ("GET", "/v1/events", None, Role.AUDITOR),
    ("POST", f"/v1/claims/{K}/reviews", {"reviewer": {"id": "full-fact", "name": "Full Fact"},
                                         "rating": {"text": "Unproven"}, "url": "https://fullfact.org/r/1"},
     Role.RECORDER),
    # The streams, from a position past the log's end: a caller let through gets a prompt 422
    # instead of a stream that never ends; the others their 401 or 403 first.
    ("GET", f"/v1/claims/stream?after={MAX_SAFE_INTEGER}", None, None),
    ("GET", f"/v1/events/stream?after={MAX_SAFE_INTEGER}", None, Role.AUDITOR),
]
OPEN_ALWAYS = ["/healthz", "/metrics", "/openapi.json", "/docs"]
CALLERS = [None, "unknown", "revoked", *[r.value for r in Role]]


@pytest.fixture(scope="module")
def matrix_api(shared_api: Api) -> Api:
    shared_api.seed()
    _, revoked = shared_api.services.tokens.create(Role.ADMIN, label="revoked at once")
    record = shared_api.services.tokens.authenticate(revoked)
    assert record is not None
    shared_api.services.tokens.revoke(record.token_id)
    shared_api.tokens["revoked"] = revoked
    shared_api.tokens["unknown"] = "clm_" + "x" * 43
    return shared_api


@pytest.fixture
def read_tokens_required(matrix_api: Api) -> Iterator[Api]:
    services = matrix_api.services
    before = services.settings
    services.settings = dataclasses.replace(before, read_tokens_required=True)
    yield matrix_api
    services.settings = before


def call(api: Api, method: str, path: str, body: dict[str, Any] | None, caller: str | None) -> httpx.Response:
    headers = {}
    if caller is not None:
        token = api.tokens[caller] if caller in ("unknown", "revoked") else api.token(caller)
        headers["Authorization"] = f"Bearer {token}"
    return api.client.request(method, path, json=body, headers=headers)


def expected_status(needed: Role | None, caller: str | None) -> int | None:
    """401, 403, or None for 'let through'."""
    if caller in ("unknown", "revoked"):
        return 401
    if needed is None:
        return None
    if caller is None:
        return 401
    return None if Role(caller).allows(needed) else 403


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(("method", "path", "body", "needed"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_every_route_lets_through_exactly_the_roles_it_needs(
    matrix_api: Api, method: str, path: str, body: dict[str, Any] | None, needed: Role | None, caller: str | None,
) -> None:
    response = call(matrix_api, method, path, body, caller)
    expected = expected_status(needed, caller)
    if expected is None:
        assert response.status_code not in (401, 403), response.text
        assert response.status_code < 500, response.text
    else:
        assert response.status_code == expected, response.text
        assert response.headers["content-type"] == "application/problem+json"
    if response.status_code == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(("method", "path", "body", "needed"), [r for r in ROUTES if r[3] is None or r[0] == "GET"],
                         ids=[f"{m} {p}" for m, p, _, n in ROUTES if n is None or m == "GET"])
def test_with_read_tokens_required_reads_need_role_reader(
    read_tokens_required: Api, method: str, path: str, body: dict[str, Any] | None, needed: Role | None,
    caller: str | None,
) -> None:
    response = call(read_tokens_required, method, path, body, caller)
    expected = expected_status(needed or Role.READER, caller)
    if expected is None:  # let through: the streams refuse their position past the log's end
        assert response.status_code == (422 if "/stream?" in path else 200), response.text
    else:
        assert response.status_code == expected, response.text


@pytest.mark.parametrize("path", OPEN_ALWAYS)
def test_health_metrics_and_docs_are_open_to_all(read_tokens_required: Api, path: str) -> None:
    assert read_tokens_required.client.get(path).status_code == 200


def test_read_tokens_required_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_READ_TOKENS_REQUIRED", "1")
    assert ApiSettings.from_settings(Settings()).read_tokens_required
    monkeypatch.setenv("LEDGER_READ_TOKENS_REQUIRED", "0")
    assert not ApiSettings.from_settings(Settings()).read_tokens_required


def test_a_malformed_authorization_header_is_a_401(api: Api) -> None:
    for value in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer ", api.token("admin")):
        response = api.client.post("/v1/claims", json=story.registration(), headers={"Authorization": value})
        assert response.status_code == 401, value
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_a_revoked_token_stops_working_at_once(api: Api) -> None:
    record, token = api.services.tokens.create(Role.RECORDER)
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.post("/v1/claims", json=story.registration(), headers=headers).status_code == 201
    api.services.tokens.revoke(record.token_id)
    assert api.client.post("/v1/claims", json=story.registration(), headers=headers).status_code == 401


def test_a_revoked_token_stops_recording_acts_at_once(api: Api) -> None:
    """On the fast lane the group writer checks an act's token with its batch; through
    FastAPI (`--fast-lane=off`) the route's dependency does."""
    api.register()
    record, token = api.services.tokens.create(Role.RECORDER)
    headers = {"Authorization": f"Bearer {token}"}
    path = f"/v1/claims/{K}/assertions"
    assert api.client.post(path, json=story.elton_asserts(act_id="before"), headers=headers).status_code == 201
    api.services.tokens.revoke(record.token_id)
    refused = api.client.post(path, json=story.elton_asserts(act_id="after"), headers=headers)
    assert refused.status_code == 401, refused.text
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    assert refused.headers["content-type"] == "application/problem+json"
    claim = api.services.runtime.ledger.get_claim(K)
    assert claim.version == 2 and claim.act("before") is not None and claim.act("after") is None


@pytest.mark.parametrize(("caller", "status"), [(None, 401), ("unknown", 401), ("reader", 403), ("recorder", 404)])
def test_an_act_is_refused_for_its_token_before_its_claim_is_looked_up(
    api: Api, caller: str | None, status: int,
) -> None:
    api.tokens["unknown"] = "clm_" + "x" * 43
    response = call(api, "POST", "/v1/claims/no-such-claim/assertions", story.elton_asserts(), caller)
    assert response.status_code == status, response.text


@pytest.mark.parametrize("needed", list(Role))
def test_a_batch_of_the_group_writer_and_a_single_request_refuse_each_token_alike(
    matrix_api: Api, needed: Role,
) -> None:
    """One rule (`store.tokens.authorize`) for the writer's one-statement check of a batch
    and for a request's own lookup: the same refusal, word for word, or none for both."""
    tokens = matrix_api.services.tokens
    callers = [c for c in CALLERS if c is not None]
    digests = [token_hash(matrix_api.tokens[c] if c in ("unknown", "revoked") else matrix_api.token(c))
               for c in callers]
    batch = tokens.check([Credential(digest, needed) for digest in digests])

    async def alone(digest: str) -> AccessRefused | None:
        try:
            await tokens.authorize_async(digest, needed)
        except AccessRefused as e:
            return e
        return None

    for caller, digest, in_batch in zip(callers, digests, batch, strict=True):
        single = matrix_api.client.portal.call(alone, digest)  # on the app's own event loop
        assert type(in_batch) is type(single) and str(in_batch) == str(single), caller
        assert (single is None) == (expected_status(needed, caller) is None), caller


def test_tokens_are_stored_only_as_sha256_hashes(api: Api) -> None:
    _, token = api.services.tokens.create(Role.EDITOR)
    with api.services.runtime.store.reading() as cur:
        rows = cur.execute("SELECT * FROM api_tokens").fetchall()
    stored = " ".join(str(v) for row in rows for v in row)
    assert token not in stored
    assert hashlib.sha256(token.encode()).hexdigest() in stored


def test_the_403_names_the_role_needed(api: Api) -> None:
    api.register()
    response = api.post(f"/v1/claims/{K}/voids", {"voids": "x", "reason": "typo"}, role="recorder")
    assert response.status_code == 403
    assert "editor" in response.json()["detail"]


def test_token_create_prints_the_token_alone_on_stdout_and_it_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = new_database_url("sqlite", tmp_path)
    monkeypatch.setenv("LEDGER_DATABASE_URL", url)
    runner = CliRunner()
    created = runner.invoke(cli, ["token", "create", "--role", "recorder", "--label", "newsroom app"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith("clm_") and "\n" not in token
    assert "shown only now" in created.stderr

    store = ReadStore(Database.from_url(url))
    try:
        tokens = TokenStore(store)
        principal = tokens.authenticate(token)
        assert principal is not None and principal.role == Role.RECORDER and principal.label == "newsroom app"
        listed = runner.invoke(cli, ["token", "list"])
        assert listed.exit_code == 0
        assert principal.token_id in listed.stdout and token not in listed.stdout
        revoked = runner.invoke(cli, ["token", "revoke", principal.token_id])
        assert revoked.exit_code == 0
        assert tokens.authenticate(token) is None
        assert runner.invoke(cli, ["token", "revoke", "tok-nope"]).exit_code == 1
        assert runner.invoke(cli, ["token", "create", "--role", "superuser"]).exit_code == 2
    finally:
        store.close()


def test_token_commands_work_on_postgres(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = new_database_url("postgres", tmp_path)
    monkeypatch.setenv("LEDGER_DATABASE_URL", url)
    try:
        created = CliRunner().invoke(cli, ["token", "create", "--role", "auditor"])
        assert created.exit_code == 0, created.output
        listed = CliRunner().invoke(cli, ["token", "list"])
        assert "auditor" in listed.stdout
    finally:
        from tests.conftest import drop_schema

        drop_schema(url)
