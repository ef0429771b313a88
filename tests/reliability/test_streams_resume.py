"""A stream reader survives its server's SIGKILL: `claims serve --workers 2` killed while a
reader follows /v1/events/stream and writes land; the reader reconnects to the restarted
server with Last-Event-ID, and what it received is every event of the log, once, in order."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from tests.api.test_streams import STREAM_ENV, parse_sse
from tests.conftest import new_database_url
from tests.reliability.conftest import StartServer
from tests.reliability.server import LedgerServer, make_token, wait_until


class Reader:
    """Follows the event stream, reconnecting with Last-Event-ID whenever it breaks."""

    def __init__(self, server: LedgerServer, token: str) -> None:
        self.server = server
        self.token = token
        self.ids: list[int] = []
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="stream-reader", daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            headers = {"Authorization": f"Bearer {self.token}"}
            if self.ids:
                headers["Last-Event-ID"] = str(self.ids[-1])
            try:
                with httpx.stream("GET", f"{self.server.base}/v1/events/stream", headers=headers,
                                  timeout=httpx.Timeout(2, read=3)) as response:
                    if response.status_code != 200:
                        time.sleep(0.1)
                        continue
                    self.connections += 1
                    for event in parse_sse(response.iter_lines()):
                        if event.id is not None:
                            self.ids.append(event.position)
                        if self.stop.is_set():
                            return
            except httpx.HTTPError:
                time.sleep(0.1)  # the server is down: try again, as a client's EventSource does


def write(server: LedgerServer, token: str, count: int, written: list[int]) -> None:
    """`count` registrations, going on through the server's death (failures are retried)."""
    with httpx.Client(base_url=server.base, timeout=3) as http:
        n = 0
        while n < count:
            try:
                response = http.post("/v1/claims", json={"statement": f"streamed claim {n}", "key": f"r-{n}"},
                                     headers={"Authorization": f"Bearer {token}"})
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            if response.status_code in (200, 201):
                written.append(int(response.json()["position"]))
                n += 1
            else:
                time.sleep(0.05)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_reader_resumes_after_the_server_is_killed_with_every_event_once(
    backend: str, start_server: StartServer, tmp_path: Any,
) -> None:
    url = new_database_url(backend, tmp_path)
    server = start_server(url, "--workers", "2", extra_env={**STREAM_ENV, "LEDGER_STREAM_HEARTBEAT_SECONDS": "0.5"})
    writer, auditor = make_token(url, "recorder")[1], make_token(url, "auditor")[1]
    reader = Reader(server, auditor)
    reader.thread.start()
    written: list[int] = []
    before = threading.Thread(target=write, args=(server, writer, 60, written))
    before.start()
    wait_until(lambda: len(written) >= 30, 30, "writes land")
    server.kill()  # mid-stream, mid-writes
    server.start()
    before.join(60)
    write(server, writer, 20, written)
    server.wait_projected()
    head = server.head()
    wait_until(lambda: bool(reader.ids) and reader.ids[-1] >= head, 30, f"the reader reached {head}")
    reader.stop.set()
    reader.thread.join(10)
    feed = httpx.get(f"{server.base}/v1/events", params={"limit": 10_000},
                     headers={"Authorization": f"Bearer {auditor}"}).json()["items"]
    positions = [item["position"] for item in feed]
    assert reader.ids == positions, "every event of the log, once each, in order"
    assert reader.connections >= 2, "the reader reconnected after the kill"
    if backend == "sqlite":  # SQLite's positions have no gaps
        assert positions == list(range(1, head + 1))
    assert set(written) <= set(positions)
