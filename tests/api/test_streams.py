"""Server-Sent Event streams (`GET /v1/events/stream`, `GET /v1/claims/stream`): format, resume,
filters, roles, bad input, bounds, and every position exactly once while writes land.

Bad input, roles and routing run in-process (with the fast lane on and off); what needs a
real server (back-pressure, heartbeats, the stream cap, concurrent writers) runs against one
`claims serve` per module and backend.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from api.routes.deps import ApiSettings
from tests.api import story
from tests.api.conftest import Api, open_api
from tests.conftest import drop_schema, new_database_url
from tests.reliability.server import LedgerServer, make_token, wait_until

Json = dict[str, Any]
HEARTBEAT = 0.3  # seconds, the servers' LEDGER_STREAM_HEARTBEAT_SECONDS here
BUFFER_EVENTS = 30
BUFFER_BYTES = 64 * 1024
MAX_STREAMS = 6
STREAM_ENV = {
    "LEDGER_STREAM_HEARTBEAT_SECONDS": str(HEARTBEAT), "LEDGER_STREAM_BUFFER_EVENTS": str(BUFFER_EVENTS),
    "LEDGER_STREAM_BUFFER_BYTES": str(BUFFER_BYTES),
    "LEDGER_STREAM_MAX_SUBSCRIBERS": str(MAX_STREAMS),
}


# -- Reading a stream -----------------------------------------------------------------------------


@dataclass
class Sse:
    """One dispatched SSE event, or a comment (`comment` set), or a `retry:` field alone."""

    id: str | None = None
    event: str = "message"
    data: str = ""
    retry: int | None = None
    comment: str | None = None

    @property
    def position(self) -> int:
        assert self.id is not None, self
        return int(self.id)

    def json(self) -> Json:
        value = orjson.loads(self.data)
        assert isinstance(value, dict)
        return value


def parse_sse(lines: Iterator[str]) -> Iterator[Sse]:
    """The events (and comments) of a text/event-stream, line by line, as the SSE spec reads them."""
    current = Sse()
    fields = False
    for line in lines:
        if line == "":
            if fields:
                yield current
            current, fields = Sse(), False
            continue
        if line.startswith(":"):
            yield Sse(comment=line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        fields = True
        if name == "id":
            current.id = value
        elif name == "event":
            current.event = value
        elif name == "data":
            current.data = f"{current.data}\n{value}" if current.data else value
        elif name == "retry":
            current.retry = int(value)


class Stream:
    """An open stream on a real server, read event by event with a deadline."""

    def __init__(self, http: httpx.Client, path: str, **kwargs: Any) -> None:
        self._context = http.stream("GET", path, **kwargs)
        self.response = self._context.__enter__()
        self._events = parse_sse(self.response.iter_lines()) if self.response.status_code == 200 else iter(())

    def next(self) -> Sse:
        """The next event or comment (the heartbeat keeps lines coming; a read times out after 5 s)."""
        event = next(self._events, None)
        assert event is not None, "the stream ended"
        return event

    def events(self, count: int, timeout: float = 10) -> list[Sse]:
        """The next `count` events, comments and retry fields skipped."""
        deadline = time.monotonic() + timeout
        found: list[Sse] = []
        while len(found) < count:
            assert time.monotonic() < deadline, f"got {len(found)} of {count} events in {timeout:g} s"
            event = self.next()
            if event.id is not None or event.event != "message":
                found.append(event)
        return found

    def until(self, position: int, timeout: float = 20) -> list[Sse]:
        """Every event up to and including the one with id `position`."""
        deadline = time.monotonic() + timeout
        found: list[Sse] = []
        while not found or found[-1].id is None or found[-1].position < position:
            assert time.monotonic() < deadline, f"no event {position} in {timeout:g} s (last {found[-1:]})"
            event = self.next()
            if event.id is not None:
                found.append(event)
        return found

    def rest(self) -> list[Sse]:
        """What is left until the response ends (it raises if the response is cut off)."""
        return list(self._events)

    def close(self) -> None:
        self._context.__exit__(None, None, None)

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- A real server --------------------------------------------------------------------------------


@dataclass
class Served:
    server: LedgerServer
    http: httpx.Client
    writer: str  # an editor's token
    auditor: str
    keys: Iterator[int] = field(default_factory=itertools.count)

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def stream(self, path: str, token: str | None = None, **kwargs: Any) -> Stream:
        headers = {**(self.auth(token) if token else {}), **kwargs.pop("headers", {})}
        return Stream(self.http, path, headers=headers, **kwargs)

    def register(self, **fields: Any) -> Json:
        n = next(self.keys)
        body = {"statement": f"claim {n} of the stream tests", "key": f"s-{n}", **fields}
        response = self.http.post("/v1/claims", json=body, headers=self.auth(self.writer))
        assert response.status_code == 201, response.text
        return dict(response.json())

    def act(self, kind: str, key: str, body: Json) -> Json:
        response = self.http.post(f"/v1/claims/{key}/{kind}", json=body, headers=self.auth(self.writer))
        assert response.status_code == 201, response.text
        return dict(response.json())

    def head(self) -> int:
        return self.server.head()

    def feed(self) -> list[Json]:
        response = self.http.get("/v1/events", params={"limit": 10_000}, headers=self.auth(self.auditor))
        assert response.status_code == 200, response.text
        return list(response.json()["items"])


def serve(url: str, workdir: Path, **env: str) -> Iterator[Served]:
    server = LedgerServer(url, workdir, extra_env={**STREAM_ENV, **env})
    server.start()
    http = httpx.Client(base_url=server.base, timeout=httpx.Timeout(10, read=5))
    try:
        yield Served(server, http, make_token(url, "editor")[1], make_token(url, "auditor")[1])
    finally:
        http.close()
        server.kill()
        drop_schema(url)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One SQLite server for the module's tests that need a real one on one backend."""
    workdir = tmp_path_factory.mktemp("streams")
    yield from serve(new_database_url("sqlite", workdir), workdir)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served_on(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("streams")
    yield from serve(new_database_url(str(request.param), workdir), workdir)


# -- Format, catch-up, resume ---------------------------------------------------------------------


@pytest.mark.real_server
def test_the_event_stream_catches_up_then_goes_live_with_the_feeds_items(served: Served) -> None:
    first = [served.register()["position"] for _ in range(3)]
    with served.stream("/v1/events/stream", served.auditor) as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert stream.response.headers["cache-control"] == "no-store"
        assert stream.next().retry == 2000  # the first thing sent
        caught_up = stream.until(first[-1])
        written = [served.register()["position"] for _ in range(3)]
        live = stream.until(written[-1])
    received = caught_up + live
    feed = {item["position"]: item for item in served.feed()}
    assert [e.position for e in received] == sorted(feed)[: len(received)]  # in order, no gap, once each
    for event in received:
        assert event.json() == feed[event.position]
        assert event.event == feed[event.position]["body"]["type"]


@pytest.mark.real_server
def test_a_stream_starts_after_after_or_after_last_event_id_which_wins(served: Served) -> None:
    while served.head() < 6:
        served.register()
    with served.stream("/v1/events/stream", served.auditor, params={"after": 3}) as stream:
        assert stream.events(1)[0].position == 4
    with served.stream("/v1/events/stream", served.auditor, params={"after": 1},
                       headers={"Last-Event-ID": "5"}) as stream:
        assert stream.events(1)[0].position == 6
    with served.stream("/v1/claims/stream", params={"after": 0}, headers={"Last-Event-ID": "4"}) as stream:
        assert stream.events(1)[0].position > 4


@pytest.mark.real_server
def test_heartbeat_comments_and_retry_keep_an_idle_stream_open(served: Served) -> None:
    with served.stream("/v1/claims/stream", headers={"Last-Event-ID": str(served.head())}) as stream:
        assert stream.next().retry == 2000
        started = time.monotonic()
        comment = stream.next()
        assert comment.comment == "keep-alive"
        assert time.monotonic() - started < HEARTBEAT * 5


# -- Claims' changes -------------------------------------------------------------------------------


@pytest.mark.real_server
def test_the_claim_stream_sends_each_change_as_the_view_a_get_answers(served: Served) -> None:
    start = served.head()
    with served.stream("/v1/claims/stream", params={"after": start}) as everything, \
            served.stream("/v1/claims/stream", params={"after": start, "status": "disputed"}) as disputed, \
            served.stream("/v1/claims/stream", params={"after": start, "party": "vladimir-putin"}) as putin, \
            served.stream("/v1/claims/stream", params={"after": start, "subject": "elton-john",
                                                       "claim": story.KEY}) as subject:
        registered = served.http.post("/v1/claims", json=story.registration(),
                                      headers=served.auth(served.writer)).json()["position"]
        seen = everything.until(registered)
        asserted = served.act("assertions", story.KEY, story.elton_asserts())["position"]
        seen += everything.until(asserted)
        denied = served.act("denials", story.KEY, story.peskov_denies())["position"]
        other = served.register()["position"]
        seen += everything.until(other)
        ids = [e.position for e in seen]
        assert ids == sorted(set(ids))
        story_views = [e for e in seen if e.json()["key"] == story.KEY]
        assert story_views[-1].position == denied
        now = served.http.get(f"/v1/claims/{story.KEY}").json()
        assert story_views[-1].json() == now and now["status"] == "disputed"
        assert {e.event for e in seen} == {"claim"}
        history = served.http.get(f"/v1/claims/{story.KEY}/history").json()["events"]
        for event in story_views:  # its id: the position of the last event the view reflects
            assert event.position == history[event.json()["version"] - 1]["position"]
        only_disputed = disputed.events(1)[0]  # the denial made it disputed; nothing before it matched
        assert (only_disputed.position, only_disputed.json()["status"]) == (denied, "disputed")
        assert [e.position for e in putin.events(1)] == [denied]  # Peskov denied for Putin
        assert [e.position for e in subject.events(3)] == [registered, asserted, denied]


@pytest.mark.real_server
def test_a_claim_filter_takes_a_key_or_an_id_and_a_claim_not_yet_registered(served: Served) -> None:
    start = served.head()
    with served.stream("/v1/events/stream", served.auditor, params={"after": start, "claim": "s-future"}) as by_key:
        served.register()
        future = served.http.post("/v1/claims", json={"statement": "a claim streamed before it existed",
                                                      "key": "s-future"}, headers=served.auth(served.writer)).json()
        event = by_key.events(1)[0]
        assert (event.position, event.json()["body"]["claim_id"]) == (future["position"], future["id"])
    with served.stream("/v1/claims/stream", params={"claim": future["id"]}) as by_id:
        assert by_id.events(1)[0].json()["id"] == future["id"]


# -- Bounds -----------------------------------------------------------------------------------------


def test_a_process_serves_a_bounded_number_of_streams_then_answers_503_with_retry_after(served: Served) -> None:
    open_streams: list[Stream] = []
    try:
        def one_more() -> bool:  # streams of earlier tests may take a moment to be let go
            stream = served.stream("/v1/claims/stream")
            if stream.response.status_code == 200:
                open_streams.append(stream)
                return False
            refused = stream.response
            stream.response.read()
            stream.close()
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "5"
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["type"] == "urn:claims-ledger:problem:too-many-streams"
            return True

        wait_until(one_more, 10, "a stream is refused")
        assert len(open_streams) <= MAX_STREAMS
        open_streams.pop().close()
        wait_until(lambda: not one_more(), 5, "a stream is served again once one closed")
    finally:
        for stream in open_streams:
            stream.close()


@pytest.mark.real_server
def test_a_client_that_stops_reading_is_dropped_then_resumes_with_no_gap_or_duplicate(served: Served) -> None:
    claims = [served.register()["id"] for _ in range(4)]
    start = served.head()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    sock.connect(("127.0.0.1", served.server.port))
    sock.sendall(f"GET /v1/events/stream?after={start} HTTP/1.1\r\nHost: x\r\n"
                 f"Authorization: Bearer {served.auditor}\r\n\r\n".encode())
    time.sleep(0.3)  # the stream opened and caught up; now the writes come, and the client reads nothing
    quote = "q" * 10_000  # ~4 MB of events in all: more than the kernel's socket buffers on loopback take

    def say(n: int) -> int:
        act = {"party": {"id": f"speaker-{n}", "name": f"Speaker {n}"}, "quote": quote}
        return int(served.act("assertions", claims[n % 4], act)["position"])

    with ThreadPoolExecutor(4) as pool:
        positions = list(pool.map(say, range(400)))
    time.sleep(1.0)  # the follower hands them on; the stream's queue fills past its bound
    received = read_raw_stream(sock, until=b"event: dropped")
    sock.close()
    events = [e for e in parse_sse(iter(received.decode().split("\n"))) if e.id is not None or e.event == "dropped"]
    assert events[-1].event == "dropped", "the stream ends with event: dropped"
    resume = events[-1].json()["resume_after"]
    before = [e.position for e in events[:-1]]
    assert before == list(range(start + 1, resume + 1)) and resume < max(positions)
    with served.stream("/v1/events/stream", served.auditor, headers={"Last-Event-ID": str(resume)}) as again:
        after = [e.position for e in again.until(max(positions))]
    assert before + after == list(range(start + 1, max(positions) + 1))


def read_raw_stream(sock: socket.socket, until: bytes, timeout: float = 20) -> bytes:
    """The body of a chunked answer read off `sock`, up to the end of the response or of the
    first event containing `until`."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    received = b""
    while not (until in received and received.endswith(b"\n\n\r\n")) and not received.endswith(b"\r\n0\r\n\r\n"):
        assert time.monotonic() < deadline, f"no {until!r} in {timeout:g} s"
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower(), head
    body = b""
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        body, rest = body + rest[: int(size, 16)], rest[int(size, 16) + 2:]
    return body


@pytest.mark.real_server
def test_sigterm_ends_open_streams_so_the_server_exits_promptly(tmp_path: Path) -> None:
    for own in serve(new_database_url("sqlite", tmp_path), tmp_path, LEDGER_STREAM_HEARTBEAT_SECONDS="30"):
        with own.stream("/v1/events/stream", own.auditor) as events, own.stream("/v1/claims/stream") as claims:
            assert events.next().retry == claims.next().retry == 2000
            assert own.server.process is not None
            stopping = time.monotonic()
            own.server.process.terminate()
            own.server.process.wait(15)
            assert time.monotonic() - stopping < 5, "the open streams held the shutdown"
            assert own.server.process.returncode == 0
            for stream in (events, claims):  # each ended as a whole response, not cut off
                assert stream.rest() == []


# -- Concurrency, both backends ----------------------------------------------------------------------


@pytest.mark.real_server
def test_every_position_comes_once_in_order_while_writes_land(served_on: Served) -> None:
    for _ in range(5):
        served_on.register()
    def write(n: int) -> None:
        made = served_on.register()
        served_on.act("assertions", made["id"], {"party": {"id": f"p-{n}", "name": f"P {n}"}})

    received: dict[str, list[Sse]] = {"events": [], "claims": []}
    done = threading.Event()
    target: list[int] = []

    def follow(kind: str, path: str, token: str | None) -> None:
        with served_on.stream(path, token, params={"after": 2}) as stream:
            while not (target and received[kind] and received[kind][-1].position >= target[0]):
                event = stream.next()
                if event.id is not None:
                    received[kind].append(event)
                assert not done.is_set() or target, "the writers failed"

    readers = [threading.Thread(target=follow, args=("events", "/v1/events/stream", served_on.auditor)),
               threading.Thread(target=follow, args=("claims", "/v1/claims/stream", None))]
    for reader in readers:
        reader.start()
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(write, range(60)))
    target.append(served_on.head())
    done.set()
    for reader in readers:
        reader.join(30)
        assert not reader.is_alive()
    feed = [item["position"] for item in served_on.feed()]
    assert [e.position for e in received["events"]] == [p for p in feed if p > 2]
    claim_ids = [e.position for e in received["claims"]]
    assert claim_ids == sorted(set(claim_ids))  # in order, once each
    last_views = {e.json()["id"]: e.json() for e in received["claims"]}
    for view in last_views.values():  # each claim's last event is its view now
        assert served_on.http.get(f"/v1/claims/{view['id']}").json() == view
    assert len(last_views) >= 60


# -- In-process: bad input, roles, routing (the fast lane on and off) -------------------------------


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory, fast_lane: bool) -> Iterator[Api]:
    yield from open_api(new_database_url("sqlite", tmp_path_factory.mktemp("streams")), fast_lane=fast_lane)


BAD_INPUT = [
    ({}, {"Last-Event-ID": "abc"}, "invalid-request", ["header", "Last-Event-ID"]),
    ({}, {"Last-Event-ID": "-1"}, "invalid-request", ["header", "Last-Event-ID"]),
    ({}, {"Last-Event-ID": "9007199254740992"}, "invalid-request", ["header", "Last-Event-ID"]),
    ({"after": "-1"}, {}, "invalid-request", ["query", "after"]),
    ({"stauts": "disputed"}, {}, "invalid-request", ["query", "stauts"]),
    ({"status": "sure"}, {}, "invalid-request", ["query", "status"]),
    ({"party": "Not A Slug"}, {}, "invalid-request", ["query", "party"]),
    ({"claim": "not a key!"}, {}, "invalid-request", ["query", "claim"]),
    ({"after": "99"}, {}, "position-beyond-log", None),
    ({}, {"Last-Event-ID": "99"}, "position-beyond-log", None),
]


@pytest.mark.parametrize(("params", "headers", "code", "loc"), BAD_INPUT)
def test_bad_input_is_a_problem_before_the_stream_starts(
    in_process: Api, params: dict[str, str], headers: dict[str, str], code: str, loc: list[str] | None,
) -> None:
    in_process.register(key="bad-input-claim", statement="a claim for the bad-input tests")
    head = in_process.services.log_head()
    for path, role in (("/v1/claims/stream", None), ("/v1/events/stream", "auditor")):
        response = in_process.get(path, role=role, headers=headers, **params)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"] == f"urn:claims-ledger:problem:{code}"
        if loc is not None:
            assert [e["loc"] for e in problem["errors"]] == [loc]
        assert problem["detail"]
    assert in_process.services.log_head() == head  # nothing written


def test_the_event_stream_is_for_auditors(in_process: Api) -> None:
    assert in_process.get("/v1/events/stream").status_code == 401
    refused = in_process.get("/v1/events/stream", role="editor")
    assert refused.status_code == 403 and refused.headers["content-type"] == "application/problem+json"
    with in_process.client.stream("GET", "/v1/events/stream", headers=in_process.auth("auditor")) as response:
        assert response.status_code == 200


def test_claims_stream_is_the_stream_even_beside_a_claim_keyed_stream(in_process: Api) -> None:
    made = in_process.register(key="stream", statement="a claim whose key is the stream's path")
    with in_process.client.stream("GET", "/v1/claims/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert next(response.iter_lines()) == "retry: 2000"
    assert in_process.read(f"/v1/claims/{made['id']}", made["position"]).json()["key"] == "stream"


def test_the_claim_stream_keeps_the_read_policy(tmp_path: Path, fast_lane: bool) -> None:
    url = new_database_url("sqlite", tmp_path)
    for api in open_api(url, fast_lane=fast_lane, settings=ApiSettings(read_tokens_required=True)):
        refused = api.get("/v1/claims/stream")
        assert refused.status_code == 401 and refused.json()["status"] == 401
        with api.client.stream("GET", "/v1/claims/stream", headers=api.auth("reader")) as response:
            assert response.status_code == 200
