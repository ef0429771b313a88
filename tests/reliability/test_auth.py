"""Nobody writes or audits without the right role, against a real server process.

tests/api/test_auth.py holds the role matrix of the claim, act, party and feed routes
(in-process, toggling the read-token setting); here the audit routes it lacks are added,
its matrix is run against `claims serve` started with LEDGER_READ_TOKENS_REQUIRED=1, and
every operation the OpenAPI document lists must be in one of the two. Tokens are looked for in clear in every table and in everything the server printed
at debug level; a token revoked with `claims token revoke` fails at once in every worker.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from store.db import ReadStore
from store.settings import Database
from store.tokens import Role, TokenStore
from tests.api import story
from tests.api.test_auth import CALLERS, OPEN_ALWAYS, ROUTES, expected_status
from tests.conftest import drop_schema, new_database_url
from tests.reliability.conftest import StartServer
from tests.reliability.server import LedgerServer, make_token

Route = tuple[str, str, dict[str, Any] | None, Role | None]
OPEN_TO_ALL = "open to all"  # answered to anyone, whatever token they send
AUDIT_ROUTES: list[Route] = [
    ("GET", "/v1/audit/proofs/inclusion?position=1", None, Role.AUDITOR),
    ("GET", "/v1/audit/proofs/consistency?from_size=1&to_size=2", None, Role.AUDITOR),
]
PUBLIC_KEY = "/v1/audit/public-key"
# What a restore lost, signed: published for everyone who follows the log, like the key.
ROLLBACKS = "/v1/audit/rollbacks"
# Checkpoints carry hashes only, and witnesses and monitors read them with no account
# (docs/auditing.md, "Access to checkpoints and tiles").
CHECKPOINTS = ["/checkpoint", "/v1/audit/checkpoint"]
# Tiles too, for the same reason; the served log has two events, so both partial tiles of width 2 exist.
TILES = ["/tile/0/000.p/2", "/tile/entries/000.p/2"]


@dataclass
class Served:
    server: LedgerServer
    reads_closed: bool
    http: httpx.Client
    tokens: dict[str, str] = field(default_factory=dict)

    def call(self, method: str, path: str, body: dict[str, Any] | None, caller: str | None) -> httpx.Response:
        headers = {} if caller is None else {"Authorization": f"Bearer {self.tokens[caller]}"}
        return self.http.request(method, path, json=body, headers=headers)


@pytest.fixture(scope="module", params=[False, True], ids=["reads open", "reads closed"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("auth")
    url = new_database_url("sqlite", workdir)
    closed = bool(request.param)
    server = LedgerServer(url, workdir, extra_env={"LEDGER_READ_TOKENS_REQUIRED": "1" if closed else "0"})
    try:
        server.start()
        found = Served(server, closed, httpx.Client(base_url=server.base, timeout=30),
                       {role.value: make_token(url, role.value)[1] for role in Role})
        revoked_id, found.tokens["revoked"] = make_token(url, "admin", "revoked at once")
        store = ReadStore(Database.from_url(url), pool_size=1)
        TokenStore(store).revoke(revoked_id)
        store.close()
        found.tokens["unknown"] = "clm_" + "x" * 43
        for path, body in (("/v1/claims", story.registration()), (f"/v1/claims/{story.KEY}/assertions",
                                                                    story.elton_asserts())):
            assert found.call("POST", path, body, "admin").status_code == 201
        server.wait_projected()
        yield found
        found.http.close()
    finally:
        server.kill()


def test_every_route_lets_through_exactly_the_roles_it_needs_on_a_real_server(served: Served) -> None:
    """The audit routes, which tests/api lacks; and, with LEDGER_READ_TOKENS_REQUIRED=1 read from
    the server's environment, tests/api's matrix too (it sets the option in-process)."""
    wrong: list[str] = []
    for method, path, body, needed in [*AUDIT_ROUTES, *(ROUTES if served.reads_closed else [])]:
        if needed is None and served.reads_closed:
            needed = Role.READER
        for caller in CALLERS:
            response = served.call(method, path, body, caller)
            expected = expected_status(needed, caller)
            ok = (response.status_code not in (401, 403) and response.status_code < 500) if expected is None \
                else response.status_code == expected and response.headers["content-type"] == "application/problem+json"
            if not ok:
                wrong.append(f"{method} {path} as {caller}: {response.status_code} (expected {expected or 'through'})")
            if response.status_code == 401 and not response.headers["WWW-Authenticate"].startswith("Bearer"):
                wrong.append(f"{method} {path} as {caller}: 401 without a Bearer challenge")
    assert not wrong, "\n".join(wrong)


def test_the_public_key_checkpoints_tiles_health_and_metrics_are_open_to_all_whatever_token_is_sent(
    served: Served,
) -> None:
    for path in [PUBLIC_KEY, ROLLBACKS, *CHECKPOINTS, *TILES, *[p for p in OPEN_ALWAYS if p != "/docs"]]:
        for caller in CALLERS:
            response = served.call("GET", path, None, caller)
            assert response.status_code == 200, (path, caller, response.status_code)


def test_every_operation_in_the_openapi_document_is_in_the_role_matrix(served: Served) -> None:
    document = httpx.get(served.server.base + "/openapi.json", timeout=10).json()
    covered = [(m, p.split("?")[0]) for m, p, _, _ in [*ROUTES, *AUDIT_ROUTES]]
    covered += [("GET", p) for p in [PUBLIC_KEY, ROLLBACKS, *CHECKPOINTS, *TILES, *OPEN_ALWAYS]]
    missing = []
    for template, item in document["paths"].items():
        # A tile's address spans segments (/tile/0/x001/234.p/7); every other parameter is one.
        pattern = re.compile(re.sub(r"\{[^/]+\}", lambda m: ".+" if m[0] == "{tile}" else "[^/]+", template) + "$")
        for method in item:
            if not any(m == method.upper() and pattern.match(p) for m, p in covered):
                missing.append(f"{method.upper()} {template}")
    assert not missing, f"operations with no role check: {missing}"


def everything_stored(database_url: str) -> str:
    """The text of every row of every table in the ledger's database."""
    database = Database.from_url(database_url)
    parts: list[str] = []
    if database.backend == "sqlite":
        with sqlite3.connect(database.path) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                for row in conn.execute(f'SELECT * FROM "{table}"'):
                    parts += [bytes(v).decode("utf-8", "replace") if isinstance(v, bytes | memoryview) else str(v)
                              for v in row]
        return "\n".join(parts)
    with psycopg.connect(**database.connect_kwargs()) as conn:  # type: ignore[arg-type]
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (database.schema,))]
        assert "api_tokens" in tables and "api_idempotency" in tables
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{database.schema}"."{table}"'):
                parts += [bytes(v).decode("utf-8", "replace") if isinstance(v, bytes | memoryview) else str(v)
                          for v in row]
    return "\n".join(parts)


@pytest.mark.slow
def test_tokens_are_never_stored_or_logged_in_clear(database_url: str, start_server: StartServer) -> None:
    server = start_server(database_url, log_level="debug")
    created = server.claims("token", "create", "--role", "editor", "--label", "newsroom")
    assert created.returncode == 0, created.stderr
    editor = created.stdout.strip()
    assert editor.startswith("clm_") and editor not in created.stderr
    revoked_id, revoked = make_token(database_url, "recorder")
    store = ReadStore(Database.from_url(database_url), pool_size=1)
    TokenStore(store).revoke(revoked_id)
    store.close()
    tokens = [editor, revoked, "clm_never-issued-but-sent-anyway-0123456789abcdef"]

    base = server.base
    with httpx.Client(base_url=base, timeout=30) as http:
        bearer = {"Authorization": f"Bearer {editor}"}
        assert http.post("/v1/claims", json=story.registration(), headers={**bearer, "Idempotency-Key": "k1"}).status_code == 201
        denial = {k: v for k, v in story.peskov_denies().items() if k != "act_id"}  # its act_id comes from the key
        assert http.post(f"/v1/claims/{story.KEY}/denials", json=denial,
                         headers={**bearer, "Idempotency-Key": "k2"}).status_code == 201
        assert http.post(f"/v1/claims/{story.KEY}/voids", json={"voids": "nope", "reason": "typo"},
                         headers=bearer).status_code == 404
        for token in tokens[1:]:
            assert http.post("/v1/claims", json=story.registration(), headers={"Authorization": f"Bearer {token}"}).status_code == 401
        for header in (f"Bearer {editor} trailing", f"Basic {editor}", f"Token {editor}", editor):
            assert http.post("/v1/claims", json=story.registration(), headers={"Authorization": header}).status_code == 401
    listed = server.claims("token", "list")
    server.stop()

    stored = everything_stored(database_url)
    logged = server.logs()
    assert "Authorization" in logged or "POST /v1/claims" in logged, "the server logged nothing at debug level"
    for token in tokens:
        secret = token.removeprefix("clm_")
        assert secret not in stored, "a token is stored in clear"
        assert secret not in logged, "a token reached the server's log"
        assert secret not in listed.stdout + listed.stderr
    assert hashlib.sha256(editor.encode()).hexdigest() in stored


@pytest.mark.slow
@pytest.mark.postgres
def test_a_token_revoked_with_the_cli_fails_at_once_in_every_worker_of_a_running_server(
    tmp_path: Path, start_server: StartServer
) -> None:
    url = new_database_url("postgres", tmp_path)
    try:
        server = start_server(url, "--workers", "2")
        token_id, token = make_token(url, "recorder")
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.base, timeout=30, headers=headers) as http:
            assert http.post("/v1/claims", json=story.registration()).status_code == 201
            revoked = server.claims("token", "revoke", token_id)
            assert revoked.returncode == 0, revoked.stderr
        # Many requests, each on a new connection, so both workers answer some of them.
        with httpx.Client(base_url=server.base, timeout=30, headers=headers,
                          limits=httpx.Limits(max_keepalive_connections=0)) as fresh:
            after = [fresh.post("/v1/claims", json=story.registration()) for _ in range(20)]
        assert {r.status_code for r in after} == {401}
        assert all('error="invalid_token"' in r.headers["WWW-Authenticate"] for r in after)
    finally:
        drop_schema(url)
