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
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from audit.remote import audit_ledger
from tests.audit.proxy import Rewrite, TamperingProxy
from tests.audit.test_audit import Server, seed, start_server
from tests.conftest import new_database_url

FORGED_QUOTE = b'"quote":"I never spoke to President Putin",'


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, TamperingProxy]]:
    workdir = tmp_path_factory.mktemp("audit-ijson")
    url = new_database_url("sqlite", workdir)
    seed(url)
    server = start_server(url, workdir)
    proxy = TamperingProxy(server.base)
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


def audit_through(served: tuple[Server, TamperingProxy], rewrite: Rewrite, kept: Path) -> list[str]:
    server, proxy = served
    proxy.rewrite = rewrite
    try:
        report = audit_ledger(proxy.base, kept, token=server.token)
    finally:
        proxy.rewrite = lambda path, body: body
    assert not report.ok and not report.saved and not kept.exists()
    return report.problems


def test_a_feed_item_with_a_member_named_twice_is_refused_naming_it_though_its_hash_holds(
    served: tuple[Server, TamperingProxy], tmp_path: Path,
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
    served: tuple[Server, TamperingProxy], tmp_path: Path,
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
    served: tuple[Server, TamperingProxy], tmp_path: Path, position: bytes, found: str,
) -> None:
    def forge(line: bytes) -> bytes:
        return line.replace(b'"position":1,', b'"position":' + position + b",", 1)

    problems = audit_through(served, on_feed_line(1, forge), tmp_path / "checkpoint.json")
    assert len(problems) == 1 and found in problems[0], problems
