"""`claims serve --workers N`: every API worker's writes go to one group-commit writer.

With a writer in each worker, each batch held a share of the writes, and every writer read
and folded the others' events to keep its claim cache true, or met a conflict and read a
claim again: two workers spent much more CPU per write than one process (docs/performance.md).
So worker 1 (the host) serves its writer on a Unix socket and the other workers send it
their commands: batches as large as one process's, no cache following the others.

Frames are a 4-byte length and a pickle: (request id, command, credential) one way,
(request id, outcome, error) back, in any order. The host's writer checks the credential
(the token's hash and the role needed) with the rest of its batch. The socket lies in a
directory only the ledger's user can open (the supervisor makes it, mode 0700); no one
else can speak on it.

Nothing changes what is safe: a worker that cannot reach the host writes through its own
writer (writers on one store resolve conflicts by reloading and retrying), and a request
is answered only with the outcome the host sent after its commit. When the host goes away
with requests in flight, those are answered 503 "may or may not be recorded", as a write
that timed out is: a retry with the same act_id or Idempotency-Key is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import pickle
import struct
import time
from collections.abc import Callable
from typing import Any

from domain.commands import Command
from domain.errors import StoreUnavailable
from domain.ledger import Outcome
from service.writer import GroupWriter, LoopReply, maybe_recorded
from store.tokens import Credential

log = logging.getLogger("claims.service.forward")

FRAME = struct.Struct("!I")
MAX_FRAME = 1 << 20  # a command is at most a 64 KiB body's worth of fields
RECONNECT_SECONDS = 0.5  # how long a worker writes locally before it tries the host again


def _frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(data)) + data


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    (size,) = FRAME.unpack(await reader.readexactly(FRAME.size))
    if size > MAX_FRAME:
        raise ValueError(f"a frame of {size} bytes is larger than any command")
    return pickle.loads(await reader.readexactly(size))  # noqa: S301 - our own processes, on a private socket


class WriterHost:
    """Serves this process's group writer to the other workers on a Unix socket."""

    def __init__(self, writer: GroupWriter, path: str) -> None:
        self.writer = writer
        self.path = path
        self.forwarded = 0
        self._server: asyncio.AbstractServer | None = None
        self._streams: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, self.path)

    async def close(self) -> None:
        """Stop listening and drop the workers' connections (their writes in flight are
        answered 503 by their link)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for stream in list(self._streams):
            stream.close()
        self._streams.clear()

    async def _serve(self, reader: asyncio.StreamReader, stream: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        self._streams.add(stream)
        try:
            while True:
                try:
                    request_id, command, credential = await _read_frame(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                reply = LoopReply(loop)
                try:
                    self.writer.submit_reply(command, reply, credential)
                except StoreUnavailable as e:  # shutting down
                    stream.write(_answer(request_id, None, e))
                    continue
                self.forwarded += 1
                reply.future.add_done_callback(
                    lambda done, rid=request_id: _send_outcome(stream, rid, done)  # type: ignore[misc]
                )
        except Exception:
            log.exception("a worker's write link failed; it will reconnect")
        finally:
            self._streams.discard(stream)
            stream.close()


def _send_outcome(stream: asyncio.StreamWriter, request_id: int, done: asyncio.Future[Outcome]) -> None:
    if stream.is_closing() or done.cancelled():
        return
    error = done.exception()
    stream.write(_answer(request_id, None if error else done.result(), error))


def _answer(request_id: int, outcome: Outcome | None, error: BaseException | None) -> bytes:
    try:
        return _frame((request_id, outcome, error))
    except Exception:  # an error that does not pickle: the worker answers it as the server's fault
        return _frame((request_id, None, RuntimeError(f"the writer failed: {error!r:.300}")))


class WriterLink:
    """A worker's way to the host's writer, with its own writer when the host cannot be reached."""

    def __init__(self, path: str, local: GroupWriter, on_forwarded: Callable[[], object] | None = None) -> None:
        self.path = path
        self.local = local
        self.on_forwarded = on_forwarded
        self.forwarded = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Outcome]] = {}
        self._stream: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._connecting: asyncio.Lock | None = None
        self._retry_at = 0.0

    async def execute_async(self, command: Command, timeout: float, credential: Credential | None = None) -> Outcome:
        stream = self._stream if self._stream is not None and not self._stream.is_closing() else await self._connect()
        if stream is None:
            return await self.local.execute_async(command, timeout, credential)
        request_id = next(self._ids)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            stream.write(_frame((request_id, command, credential)))
            async with asyncio.timeout(timeout):
                outcome = await future
        except TimeoutError:
            raise maybe_recorded(timeout) from None
        finally:
            self._pending.pop(request_id, None)
        self.forwarded += 1
        if self.on_forwarded is not None:
            self.on_forwarded()
        return outcome.unwrap()

    async def _connect(self) -> asyncio.StreamWriter | None:
        if time.monotonic() < self._retry_at:
            return None
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._stream is not None and not self._stream.is_closing():
                return self._stream
            try:
                reader, stream = await asyncio.open_unix_connection(self.path)
            except OSError as e:
                log.info("the writer host is not reachable (%s); writing through this worker's writer", e)
                self._retry_at = time.monotonic() + RECONNECT_SECONDS
                return None
            self._stream = stream
            self._reader_task = asyncio.create_task(self._read(reader, stream))
            return stream

    async def _read(self, reader: asyncio.StreamReader, stream: asyncio.StreamWriter) -> None:
        gone: BaseException = StoreUnavailable(
            "the writer process went away before it answered: the write may or may not be recorded; "
            "retry it with the same Idempotency-Key or act_id, which makes the retry safe"
        )
        try:
            while True:
                request_id, outcome, error = await _read_frame(reader)
                future = self._pending.pop(request_id, None)
                if future is None or future.done():
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(outcome)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        except Exception as e:
            log.exception("the link to the writer host failed")
            gone = StoreUnavailable(f"the link to the writer process failed ({e}); retry with the same act_id")
        finally:
            stream.close()
            if self._stream is stream:
                self._stream = None
                self._retry_at = time.monotonic() + RECONNECT_SECONDS
            for request_id in [r for r, f in self._pending.items() if not f.done()]:
                self._pending.pop(request_id).set_exception(gone)

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(BaseException):
                await self._reader_task
            self._reader_task = None
