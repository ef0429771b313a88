"""`LedgerClient`: the ledger's HTTP API from synchronous Python (httpx)."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Mapping
from types import TracebackType

import httpx
from httpx_sse import EventSource, SSEError

from client import core
from client.core import DEFAULT_BACKOFF, Backoff, Call, Json, Params, Status, StreamCursor, StreamItem
from client.endpoints import Endpoints
from client.errors import InvalidResponse, LedgerError

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
Stream = Generator[StreamItem, None, None]  # close() it to end the stream


class LedgerClient(Endpoints[Json]):
    """The claims ledger at `url`, e.g. ``LedgerClient("https://ledger.example.org", token=...)``.

    Each method is one endpoint (see `Endpoints`) and returns the decoded answer; an error
    answer raises its typed `LedgerError` (client/errors.py). A request that got no answer,
    a 503 or a busy Idempotency-Key is tried again up to `retries` more times, waiting
    `backoff` (or the server's Retry-After) between tries; each write carries one
    Idempotency-Key for all its tries, so the ledger records it once. Use it as a context
    manager, or `close()` it.
    """

    def __init__(
        self, url: str, token: str | None = None, *, timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retries: int = 3, backoff: Backoff = DEFAULT_BACKOFF, stream_timeout: float = 60.0,
        headers: Mapping[str, str] | None = None, transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.stream_timeout = stream_timeout
        self.http = httpx.Client(
            base_url=self.url, timeout=timeout, headers=core.headers_of(token, headers), transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _call(self, call: Call, idempotency_key: str | None = None, write: bool = False) -> Json:
        if write:
            call = call.with_key(idempotency_key)
        attempt = 0
        while True:
            try:
                try:
                    response = self.http.request(
                        call.method, call.path, params=call.params, json=call.body, headers=call.headers,
                    )
                except httpx.TransportError as e:
                    raise core.unreachable(call, e) from e
                answer: Json = core.answer(call, response)
                return answer
            except LedgerError as e:
                if attempt >= self.retries or not core.retryable(e):
                    raise
                time.sleep(self.backoff.delay(attempt, e.retry_after))
                attempt += 1

    # -- Iterators --------------------------------------------------------------------------------

    def iter_claims(
        self, *, status: Status | None = None, party: str | None = None, subject: str | None = None,
        q: str | None = None, page_size: int = 500,
    ) -> Iterator[Json]:
        """Every claim the filters select, page after page (`list_claims`)."""
        cursor: str | None = None
        while True:
            page = self.list_claims(status=status, party=party, subject=subject, q=q, limit=page_size, cursor=cursor)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def event_pages(self, after: int = 0, limit: int | None = None) -> Iterator[Json]:
        """The feed's pages (`events`) from `after` to its current end."""
        while True:
            page = self.events(after, limit)
            if not page["items"]:
                return
            yield page
            after = page["next_after"]

    def iter_events(self, after: int = 0, limit: int | None = None) -> Iterator[Json]:
        """Every feed item after `after` (up to `limit`), in log order, streamed in one
        request (NDJSON) and parsed line by line as I-JSON."""
        call = core.feed(after, limit)
        reader = core.FeedReader(after)
        try:
            with self.http.stream(call.method, call.path, params=call.params, headers=call.headers) as response:
                if response.status_code != 200:
                    response.read()
                    raise core.problem(response, call.method, call.path)
                for chunk in response.iter_bytes():
                    yield from reader.take(chunk)
                yield from reader.end()
        except httpx.TransportError as e:
            raise core.unreachable(call, e) from e

    # -- Server-Sent Events -----------------------------------------------------------------------

    def stream_events(self, after: int | None = None, *, max_reconnects: int | None = None) -> Stream:
        """The feed as it grows (role auditor): every event after `after` (default 0: the
        whole log), then each new one as it is recorded, for as long as it is iterated.
        `StreamItem.data` is `{position, hash, body}`. A cut connection is resumed where it
        was, with no event missed or repeated; see `StreamCursor` for the rules."""
        return self._follow(StreamCursor("/v1/events/stream", {}, after, self.backoff, max_reconnects))

    def watch_claims(
        self, *, claim: str | None = None, status: Status | None = None, party: str | None = None,
        subject: str | None = None, after: int | None = None, max_reconnects: int | None = None,
    ) -> Stream:
        """Each change of a claim's view that the filters select, once it is readable, after
        log position `after` (default 0: every claim's changes so far, then live);
        `StreamItem.data` is the view, `position` the last log position it reflects."""
        filters: Params = core.present(claim=claim, status=status, party=party, subject=subject)
        return self._follow(StreamCursor("/v1/claims/stream", filters, after, self.backoff, max_reconnects))

    def _follow(self, cursor: StreamCursor) -> Stream:
        timeout = httpx.Timeout(self.http.timeout.connect, read=self.stream_timeout, write=30.0, pool=30.0)
        while True:
            call = cursor.call()
            error: LedgerError | None = None
            try:
                with self.http.stream(
                    call.method, call.path, params=call.params, headers=call.headers, timeout=timeout,
                ) as response:
                    if response.status_code != 200:
                        response.read()
                    cursor.opened(response, call)
                    for sse in EventSource(response).iter_sse():
                        item = cursor.take(sse.event, sse.data, sse.id, sse.retry)
                        if item is not None:
                            yield item
                        elif cursor.dropped:
                            break
            except httpx.TransportError as e:
                error = core.unreachable(call, e)
            except SSEError as e:
                raise InvalidResponse(f"GET {call.path}: {e}", status=200) from None
            except LedgerError as e:
                error = e
            time.sleep(cursor.reconnect_after(error))
