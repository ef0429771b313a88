"""Group commit: one writer thread per process turns many requests into one transaction.

Requests submit commands and wait on a future (a thread) or a `LoopReply` (the event loop). The writer takes everything
queued (up to `max_batch`), runs it through `Ledger.execute` in one transaction — later
commands see earlier ones, a broken rule fails only its own command — and answers each
future with its own outcome after the commit. Nothing is acknowledged before commit.

A command may come with its caller's credential (store/tokens.py): the writer's `gate`
checks the batch's credentials in one statement before applying it (`TokenStore.check`,
by the same rule as every other token check), and a refused command is answered with its
refusal and never applied (the others see nothing of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Protocol

from domain.commands import Command
from domain.errors import StoreUnavailable
from domain.ledger import Ledger, Outcome
from store.tokens import Credential

log = logging.getLogger("claims.service.writer")

OnCommit = Callable[[Sequence[Outcome]], None]


class Reply(Protocol):
    """How the writer answers a request: a concurrent Future, or a `LoopReply`."""

    def set_running_or_notify_cancel(self) -> bool: ...
    def set_result(self, result: Outcome) -> None: ...
    def set_exception(self, exception: BaseException | None) -> None: ...
    def cancel(self) -> bool: ...


Pending = tuple[Command, Reply, Credential | None]
# A batch's credentials in, each one's refusal (None: it may write) out.
Gate = Callable[[Sequence[Credential]], Sequence[BaseException | None]]


class GroupWriter:
    def __init__(
        self, ledger: Ledger, *, max_batch: int = 500, on_commit: OnCommit | None = None, gate: Gate | None = None,
    ) -> None:
        self.ledger = ledger
        self.gate = gate
        self.max_batch = max_batch
        self.on_commit = on_commit
        self.batches = 0
        self.largest_batch = 0
        self._queue: queue.SimpleQueue[Pending | None] = queue.SimpleQueue()  # None wakes the writer
        self._lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # Request side.
    def submit(self, command: Command, credential: Credential | None = None) -> Future[Outcome]:
        future: Future[Outcome] = Future()
        self._put(command, future, credential)
        return future

    def execute(self, command: Command, timeout: float) -> Outcome:
        """Submit and wait, at most `timeout` seconds, for the committed outcome; its error is raised."""
        future = self.submit(command)
        try:
            outcome = future.result(timeout)
        except TimeoutError:
            raise _timed_out(future, timeout) from None
        return outcome.unwrap()

    async def execute_async(self, command: Command, timeout: float, credential: Credential | None = None) -> Outcome:
        """`execute` for the event loop: the request waits without holding a thread.

        Cancelling the caller does not cancel a write the writer has taken (as with
        `execute`, whose thread would go on waiting).
        """
        reply = LoopReply(asyncio.get_running_loop())
        self._put(command, reply, credential)
        try:
            async with asyncio.timeout(timeout):
                outcome = await reply.future
        except TimeoutError:
            raise _timed_out(reply, timeout) from None
        return outcome.unwrap()

    def submit_reply(self, command: Command, reply: Reply, credential: Credential | None = None) -> None:
        """Queue a command whose outcome (not raised) goes to `reply` (service/forward.py)."""
        self._put(command, reply, credential)

    def _put(self, command: Command, reply: Reply, credential: Credential | None) -> None:
        if credential is not None and self.gate is None:
            raise RuntimeError("this writer has no gate to check a write's credential")
        with self._lock:
            if self._closed:
                raise StoreUnavailable("the server is shutting down and takes no more writes; retry shortly")
            self._queue.put((command, reply, credential))

    # Writer side.
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="group-writer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Take no more writes, commit the ones queued, and end the thread."""
        with self._lock:
            self._closed = True
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for _, future, _ in self._drain(block=False):  # nothing left to commit them
            if future.set_running_or_notify_cancel():
                future.set_exception(StoreUnavailable("the server stopped before this write was made; retry"))

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while True:
            batch = self._drain(block=True)
            if batch:
                self._commit(batch)
            elif self._stop.is_set():
                return

    def _drain(self, *, block: bool) -> list[Pending]:
        batch: list[Pending | None] = []
        try:
            if block:
                batch.append(self._queue.get(timeout=0.5))
            while len(batch) < self.max_batch:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return [item for item in batch if item is not None]

    def _commit(self, batch: list[Pending]) -> None:
        live = self._admitted([item for item in batch if item[1].set_running_or_notify_cancel()])
        if not live:
            return
        try:
            outcomes = self.ledger.execute([command for command, _ in live])
        except StoreUnavailable as e:
            for _, future in live:
                future.set_exception(e)
            return
        except Exception:
            # A fault no rule describes: run each command alone so it fails only its own request.
            log.exception("a batch of %d writes failed; retrying them one by one", len(live))
            self._commit_one_by_one(live)
            return
        for (_, future), outcome in zip(live, outcomes, strict=True):
            future.set_result(outcome)
        self._committed(len(live), outcomes)

    def _admitted(self, batch: list[Pending]) -> list[tuple[Command, Reply]]:
        """The batch's commands whose credential (if any) the gate lets through; the others
        are answered with their refusal here, before anything is applied."""
        checked = [(i, credential) for i, (_, _, credential) in enumerate(batch) if credential is not None]
        if not checked:
            return [(command, reply) for command, reply, _ in batch]
        assert self.gate is not None
        try:
            refusals = list(self.gate([credential for _, credential in checked]))
        except Exception as e:
            failed: BaseException = e if isinstance(e, StoreUnavailable) else StoreUnavailable(
                f"the write's token could not be checked ({type(e).__name__}); nothing was written, retry"
            )
            if not isinstance(e, StoreUnavailable):
                log.exception("checking the tokens of a batch failed")
            refusals = [failed] * len(checked)
        refused = {i: refusal for (i, _), refusal in zip(checked, refusals, strict=True) if refusal is not None}
        admitted = []
        for i, (command, reply, _) in enumerate(batch):
            if i in refused:
                reply.set_exception(refused[i])
            else:
                admitted.append((command, reply))
        return admitted

    def _commit_one_by_one(self, live: list[tuple[Command, Reply]]) -> None:
        outcomes: list[Outcome] = []
        for command, future in live:
            try:
                outcome = self.ledger.execute([command])[0]
            except Exception as e:
                future.set_exception(e)
            else:
                future.set_result(outcome)
                outcomes.append(outcome)
        self._committed(len(live), outcomes)

    def _committed(self, size: int, outcomes: Sequence[Outcome]) -> None:
        self.batches += 1
        self.largest_batch = max(self.largest_batch, size)
        if self.on_commit is not None:
            try:
                self.on_commit(outcomes)
            except Exception:
                log.exception("the on_commit hook failed")


class LoopReply:
    """A reply to a request waiting on an event loop: the writer thread hands the outcome
    to an asyncio future there (lighter than a concurrent Future wrapped for the loop)."""

    __slots__ = ("_state", "future", "loop")
    _states = threading.Lock()  # one for all replies: its holders never wait for anything

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[Outcome] = loop.create_future()
        self._state = "pending"

    def set_running_or_notify_cancel(self) -> bool:
        with self._states:
            if self._state == "cancelled":
                return False
            self._state = "running"
            return True

    def cancel(self) -> bool:
        """True when the writer had not taken the command, which it now never will."""
        with self._states:
            if self._state == "running":
                return False
            self._state = "cancelled"
            return True

    def set_result(self, result: Outcome) -> None:
        self._call(self._deliver, result, None)

    def set_exception(self, exception: BaseException | None) -> None:
        self._call(self._deliver, None, exception)

    def _call(self, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: no one is waiting
            self.loop.call_soon_threadsafe(*args)

    def _deliver(self, result: Outcome | None, exception: BaseException | None) -> None:
        if self.future.done():  # the request timed out or went away
            return
        if exception is not None:
            self.future.set_exception(exception)
        else:
            self.future.set_result(result)  # type: ignore[arg-type]


def _timed_out(future: Reply, timeout: float) -> StoreUnavailable:
    if future.cancel():
        return StoreUnavailable(
            f"the ledger did not take the write within {timeout:g} s; nothing was written, retry"
        )
    return maybe_recorded(timeout)


def maybe_recorded(timeout: float) -> StoreUnavailable:
    """A write taken by a writer that did not answer in time: it may yet commit."""
    return StoreUnavailable(
        f"the write did not finish within {timeout:g} s and may or may not be recorded; retry it "
        "with the same Idempotency-Key or act_id, which makes the retry safe"
    )
