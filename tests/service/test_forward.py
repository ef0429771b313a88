"""`claims serve --workers N`: the workers' writes go to worker 1's group writer (service/forward.py).

Host and link run here on a real Unix socket, with real writers on a real store; the
last test runs `claims serve --workers 2` and watches writes arrive through both workers.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import re
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from domain import Ledger
from domain import errors as domain_errors
from domain.commands import RecordAct, RegisterClaim
from domain.errors import (
    ActIdConflict,
    InvalidInput,
    LedgerError,
    StoreUnavailable,
    UnknownAct,
    VersionMismatch,
)
from service.forward import WriterHost, WriterLink
from service.writer import Gate, GroupWriter
from store import tokens as store_tokens
from store.db import ReadStore
from store.event_store import open_ledger
from store.settings import Database
from store.tokens import Credential, InvalidToken, Role, TokenStore, token_hash
from tests.api import story
from tests.conftest import drop_schema, new_database_url


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    url = new_database_url(request.param, tmp_path)
    ledger = open_ledger(Database.from_url(url))
    try:
        yield ledger
    finally:
        ledger.close()
        drop_schema(url)


@pytest.fixture
def socket_path() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="claims-writer-test-") as directory:  # short: sockets' path limit
        yield os.path.join(directory, "writer.sock")


@asynccontextmanager
async def host_and_link(ledger: Ledger, path: str, *, start_writer: bool = True, gate: Gate | None = None) -> AsyncIterator[
    tuple[WriterHost, WriterLink, GroupWriter, GroupWriter]
]:
    host_writer, link_writer = GroupWriter(ledger, gate=gate), GroupWriter(ledger, gate=gate)
    if start_writer:
        host_writer.start()
    link_writer.start()
    host = WriterHost(host_writer, path)
    await host.start()
    link = WriterLink(path, link_writer)
    try:
        yield host, link, host_writer, link_writer
    finally:
        await link.close()
        await asyncio.to_thread(host_writer.stop)
        await asyncio.to_thread(link_writer.stop)
        await host.close()


def act(op: str, fields: dict[str, object], expected_version: int | None = None) -> RecordAct:
    return RecordAct.build(op, story.KEY, fields, expected_version=expected_version)


def test_forwarded_writes_are_committed_by_the_host_in_order_with_their_own_outcomes(
    ledger: Ledger, socket_path: str
) -> None:
    async def scenario() -> None:
        async with host_and_link(ledger, socket_path) as (host, link, host_writer, link_writer):
            registered = await link.execute_async(RegisterClaim.build(story.registration()), 10)
            assert registered.created and registered.version == 1 and registered.position
            outcomes = await asyncio.gather(*(
                link.execute_async(act("assert", story.elton_asserts(act_id=f"a{i}")), 10) for i in range(20)
            ))
            assert sorted(o.version for o in outcomes) == list(range(2, 22))  # type: ignore[type-var]
            # Sent together and answered together (frames share writes both ways): each
            # request still gets its own outcome.
            assert [o.act_id for o in outcomes] == [f"a{i}" for i in range(20)]
            assert len({o.position for o in outcomes}) == 20
            assert link.forwarded == 21 and host.forwarded == 21
            assert link_writer.batches == 0  # the worker's own writer wrote nothing
            assert host_writer.batches >= 1

    asyncio.run(scenario())
    claim = ledger.get_claim(story.KEY)
    assert claim.version == 21
    assert all(claim.act(f"a{i}") is not None for i in range(20))


def test_a_refused_forwarded_write_raises_the_same_error_and_fails_alone(ledger: Ledger, socket_path: str) -> None:
    async def scenario() -> None:
        async with host_and_link(ledger, socket_path) as (_, link, _host_writer, _link_writer):
            await link.execute_async(RegisterClaim.build(story.registration()), 10)
            results = await asyncio.gather(
                link.execute_async(act("assert", story.elton_asserts(act_id="kept")), 10),
                link.execute_async(act("retract", {"retracts": "no-such-act", "party": story.ELTON}), 10),
                link.execute_async(act("assert", story.elton_asserts(act_id="stale"), expected_version=1), 10),
                return_exceptions=True,
            )
            kept, unknown, stale = results
            assert not isinstance(kept, BaseException) and kept.created
            assert isinstance(unknown, UnknownAct) and "no-such-act" in str(unknown)
            assert isinstance(stale, VersionMismatch) and stale.expected == 1 and stale.actual >= 2

    asyncio.run(scenario())
    assert ledger.get_claim(story.KEY).act("kept") is not None


def test_a_forwarded_write_is_refused_by_the_hosts_token_check_and_fails_alone(
    ledger: Ledger, socket_path: str,
) -> None:
    def gate(credentials: Sequence[Credential]) -> list[InvalidToken | None]:
        return [None if c.digest == token_hash("clm_good") else InvalidToken("unknown token") for c in credentials]

    async def scenario() -> None:
        async with host_and_link(ledger, socket_path, gate=gate) as (host, link, _host_writer, _link_writer):
            good, bad = Credential(token_hash("clm_good"), Role.RECORDER), Credential(token_hash("clm_bad"), Role.RECORDER)
            await link.execute_async(RegisterClaim.build(story.registration()), 10, good)
            kept, refused = await asyncio.gather(
                link.execute_async(act("assert", story.elton_asserts(act_id="kept")), 10, good),
                link.execute_async(act("assert", story.elton_asserts(act_id="refused")), 10, bad),
                return_exceptions=True,
            )
            assert not isinstance(kept, BaseException) and kept.created
            assert isinstance(refused, InvalidToken) and str(refused) == "unknown token"
            assert host.forwarded == 3

    asyncio.run(scenario())
    claim = ledger.get_claim(story.KEY)
    assert claim.act("kept") is not None and claim.act("refused") is None


def test_a_worker_that_cannot_reach_the_host_writes_through_its_own_writer(ledger: Ledger, socket_path: str) -> None:
    local = GroupWriter(ledger)

    async def scenario() -> None:
        local.start()
        link = WriterLink(socket_path, local)  # nothing listens there
        try:
            outcome = await link.execute_async(RegisterClaim.build(story.registration()), 10)
            assert outcome.created and link.forwarded == 0
        finally:
            await link.close()
            await asyncio.to_thread(local.stop)

    asyncio.run(scenario())
    # Counted once the writer thread has ended: it answers a batch before it counts it.
    assert local.batches == 1
    assert ledger.get_claim(story.KEY).version == 1


def test_writes_in_flight_when_the_host_goes_away_are_answered_as_maybe_recorded(
    ledger: Ledger, socket_path: str
) -> None:
    async def scenario() -> None:
        # The host's writer is not running: the forwarded command waits in its queue.
        async with host_and_link(ledger, socket_path, start_writer=False) as (host, link, _, _):
            pending = asyncio.create_task(link.execute_async(RegisterClaim.build(story.registration()), 10))
            while host.forwarded == 0:
                await asyncio.sleep(0.01)
            await host.close()  # the host process goes away, its connections with it
            with pytest.raises(StoreUnavailable, match="may or may not be recorded"):
                await pending

    asyncio.run(scenario())


def test_a_link_whose_host_restarted_reconnects(ledger: Ledger, socket_path: str) -> None:
    async def scenario() -> None:
        async with host_and_link(ledger, socket_path) as (host, link, host_writer, _):
            await link.execute_async(RegisterClaim.build(story.registration()), 10)
            await host.close()
            os.unlink(socket_path)
            while link._stream is not None:  # the link notices the host is gone
                await asyncio.sleep(0.01)
            # Meanwhile the worker writes through its own writer...
            during = await link.execute_async(act("assert", story.elton_asserts(act_id="during")), 10)
            assert during.created
            again = WriterHost(host_writer, socket_path)
            await again.start()
            try:
                await asyncio.sleep(0.6)  # past RECONNECT_SECONDS
                after = await link.execute_async(act("assert", story.elton_asserts(act_id="after")), 10)
                assert after.created and again.forwarded == 1
            finally:
                await again.close()

    asyncio.run(scenario())
    claim = ledger.get_claim(story.KEY)
    assert claim.act("during") is not None and claim.act("after") is not None


def all_errors() -> list[LedgerError]:
    made: list[LedgerError] = []
    for value in [*vars(domain_errors).values(), *vars(store_tokens).values()]:
        if isinstance(value, type) and issubclass(value, LedgerError):
            if value is VersionMismatch:
                made.append(VersionMismatch(3, 5))
            elif issubclass(value, InvalidInput):
                made.append(value("statement must not be empty", "statement"))
            else:
                made.append(value(f"a {value.__name__} for the test"))
    return made


@pytest.mark.parametrize("error", all_errors(), ids=lambda e: type(e).__name__)
def test_every_domain_error_and_token_refusal_crosses_processes_whole(error: LedgerError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
    assert vars(copy) == vars(error)  # field, expected, actual


def test_an_act_id_conflict_forwarded_is_the_same_conflict(ledger: Ledger, socket_path: str) -> None:
    async def scenario() -> None:
        async with host_and_link(ledger, socket_path) as (_, link, _, _):
            await link.execute_async(RegisterClaim.build(story.registration()), 10)
            await link.execute_async(act("assert", story.elton_asserts(act_id="x")), 10)
            with pytest.raises(ActIdConflict):
                await link.execute_async(act("deny", story.peskov_denies(act_id="x")), 10)

    asyncio.run(scenario())


@pytest.mark.slow
@pytest.mark.postgres
def test_claims_serve_workers_send_their_writes_to_one_writer(tmp_path: Path) -> None:
    from tests.cli.test_serve import serving

    url = new_database_url("postgres", tmp_path)
    try:
        with serving(url, "--workers", "2") as (_, base, env):
            import subprocess

            from tests.cli.test_serve import CLAIMS

            made = subprocess.run([*CLAIMS, "token", "create", "--role", "recorder"], env=env,
                                  capture_output=True, text=True, timeout=60, check=True)
            headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
            assert httpx.post(f"{base}/v1/claims", json=story.registration(), headers=headers,
                              timeout=10).status_code == 201
            answers: list[tuple[int, int]] = []

            def client(n: int) -> None:
                for i in range(15):  # a connection per request: the kernel deals them to both workers
                    answer = httpx.post(f"{base}/v1/claims/{story.KEY}/assertions", headers=headers, timeout=20,
                                        json=story.elton_asserts(act_id=f"c{n}-{i}"))
                    answers.append((answer.status_code, answer.json().get("position", 0)))

            threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert [status for status, _ in answers] == [201] * 120
            assert len({position for _, position in answers}) == 120
            metrics = httpx.get(f"{base}/metrics", timeout=5).text
            forwarded = re.search(r"^claims_writes_forwarded_total ([0-9.e+]+)$", metrics, re.M)
            assert forwarded is not None and float(forwarded.group(1)) > 0, metrics[:2000]
            newest = max(position for _, position in answers)
            claim = httpx.get(f"{base}/v1/claims/{story.KEY}", params={"min_position": newest}, timeout=10).json()
            assert claim["version"] == 121 and claim["counts"]["assertions"] == 120

            # Revoked while both workers run: refused at once by the host's writer, whichever
            # worker the request reached, and nothing is written.
            store = ReadStore(Database.from_url(url))
            try:
                tokens = TokenStore(store)
                principal = tokens.authenticate(made.stdout.strip())
                assert principal is not None
                tokens.revoke(principal.token_id)
            finally:
                store.close()
            refused = [
                httpx.post(f"{base}/v1/claims/{story.KEY}/assertions", headers=headers, timeout=20,
                           json=story.elton_asserts(act_id=f"after-revoke-{i}")).status_code
                for i in range(16)
            ]
            assert refused == [401] * 16
            reader = open_ledger(Database.from_url(url))
            try:
                assert reader.get_claim(story.KEY).version == 121  # in the store itself, not a projection
            finally:
                reader.close()
    finally:
        drop_schema(url)


def test_every_write_of_a_worker_goes_to_the_host_over_http(database_url: str, socket_path: str, fast_lane: bool) -> None:
    """Two apps on one store as two `--workers` processes: every write sent to the second,
    with or without Idempotency-Key, If-Match or as a registration, is made by the first's writer."""
    from contextlib import contextmanager

    from tests.api.conftest import open_api

    serve = contextmanager(open_api)
    with serve(database_url, fast_lane=fast_lane, writer_socket=socket_path, hosts_writer=True) as host_api, \
            serve(database_url, fast_lane=fast_lane, run_projections=False, writer_socket=socket_path) as worker:
        host = host_api.services.host
        assert host is not None and worker.services.link is not None
        worker.tokens = host_api.tokens  # one token table
        registered = worker.post("/v1/claims", story.registration(), headers={"Idempotency-Key": "reg-1"})
        assert registered.status_code == 201, registered.text
        asserted = worker.post(f"/v1/claims/{story.KEY}/assertions", story.elton_asserts())
        assert asserted.status_code == 201, asserted.text
        keyed = worker.post(f"/v1/claims/{story.KEY}/denials", story.peskov_denies(),
                            headers={"Idempotency-Key": "deny-1"})
        assert keyed.status_code == 201, keyed.text
        matched = worker.post(f"/v1/claims/{story.KEY}/assertions", story.elton_asserts(act_id="again"),
                              headers={"If-Match": '"3"'})
        assert matched.status_code == 201, matched.text
        stale = worker.post(f"/v1/claims/{story.KEY}/assertions", story.elton_asserts(act_id="stale"),
                            headers={"If-Match": '"1"'})
        assert stale.status_code == 412, stale.text
        replay = worker.post(f"/v1/claims/{story.KEY}/denials", story.peskov_denies(),
                             headers={"Idempotency-Key": "deny-1"})
        assert replay.status_code == 201 and replay.headers.get("Idempotent-Replayed") == "true"
        assert replay.json() == keyed.json()
        assert host.forwarded == 5  # the replay was answered from the first answer, unwritten
        assert worker.services.writer.batches == 0
        assert [registered.json()["version"], asserted.json()["version"], keyed.json()["version"],
                matched.json()["version"]] == [1, 2, 3, 4]
