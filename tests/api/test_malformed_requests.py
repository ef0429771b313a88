"""Requests the HTTP server answers for itself, before the app sees them (docs/api.md, "Requests
refused before the app"): each kind that page lists, sent as raw bytes to a real `claims serve`,
gets the answer the page gives; the server goes on answering; a refused write records nothing.

The refused writes carry a valid token and a valid body, so that a parser that let one through
would record it and the head of the log would show it.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.api import story
from tests.cli.test_serve import CLAIMS, serving

pytestmark = pytest.mark.slow

# uvicorn's default keep-alive timeout, which cli/serve.py keeps: it closes a connection idle
# between two requests. The held-open test waits longer than this, to show it does not apply
# to a request still arriving.
KEEP_ALIVE_SECONDS = 5.0
# Long enough for a loaded machine; every answer below comes within milliseconds.
ANSWER_SECONDS = 10.0
# How long a connection may take to close after its answer: less than the keep-alive timeout,
# so that a connection closed by that timeout, not by the answer, counts as left open.
CLOSE_SECONDS = KEEP_ALIVE_SECONDS - 1

PARSER_BODY = b"Invalid HTTP request received."
PARSER_TYPE = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Answer:
    """What came back on one connection before the server closed it: nothing at all, or one
    HTTP answer (status line, headers with lower-case names, body)."""

    raw: bytes

    @property
    def status_line(self) -> bytes:
        return self.raw.split(b"\r\n", 1)[0]

    @property
    def headers(self) -> dict[str, str]:
        head = self.raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
        return {name.strip().lower().decode("latin-1"): value.strip().decode("latin-1")
                for name, _, value in (line.partition(b":") for line in head)}

    @property
    def body(self) -> bytes:
        return self.raw.split(b"\r\n\r\n", 1)[1]


@dataclass
class Server:
    process: subprocess.Popen[str]
    base: str
    port: int
    token: bytes

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=ANSWER_SECONDS)

    def exchange(self, data: bytes, *, then_half_close: bool = False) -> Answer:
        """Send `data` on a new connection and read until the server closes it; with
        `then_half_close` the client says it will send nothing more (shutdown SHUT_WR)."""
        with self.connect() as sock:
            sock.settimeout(CLOSE_SECONDS)
            try:
                sock.sendall(data)
                if then_half_close:
                    sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered and closed before taking all of it: read the answer
            received = b""
            while True:
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    pytest.fail(f"the server left the connection open; it sent {received[:200]!r}")
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                received += chunk
        return Answer(received)

    def head(self) -> int:
        """The head of the log, asked on a fresh connection: the answer also shows that the
        server still serves a well-formed request with JSON."""
        response = httpx.get(f"{self.base}/healthz", timeout=ANSWER_SECONDS)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        return int(response.json()["projections"]["head"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    url = f"sqlite:///{tmp_path_factory.mktemp('malformed') / 'ledger.db'}"
    with serving(url) as (process, base, env):
        made = subprocess.run([*CLAIMS, "token", "create", "--role", "recorder"], env=env, capture_output=True,
                              text=True, timeout=60, check=True)
        yield Server(process, base, int(base.rsplit(":", 1)[1]), made.stdout.strip().encode())


WRITE_LINE = b"POST /v1/claims HTTP/1.1"


def registration(key: str) -> bytes:
    return json.dumps(story.registration(statement=f"A malformed request, {key}, was sent.", key=key)).encode()


def write(token: bytes, key: str, *, line: bytes = WRITE_LINE, fields: bytes = b"",
          framing: bytes | None = None, body: bytes | None = None) -> bytes:
    """A registration the ledger would record: the request line, Host, the token, the JSON
    content type, `fields`, then the body framed by `framing` (by default its Content-Length)."""
    content = registration(key) if body is None else body
    framing = b"Content-Length: %d\r\n" % len(content) if framing is None else framing
    return (line + b"\r\nHost: ledger\r\nAuthorization: Bearer " + token
            + b"\r\nContent-Type: application/json\r\n" + fields + framing + b"\r\n" + content)


def chunked(key: str, *, size: bytes | None = None, after_data: bytes = b"\r\n", last: bytes = b"0\r\n\r\n") -> bytes:
    """The registration as one chunk and the last chunk, with one of their parts replaced."""
    content = registration(key)
    return (b"%x" % len(content) if size is None else size) + b"\r\n" + content + after_data + last


CHUNKED = b"Transfer-Encoding: chunked\r\n"
Build = Callable[[bytes, str], bytes]

# Each kind docs/api.md lists as answered by the parser: 400, text/plain, connection closed.
REFUSED: dict[str, Build] = {
    # the request line
    "garbage instead of a request line": lambda t, k: b"HELLO\r\n\r\n",
    "a TLS handshake on the plain HTTP port": lambda t, k: b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(32),
    "an HTTP/2 connection preface": lambda t, k: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "no spaces in the request line": lambda t, k: write(t, k, line=b"POST/v1/claimsHTTP/1.1"),
    "an unknown HTTP version": lambda t, k: write(t, k, line=b"POST /v1/claims HTTP/1.2"),
    "the version in lower case": lambda t, k: write(t, k, line=b"POST /v1/claims http/1.1"),
    "a method the parser does not know": lambda t, k: write(t, k, line=b"FOO /v1/claims HTTP/1.1"),
    "a method in lower case": lambda t, k: write(t, k, line=b"post /v1/claims HTTP/1.1"),
    "CONNECT": lambda t, k: b"CONNECT ledger:80 HTTP/1.1\r\nHost: ledger:80\r\n\r\n",
    "a space in the target": lambda t, k: write(t, k, line=b"POST /v1/claims?note=a b HTTP/1.1"),
    "a control character in the target": lambda t, k: write(t, k, line=b"POST /v1/claims?note=a\x01b HTTP/1.1"),
    "non-ASCII bytes in the target": lambda t, k: write(t, k, line="POST /v1/claims?note=café HTTP/1.1".encode()),
    "a target longer than 65,535 bytes": lambda t, k: write(
        t, k, line=b"POST /v1/claims?note=" + b"a" * 65_536 + b" HTTP/1.1"),
    # header lines
    "a header line without a colon": lambda t, k: write(t, k, fields=b"X-Trace\r\n"),
    "a space in a header name": lambda t, k: write(t, k, fields=b"X Trace: 1\r\n"),
    "whitespace before the colon": lambda t, k: write(t, k, fields=b"X-Trace : 1\r\n"),
    "an empty header name": lambda t, k: write(t, k, fields=b": 1\r\n"),
    "a control character in a header name": lambda t, k: write(t, k, fields=b"X-\x01Trace: 1\r\n"),
    "a control character in a header value": lambda t, k: write(t, k, fields=b"X-Trace: a\x01b\r\n"),
    "NUL in a header value": lambda t, k: write(t, k, fields=b"X-Trace: a\x00b\r\n"),
    "DEL in a header value": lambda t, k: write(t, k, fields=b"X-Trace: a\x7fb\r\n"),
    "a bare CR in a header value": lambda t, k: write(t, k, fields=b"X-Trace: a\rb\r\n"),
    "a folded header line": lambda t, k: write(t, k, fields=b"X-Trace: a\r\n b\r\n"),
    "whitespace before the first header": lambda t, k: write(t, k).replace(b"\r\nHost:", b"\r\n Host:", 1),
    "bare LF line ends": lambda t, k: write(t, k).replace(b"\r\n", b"\n"),
    # the framing of the body
    "a Content-Length not a number": lambda t, k: write(t, k, framing=b"Content-Length: abc\r\n"),
    "a negative Content-Length": lambda t, k: write(t, k, framing=b"Content-Length: -1\r\n"),
    "a Content-Length with a sign": lambda t, k: write(
        t, k, framing=b"Content-Length: +%d\r\n" % len(registration(k))),
    "a list as Content-Length": lambda t, k: write(
        t, k, framing=b"Content-Length: %d, %d\r\n" % (len(registration(k)), len(registration(k)))),
    "two equal Content-Lengths": lambda t, k: write(t, k, framing=b"Content-Length: %d\r\n" % len(registration(k)) * 2),
    "two different Content-Lengths": lambda t, k: write(
        t, k, framing=b"Content-Length: %d\r\nContent-Length: 2\r\n" % len(registration(k))),
    "a Content-Length past 64 bits": lambda t, k: write(t, k, framing=b"Content-Length: 99999999999999999999999\r\n"),
    "both Content-Length and Transfer-Encoding": lambda t, k: write(
        t, k, framing=b"Content-Length: 5\r\n" + CHUNKED, body=chunked(k)),
    "a transfer coding other than chunked": lambda t, k: write(t, k, framing=b"Transfer-Encoding: gzip\r\n"),
    "chunked not the last transfer coding": lambda t, k: write(
        t, k, framing=b"Transfer-Encoding: chunked, gzip\r\n", body=chunked(k)),
    "Transfer-Encoding chunked twice": lambda t, k: write(t, k, framing=CHUNKED * 2, body=chunked(k)),
    "a chunk size not in hex": lambda t, k: write(t, k, framing=CHUNKED, body=chunked(k, size=b"zz")),
    "a chunk size past 64 bits": lambda t, k: write(t, k, framing=CHUNKED, body=chunked(k, size=b"f" * 20)),
    "chunk data longer than its size": lambda t, k: write(t, k, framing=CHUNKED, body=chunked(k, after_data=b"}\r\n")),
    "chunk data without its CRLF": lambda t, k: write(t, k, framing=CHUNKED, body=chunked(k, after_data=b"")),
}


@pytest.mark.parametrize("framing", ["Content-Length", "chunked"])
def test_the_write_the_refused_kinds_spoil_is_recorded_when_well_formed(server: Server, framing: str) -> None:
    # Else "records nothing" below would prove nothing.
    key = f"well-formed-{framing.lower()}"
    request = write(server.token, key, framing=CHUNKED, body=chunked(key)) if framing == "chunked" else write(
        server.token, key)
    before = server.head()
    answer = server.exchange(request.replace(b"\r\nHost:", b"\r\nConnection: close\r\nHost:", 1))
    assert_answered_by_the_app(answer, 201)
    assert server.head() == before + 1


def assert_parser_refusal(answer: Answer) -> None:
    """uvicorn's own answer: no problem document, and no X-Request-Id, which every answer of
    the app carries: the app never saw the request."""
    assert answer.status_line == b"HTTP/1.1 400 Bad Request", answer.raw[:300]
    assert answer.headers["content-type"] == PARSER_TYPE
    assert answer.headers["connection"] == "close"
    assert "x-request-id" not in answer.headers
    assert answer.body == PARSER_BODY


@pytest.mark.parametrize("kind", list(REFUSED))
def test_a_request_the_parser_refuses_is_answered_400_in_plain_text_and_records_nothing(
    server: Server, kind: str
) -> None:
    key = f"refused-{list(REFUSED).index(kind)}"
    before = server.head()
    assert_parser_refusal(server.exchange(REFUSED[kind](server.token, key)))
    assert server.head() == before
    assert httpx.get(f"{server.base}/v1/claims/{key}", timeout=ANSWER_SECONDS).status_code == 404


def test_a_write_pipelined_ahead_of_a_malformed_request_is_recorded_though_only_the_400_comes_back(
    server: Server,
) -> None:
    # Both in one send, so the parser reads them together: it hands the write to the app, then
    # fails on what follows and answers and closes before the write's answer can be sent.
    before = server.head()
    answer = server.exchange(write(server.token, "pipelined") + b"HELLO\r\n\r\n")
    assert_parser_refusal(answer)
    assert answer.raw.count(b"HTTP/1.1") == 1
    deadline = time.monotonic() + ANSWER_SECONDS
    while server.head() == before:
        assert time.monotonic() < deadline, "the pipelined write was not recorded"
        time.sleep(0.05)
    assert server.head() == before + 1
    assert httpx.get(f"{server.base}/v1/claims/pipelined", timeout=ANSWER_SECONDS).status_code == 200


INCOMPLETE: dict[str, Build] = {
    "a body shorter than its Content-Length": lambda t, k: write(
        t, k, framing=b"Content-Length: %d\r\n" % (len(registration(k)) + 1)),
    "a chunked body without its last chunk": lambda t, k: write(t, k, framing=CHUNKED, body=chunked(k, last=b"")),
    "a header section without its end": lambda t, k: write(t, k).split(b"\r\n\r\n")[0] + b"\r\n",
    "half a request line": lambda t, k: b"POST /v1/cla",
}


@pytest.mark.parametrize("kind", list(INCOMPLETE))
def test_a_request_cut_short_by_the_client_gets_no_answer_and_records_nothing(server: Server, kind: str) -> None:
    key = f"cut-short-{list(INCOMPLETE).index(kind)}"
    before = server.head()
    assert server.exchange(INCOMPLETE[kind](server.token, key), then_half_close=True).raw == b""
    assert server.head() == before
    assert httpx.get(f"{server.base}/v1/claims/{key}", timeout=ANSWER_SECONDS).status_code == 404


def test_a_request_still_arriving_is_waited_for_past_the_keep_alive_timeout(server: Server) -> None:
    # uvicorn has no timeout for a request in progress, nor for a connection that has sent
    # nothing yet: each of these stays open, unanswered, until the client closes it.
    before = server.head()
    held = {kind: server.connect() for kind in ["nothing sent", *INCOMPLETE]}
    for number, (kind, sock) in enumerate(held.items()):
        if kind in INCOMPLETE:
            sock.sendall(INCOMPLETE[kind](server.token, f"held-{number}"))
    try:
        time.sleep(KEEP_ALIVE_SECONDS + 1.5)
        readable, _, _ = select.select(list(held.values()), [], [], 0)
        assert not readable, "the server answered or closed: " + ", ".join(
            kind for kind, sock in held.items() if sock in readable)
    finally:
        for sock in held.values():
            sock.close()
    assert server.head() == before


def assert_answered_by_the_app(answer: Answer, status: int) -> None:
    assert answer.status_line.startswith(b"HTTP/1.1 %d " % status), answer.raw[:300]
    assert "x-request-id" in answer.headers
    if status < 400:
        assert answer.headers["content-type"] == "application/json"
        json.loads(answer.body)
    else:
        assert answer.headers["content-type"] == "application/problem+json"
        assert json.loads(answer.body)["status"] == status


UNKNOWN = b"GET /v1/claims/no-such-claim"

# Each kind docs/api.md lists as passed on to the app, and the app's answer.
ACCEPTED: dict[str, tuple[bytes, int]] = {
    # RFC 9112 section 3.2: the app refuses these two (400), as the parser does not.
    "HTTP/1.1 without Host": (UNKNOWN + b" HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
    "two Host headers": (UNKNOWN + b" HTTP/1.1\r\nHost: ledger\r\nHost: other\r\nConnection: close\r\n\r\n", 400),
    "two Host headers in a write": (b"POST /v1/claims HTTP/1.1\r\nHost: ledger\r\nHost: other\r\n"
                                    b"Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                                    400),
    "HTTP/1.0 without Host": (UNKNOWN + b" HTTP/1.0\r\n\r\n", 404),
    "HTTP/2.0 in an HTTP/1 request line": (UNKNOWN + b" HTTP/2.0\r\nHost: ledger\r\n\r\n", 404),
    "no version (the HTTP/0.9 form)": (UNKNOWN + b"\r\n\r\n", 404),
    "empty lines before the request line": (b"\r\n\r\n" + UNKNOWN + b" HTTP/1.1\r\nHost: ledger\r\nConnection: close\r\n\r\n",
                                            404),
    "an absolute-form target": (b"GET http://ledger/v1/claims/no-such-claim HTTP/1.1\r\nHost: ledger\r\n"
                                b"Connection: close\r\n\r\n", 404),
    "percent-encoded bytes that are not UTF-8": (b"GET /v1/claims/%ff HTTP/1.1\r\nHost: ledger\r\n"
                                                 b"Connection: close\r\n\r\n", 404),
    "non-ASCII bytes in a header value": (UNKNOWN + b" HTTP/1.1\r\nHost: ledger\r\nX-Trace: caf\xc3\xa9\xff\r\n"
                                          b"Connection: close\r\n\r\n", 404),
    "a header section of 1 MiB": (UNKNOWN + b" HTTP/1.1\r\nHost: ledger\r\nX-Trace: " + b"a" * 2**20
                                  + b"\r\nConnection: close\r\n\r\n", 404),
    "Upgrade: h2c": (UNKNOWN + b" HTTP/1.1\r\nHost: ledger\r\nConnection: Upgrade, HTTP2-Settings, close\r\n"
                     b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", 404),
    "a method the parser knows and no route has": (b"PROPFIND /v1/claims/no-such-claim HTTP/1.1\r\nHost: ledger\r\n"
                                                   b"Connection: close\r\n\r\n", 405),
    "a Content-Length with leading zeros": (b"POST /v1/claims HTTP/1.1\r\nHost: ledger\r\nContent-Type: application/json\r\n"
                                            b"Content-Length: 0002\r\nConnection: close\r\n\r\n{}", 401),
}


@pytest.mark.parametrize("kind", list(ACCEPTED))
def test_a_request_the_parser_lets_through_is_answered_by_the_app_in_json(server: Server, kind: str) -> None:
    request, status = ACCEPTED[kind]
    answer = server.exchange(request)
    assert_answered_by_the_app(answer, status)
    # Each asks to close, or is HTTP/1.0 or older, or names a version the server does not keep alive.
    assert answer.headers["connection"] == "close"


def test_a_websocket_handshake_is_refused_403_with_an_empty_body(server: Server) -> None:
    # The app sees it, as a websocket scope, but has no WebSocket route: the router closes the
    # handshake, and the server's WebSocket layer writes this answer, not the app.
    answer = server.exchange(
        b"GET /v1/claims HTTP/1.1\r\nHost: ledger\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    assert answer.status_line == b"HTTP/1.1 403 Forbidden", answer.raw[:300]
    assert answer.headers["content-type"] == PARSER_TYPE
    assert answer.headers["content-length"] == "0"
    assert "x-request-id" not in answer.headers
    assert answer.body == b""
    server.head()


def test_the_server_logs_each_refusal_as_a_warning(server: Server) -> None:
    assert server.process.stderr is not None
    stderr = server.process.stderr.fileno()
    assert_parser_refusal(server.exchange(b"HELLO\r\n\r\n"))
    logged = b""
    deadline = time.monotonic() + ANSWER_SECONDS
    while not re.search(rb"WARNING.*Invalid HTTP request received\.", logged):
        assert time.monotonic() < deadline, f"not logged; stderr held {logged[-500:]!r}"
        readable, _, _ = select.select([stderr], [], [], 0.1)
        if readable:
            logged += os.read(stderr, 65536)
