"""An HTTP proxy in front of a ledger that changes its answers: the tampering server the
auditor's tests need."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx

Rewrite = Callable[[str, bytes], bytes]  # (path, upstream body) -> the body served


class TamperingProxy:
    """An HTTP proxy in front of a ledger that passes GETs through, `rewrite` changing each
    answer's body on its way back; it counts the answers it changed."""

    def __init__(self, upstream: str, rewrite: Rewrite = lambda path, body: body) -> None:
        self.upstream = upstream
        self.rewrite = rewrite  # may be changed between requests
        self.changed = 0
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                forwarded = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "accept")}
                answer = httpx.get(proxy.upstream + self.path, headers=forwarded, timeout=30)
                body = proxy.rewrite(urlsplit(self.path).path, answer.content) if answer.status_code == 200 else answer.content
                if body != answer.content:
                    with lock:
                        proxy.changed += 1
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
