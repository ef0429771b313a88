"""`claims audit` reads a server's answers as I-JSON (RFC 7493), with the ledger's one parser.

A member named twice lets one text say two things: a reader that keeps the last member (as
orjson, the standard library and most parsers do) reads what the ledger signed, and every
hash, chain and signature holds; a reader that keeps the first reads something else. The
auditor refuses such an answer, naming the member, and keeps no checkpoint.

The server is real (`claims serve` on the seeded ledger of tests/audit/test_audit.py); a
proxy in front of it rewrites its answers in flight.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from audit.remote import audit_ledger
from tests.audit.test_audit import Server, seed, start_server
from tests.conftest import new_database_url

Rewrite = Callable[[str, bytes], bytes]  # (path, the server's answer) -> what the proxy serves
FORGED_QUOTE = b'"quote":"I never spoke to President Putin",'


class RewritingProxy:
    """Passes GETs on to a ledger and serves its answers as `rewrite` changes them."""

    def __init__(self, upstream: str) -> None:
        self.rewrite: Rewrite = lambda path, body: body
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # the name http.server calls
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "accept")}
                answer = httpx.get(upstream + self.path, headers=headers, timeout=30)
                body = proxy.rewrite(urlsplit(self.path).path, answer.content)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, RewritingProxy]]:
    workdir = tmp_path_factory.mktemp("audit-ijson")
    url = new_database_url("sqlite", workdir)
    seed(url)
    server = start_server(url, workdir)
    proxy = RewritingProxy(server.base)
    try:
        server.wait_projected()
        yield server, proxy
    finally:
        proxy.close()
        server.stop()


def on_feed_line(position: int, change: Callable[[bytes], bytes]) -> Rewrite:
    """Change the NDJSON feed's line of the item at `position`."""

    def rewrite(path: str, body: bytes) -> bytes:
        if path != "/v1/events":
            return body
        lines = body.split(b"\n")
        return b"\n".join(change(line) if line and json.loads(line)["position"] == position else line
                          for line in lines)

    return rewrite


def audit_through(served: tuple[Server, RewritingProxy], rewrite: Rewrite, kept: Path) -> list[str]:
    server, proxy = served
    proxy.rewrite = rewrite
    try:
        report = audit_ledger(proxy.base, kept, token=server.token)
    finally:
        proxy.rewrite = lambda path, body: body
    assert not report.ok and not report.saved and not kept.exists()
    return report.problems


def test_a_feed_item_with_a_member_named_twice_is_refused_naming_it_though_its_hash_holds(
    served: tuple[Server, RewritingProxy], tmp_path: Path,
) -> None:
    server, proxy = served
    assert audit_ledger(proxy.base, tmp_path / "honest.json", token=server.token).ok  # the proxy alone changes nothing

    def forge(line: bytes) -> bytes:  # Elton John's assertion: a first quote before the recorded one
        return line.replace(b'"quote":', FORGED_QUOTE + b'"quote":', 1)

    original = httpx.get(server.base + "/v1/events", params={"after": 1, "limit": 1},
                         headers={"Authorization": f"Bearer {server.token}"}).json()["items"][0]
    forged = forge(json.dumps(original, separators=(",", ":"), ensure_ascii=False).encode())
    assert orjson.loads(forged) == original  # a last-wins reader sees the signed item, hash and all
    first_wins = json.loads(forged, object_pairs_hook=lambda members: dict(reversed(members)))
    assert first_wins["body"]["data"]["quote"] == "I never spoke to President Putin"

    problems = audit_through(served, on_feed_line(2, forge), tmp_path / "checkpoint.json")
    assert problems == [
        "the feed's item after position 1 is not I-JSON, so its readers may differ on what it says: member "
        "body.data.quote appears twice; I-JSON (RFC 7493) forbids duplicate member names, as readers differ on "
        "which one counts: send each member once"
    ]


def test_a_checkpoint_with_a_member_named_twice_is_refused_though_its_signature_holds(
    served: tuple[Server, RewritingProxy], tmp_path: Path,
) -> None:
    def forge(path: str, body: bytes) -> bytes:
        return body.replace(b"{", b'{"tree_size":2,', 1) if path == "/v1/audit/checkpoint" else body

    problems = audit_through(served, forge, tmp_path / "checkpoint.json")
    assert problems == [
        "GET /v1/audit/checkpoint did not answer I-JSON: member tree_size appears twice; I-JSON (RFC 7493) forbids "
        "duplicate member names, as readers differ on which one counts: send each member once"
    ]


@pytest.mark.parametrize(("position", "found"), [
    (b"9007199254740993", "is not I-JSON, so its readers may differ on what it says: the number at position "
                          "(9007199254740993) has more digits than a double holds"),
    (b"9007199254740992", "position must be an integer from 1 to 9007199254740991"),
])
def test_a_feed_position_past_2_to_the_53_minus_1_is_refused(
    served: tuple[Server, RewritingProxy], tmp_path: Path, position: bytes, found: str,
) -> None:
    def forge(line: bytes) -> bytes:
        return line.replace(b'"position":1,', b'"position":' + position + b",", 1)

    problems = audit_through(served, on_feed_line(1, forge), tmp_path / "checkpoint.json")
    assert len(problems) == 1 and found in problems[0], problems
