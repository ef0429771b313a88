"""`AsyncLedgerClient`: the ledger's HTTP API from asyncio (or trio) code (httpx)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping
from types import TracebackType

import anyio
import httpx
from httpx_sse import EventSource, SSEError

from client import core
from client.core import DEFAULT_BACKOFF, Backoff, Call, Json, Params, Status, StreamCursor, StreamItem
from client.endpoints import Endpoints
from client.errors import InvalidResponse, LedgerError
from client.sync import DEFAULT_TIMEOUT

AsyncStream = AsyncGenerator[StreamItem, None]  # aclose() it to end the stream


class AsyncLedgerClient(Endpoints[Awaitable[Json]]):
    """`LedgerClient` for async code: the same endpoints, rules, retries and errors, each
    method awaited (``await client.get_claim(key)``), the iterators and streams async
    (``async for item in client.stream_events(): ...``). Use it as an async context
    manager, or `await aclose()`."""

    def __init__(
        self, url: str, token: str | None = None, *, timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retries: int = 3, backoff: Backoff = DEFAULT_BACKOFF, stream_timeout: float = 60.0,
        headers: Mapping[str, str] | None = None, transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.stream_timeout = stream_timeout
        self.http = httpx.AsyncClient(
            base_url=self.url, timeout=timeout, headers=core.headers_of(token, headers), transport=transport,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncLedgerClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _call(self, call: Call, idempotency_key: str | None = None, write: bool = False) -> Awaitable[Json]:
        return self._send(call.with_key(idempotency_key) if write else call)

    async def _send(self, call: Call) -> Json:
        attempt = 0
        while True:
            try:
                try:
                    response = await self.http.request(
                        call.method, call.path, params=call.params, json=call.body, headers=call.headers,
                    )
                except httpx.TransportError as e:
                    raise core.unreachable(call, e) from e
                answer: Json = core.answer(call, response)
                return answer
            except LedgerError as e:
                if attempt >= self.retries or not core.retryable(e):
                    raise
                await anyio.sleep(self.backoff.delay(attempt, e.retry_after))
                attempt += 1

    # -- Iterators --------------------------------------------------------------------------------

    async def iter_claims(
        self, *, status: Status | None = None, party: str | None = None, subject: str | None = None,
        q: str | None = None, page_size: int = 500,
    ) -> AsyncIterator[Json]:
        """Every claim the filters select, page after page (`list_claims`)."""
        cursor: str | None = None
        while True:
            page = await self.list_claims(
                status=status, party=party, subject=subject, q=q, limit=page_size, cursor=cursor,
            )
            for item in page["items"]:
                yield item
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def event_pages(self, after: int = 0, limit: int | None = None) -> AsyncIterator[Json]:
        """The feed's pages (`events`) from `after` to its current end."""
        while True:
            page = await self.events(after, limit)
            if not page["items"]:
                return
            yield page
            after = page["next_after"]

    async def iter_events(self, after: int = 0, limit: int | None = None) -> AsyncIterator[Json]:
        """Every feed item after `after` (up to `limit`), in log order, streamed in one
        request (NDJSON) and parsed line by line as I-JSON."""
        call = core.feed(after, limit)
        reader = core.FeedReader(after)
        try:
            async with self.http.stream(call.method, call.path, params=call.params, headers=call.headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise core.problem(response, call.method, call.path)
                async for chunk in response.aiter_bytes():
                    for item in reader.take(chunk):
                        yield item
                for item in reader.end():
                    yield item
        except httpx.TransportError as e:
            raise core.unreachable(call, e) from e

    # -- Server-Sent Events -----------------------------------------------------------------------

    def stream_events(self, after: int | None = None, *, max_reconnects: int | None = None) -> AsyncStream:
        """`LedgerClient.stream_events`, async."""
        return self._follow(StreamCursor("/v1/events/stream", {}, after, self.backoff, max_reconnects))

    def watch_claims(
        self, *, claim: str | None = None, status: Status | None = None, party: str | None = None,
        subject: str | None = None, after: int | None = None, max_reconnects: int | None = None,
    ) -> AsyncStream:
        """`LedgerClient.watch_claims`, async."""
        filters: Params = core.present(claim=claim, status=status, party=party, subject=subject)
        return self._follow(StreamCursor("/v1/claims/stream", filters, after, self.backoff, max_reconnects))

    async def _follow(self, cursor: StreamCursor) -> AsyncStream:
        timeout = httpx.Timeout(self.http.timeout.connect, read=self.stream_timeout, write=30.0, pool=30.0)
        while True:
            call = cursor.call()
            error: LedgerError | None = None
            try:
                async with self.http.stream(
                    call.method, call.path, params=call.params, headers=call.headers, timeout=timeout,
                ) as response:
                    if response.status_code != 200:
                        await response.aread()
                    cursor.opened(response, call)
                    async for sse in EventSource(response).aiter_sse():
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
            await anyio.sleep(cursor.reconnect_after(error))
