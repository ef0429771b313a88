"""`stream_events` and `watch_claims` (sync and async) against a real `claims serve` that is
killed and started again mid-stream: the generators reconnect from the last event taken,
with no event missed and none repeated."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from client import AsyncLedgerClient, Backoff, Forbidden, InvalidRequest, LedgerClient, StreamItem
from client.core import StreamCursor
from fixtures.generator import generate
from fixtures.replay import import_fixture
from store.event_store import open_ledger
from store.settings import Database
from tests.api import story
from tests.client.conftest import Served, seed
from tests.conftest import new_database_url
from tests.reliability.server import LedgerServer, make_token

FAST = Backoff(initial=0.05, cap=0.5)


def act(served: Served, act_id: str) -> int:
    """A new assertion on the seed claim, by raw HTTP; its log position."""
    response = served.raw("POST", f"/v1/claims/{story.KEY}/assertions", "recorder",
                          json=story.elton_asserts(act_id=act_id))
    assert response.status_code == 201, response.text
    position: int = response.json()["position"]
    return position


def feed(served: Served) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = served.raw_json("/v1/events", limit=1000)["items"]
    return items


def restart(served: Served) -> None:
    served.server.kill()
    served.server.start()


def take(items: Iterator[StreamItem], n: int) -> list[StreamItem]:
    return [next(items) for _ in range(n)]


def test_stream_events_resumes_across_a_server_restart_without_gap_or_duplicate(served: Served) -> None:
    with served.client("auditor", backoff=FAST) as client:
        stream = client.stream_events(after=0)
        first = take(stream, len(feed(served)))
        restart(served)  # the stream's connection dies with it
        written = [act(served, "stream-restart-1"), act(served, "stream-restart-2")]
        later = take(stream, 2)
        stream.close()
    items = first + later
    assert [i.data for i in items] == feed(served)
    assert [i.position for i in later] == written
    assert all(i.type == i.data["body"]["type"] for i in items)


def test_watch_claims_follows_one_claim_across_a_restart(served: Served) -> None:
    with served.client("reader", backoff=FAST) as client:
        changes = client.watch_claims(claim=story.KEY, after=0)
        caught_up = next(changes)
        assert caught_up.type == "claim" and caught_up.data == served.raw_json(f"/v1/claims/{story.KEY}")
        restart(served)
        position = act(served, "watch-restart")
        change = next(changes)
        changes.close()
    assert change.position == position > caught_up.position
    assert change.data["version"] == caught_up.data["version"] + 1
    assert change.data == served.raw_json(f"/v1/claims/{story.KEY}")


def test_the_async_streams_resume_across_a_restart(served: Served) -> None:
    async def run() -> tuple[list[StreamItem], StreamItem, list[int]]:
        async with AsyncLedgerClient(served.base, served.tokens["auditor"], backoff=FAST) as client:
            events = client.stream_events(after=feed(served)[-2]["position"])
            got = [await anext(events)]
            restart(served)
            written = [act(served, "async-restart-1"), act(served, "async-restart-2")]
            got += [await anext(events), await anext(events)]
            watch = client.watch_claims(status="disputed", after=written[0])
            change = await anext(watch)
            await events.aclose()
            await watch.aclose()
            return got, change, written

    got, change, written = asyncio.run(run())
    assert [i.data for i in got] == feed(served)[-3:]
    assert [i.position for i in got[1:]] == written
    assert change.position == written[1] and change.data == served.raw_json(f"/v1/claims/{story.KEY}")


def test_a_refused_stream_raises_at_once(served: Served) -> None:
    with served.client("recorder", backoff=FAST) as client, pytest.raises(Forbidden):
        next(client.stream_events())
    with served.client("auditor", backoff=FAST) as client, pytest.raises(InvalidRequest) as raised:
        next(client.stream_events(after=10**9))
    assert raised.value.code == "position-beyond-log"
    with LedgerClient(served.base, backoff=FAST) as client, pytest.raises(InvalidRequest):
        next(client.watch_claims(party="Not A Slug"))


def test_the_cursor_skips_repeats_and_comes_back_at_once_after_dropped() -> None:
    cursor = StreamCursor("/v1/events/stream", {}, None, FAST)
    assert "Last-Event-ID" not in cursor.call().headers and cursor.call().params == {}
    assert cursor.take("message", "", "", 2000) is None and cursor.retry_ms == 2000  # retry: alone
    first = cursor.take("Asserted", '{"position": 5}', "5", None)
    assert first == StreamItem(5, "Asserted", {"position": 5})
    assert cursor.take("Asserted", '{"position": 5}', "5", None) is None  # a repeat after reconnecting
    assert cursor.take("dropped", '{"resume_after": 5}', "5", None) is None and cursor.dropped
    assert cursor.reconnect_after(None) == 0.0 and not cursor.dropped
    call = cursor.call()
    assert call.headers["Last-Event-ID"] == "5" and call.params == {"after": 5}
    waits = [cursor.reconnect_after(None) for _ in range(6)]
    assert all(FAST.cap / 2 <= w <= FAST.cap for w in waits)  # from the server's retry (2 s), capped


def burst(n: int, claims: int) -> list[bytes]:
    """A generated fixture's lines for `claims` claims, their keys made unique to burst `n`."""
    lines = []
    for line in generate(claims, n):
        for name in ("key", "claim"):
            if name in line:
                line[name] = f"b{n}-{line[name]}"
        lines.append(orjson.dumps(line))
    return lines


def stream_drops(served: Served) -> float:
    metrics = served.raw("GET", "/metrics", None).text
    found = [line for line in metrics.splitlines() if line.startswith('claims_stream_drops_total{stream="events"} ')]
    assert len(found) == 1, metrics[:2000]
    return float(found[0].split()[-1])


def test_a_reader_too_slow_for_its_buffer_is_dropped_and_resumes_with_no_gap_or_repeat(tmp_path: Path) -> None:
    """A real server: while the client reads nothing, events land in batches its stream takes
    live, until the sockets between are full and its buffer overflows. The server ends the
    stream with `event: dropped` (counted in /metrics) and the client comes back at once from
    the last event it took: what it yields is the feed, exactly."""
    url = new_database_url("sqlite", tmp_path)
    server = LedgerServer(url, tmp_path)
    served = Served(server, {"auditor": make_token(url, "auditor")[1], "recorder": make_token(url, "recorder")[1]})
    server.start()
    try:
        seed(served)
        with served.client("auditor", backoff=FAST) as client:
            stream = client.stream_events(after=0)
            first = take(stream, 3)  # the seed story; the stream is live from here
            ledger = open_ledger(Database.from_url(url))
            try:
                n = 0
                while stream_drops(served) == 0:  # batches of about 500 events, under the 1,000 a stream keeps
                    assert n < 400, "400 bursts and the stream was never dropped"
                    import_fixture(ledger, burst(n, 50))
                    n += 1
                    time.sleep(0.05)  # the follower hands each its own batch
                head = ledger.max_position()
            finally:
                ledger.close()
            items = first + take(stream, head - 3)
            stream.close()
            logged = list(client.iter_events())
        assert [i.position for i in items] == list(range(1, head + 1))
        assert [i.data for i in items] == logged
    finally:
        server.kill()
