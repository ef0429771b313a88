"""The projection engine: follows the ledger's notification log into the read models.

Each batch of events is applied in one read-model transaction that also moves the
tracking position, so a crash at any instant neither skips nor double-applies an event.
Claims' folds are cached between batches; the cache is only a shortcut for re-reading
the claim's history rows, which live in the same transaction.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import queue
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import psycopg
from eventsourcing.persistence import PersistenceError

from domain.errors import StoreUnavailable
from domain.fold import ClaimFold
from domain.ledger import Ledger, LoggedEvent
from projections.merkle import MERKLE_TABLES, MerkleLog, MerkleTip
from projections.tables import LIVE, REBUILD, RETIRED, Tables
from store.db import Cursor, ReadStore
from store.event_store import open_ledger
from store.lease import Lease
from store.log import ClaimKey, LogScanner
from store.settings import Database

log = logging.getLogger("claims.projections")

TRACKING_NAME = "ledger"
# A batch's first statement, where the engine knows where it left the position: it moves the
# position on under the tracking row's lock, or fails (a division by zero) when another
# engine or a rebuild's swap moved it, and with it the whole transaction.
MOVE_POSITION_SQL = (
    "WITH moved AS (UPDATE {tracking} SET position = ? WHERE name = ? AND position = ? AND generation = ?"
    " RETURNING 1) SELECT 1 / (SELECT count(*)::int FROM moved)"
)
BULK_CACHE_KIB = -65_536  # SQLite page cache of a bulk load: 64 MiB, whatever the log's size
# While following a stream of writes, batches are spaced by LEDGER_PROJECTION_INTERVAL_MS and by
# at least this many times the CPU the last batch took: see run().
BATCH_SPACING = 2.0
PARALLEL_FROM = 20_000  # events from which a rebuild folds claims in a second process
Progress = Callable[[int, int], None]


class ProjectedFold(ClaimFold):
    """The fold without each act's data: the engine caches thousands of these."""

    keeps_data = False
    reg_position = 0  # the log position of the claim's registration, once the engine has it
    # The claim's stance and review rows as the engine last wrote them, by holder or
    # reviewer (None: not known).
    stance_rows: dict[str, tuple[Any, ...]] | None = None
    review_rows: dict[str, tuple[Any, ...]] | None = None


@dataclass(frozen=True)
class Row:
    """One event as the read models need it."""

    position: int
    claim_id: str
    version: int
    type: str
    act_id: str | None
    hash: str
    body_text: str
    body: dict[str, Any]


def row_of(event: LoggedEvent) -> Row:
    body = event.body()
    return Row(
        event.position, event.claim_id, event.version, event.type, body["data"].get("act_id"), event.hash,
        event.body_text(), body,
    )


HISTORY_COLUMNS = ("position", "claim_id", "version", "type", "act_id", "hash", "body")
HISTORY_PG_TYPES = ("bigint", "text", "int", "text", "text", "text", "text")
CLAIM_COLUMNS = ("claim_id", "key", "statement", "language", "status", "view", "version", "reg_position",
                 "position", "registered_at", "updated_at")
CLAIM_PG_TYPES = ("text", "text", "text", "text", "text", "text", "int", "bigint", "bigint", "text", "text")
STANCE_COLUMNS = ("holder_id", "claim_id", "party_id", "stance", "act_id", "said_at", "reg_position", "item")
STANCE_PG_TYPES = ("text", "text", "text", "text", "text", "text", "bigint", "text")
REVIEW_COLUMNS = ("reviewer_id", "claim_id", "act_id", "reg_position", "item")
REVIEW_PG_TYPES = ("text", "text", "text", "bigint", "text")
# One claim's keyed rows (a stance row by holder, a review row by reviewer): (claim_id, its rows
# now, those the engine wrote last or None when it does not know them).
RowChange = tuple[str, dict[str, tuple[Any, ...]], dict[str, tuple[Any, ...]] | None]
SUBJECT_COLUMNS = ("subject", "claim_id", "reg_position")
SUBJECT_PG_TYPES = ("text", "text", "bigint")
SEARCH_COLUMNS = ("statement", "claim_id")
SEARCH_PG_TYPES = ("text", "text")


def _claim_row(claim_id: str, v: dict[str, Any], reg_position: int, position: int) -> tuple[Any, ...]:
    return (claim_id, v["key"], v["statement"], v["language"], v["status"], orjson.dumps(v).decode(),
            v["version"], reg_position, position, v["registered_at"], v["updated_at"])


def _stance_rows(claim_id: str, v: dict[str, Any], reg_position: int) -> list[tuple[Any, ...]]:
    head = {"claim_id": claim_id, "key": v["key"], "statement": v["statement"], "status": v["status"]}
    return [
        (s["holder"]["id"], claim_id, s["party"]["id"], s["stance"], s["act_id"], s["said_at"], reg_position,
         orjson.dumps({**head, **s}).decode())
        for s in v["stances"]
    ]


def _review_rows(claim_id: str, v: dict[str, Any], reg_position: int) -> list[tuple[Any, ...]]:
    head = {"claim_id": claim_id, "key": v["key"], "statement": v["statement"], "status": v["status"]}
    return [
        (r["reviewer"]["id"], claim_id, r["act_id"], reg_position, orjson.dumps({**head, **r}).decode())
        for r in v["reviews"]
    ]


class _ClaimRun:
    """One claim's events met together in a scan in claim order, folded as they come."""

    __slots__ = ("claim_id", "fold", "position", "reg_position")

    def __init__(self, claim_id: str = "") -> None:
        self.claim_id = claim_id
        self.fold: ClaimFold = ProjectedFold()
        self.reg_position = 0
        self.position = 0

    def add(self, version: int, position: int, body: dict[str, Any]) -> None:
        self.fold.apply(body)
        if version == 1:
            self.reg_position = position
        self.position = position


Page = TypeVar("Page")
Mark = TypeVar("Mark")


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause the cycle collector: a bulk load makes millions of short-lived containers and
    no cycles, and each collection would walk every object alive."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _read_ahead(fetch: Callable[[Mark], tuple[Page, Mark] | None], start: Mark) -> Iterator[Page]:
    """The pages `fetch` returns, from `start` on, fetched by a thread one or two pages ahead."""
    pages: queue.Queue[tuple[Page] | BaseException | None] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def run() -> None:
        mark = start
        try:
            while not stop.is_set():
                fetched = fetch(mark)
                if fetched is None:
                    break
                page, mark = fetched
                pages.put((page,))
            pages.put(None)
        except BaseException as e:  # handed to the consuming thread, which raises it
            pages.put(e)

    reader = threading.Thread(target=run, name="read-ahead", daemon=True)
    reader.start()
    try:
        while (item := pages.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item[0]
    finally:
        stop.set()
        while reader.is_alive():  # unblock a reader waiting to put a page
            with contextlib.suppress(queue.Empty):
                pages.get(timeout=0.05)


# A history table row: (position, claim_id, version, type, act_id, hash, body).
HistoryRow = tuple[int, str, int, str, str | None, str, str]
_ACT_ID_TEXT = '{"act_id":"'


def _history_row(event: LoggedEvent) -> HistoryRow:
    """The history row of an event, reading its act_id without parsing its data when it can.

    Data is canonical JSON (keys sorted), and act_id sorts before every other key of an
    act, so an act's data starts with it; anything else is parsed.
    """
    data_json = event.data_json
    act_id: str | None
    start = len(_ACT_ID_TEXT)
    end = data_json.find('"', start) if data_json.startswith(_ACT_ID_TEXT) else -1
    if end > start and "\\" not in data_json[start:end]:
        act_id = data_json[start:end]
    elif '"act_id"' not in data_json:
        act_id = None
    else:
        act_id = orjson.loads(data_json).get("act_id")
    return (event.position, event.claim_id, event.version, event.type, act_id, event.hash, event.body_text())


Registration = tuple[str, ClaimFold, int]  # claim id, the claim as registered, log position


def _registered(event: LoggedEvent) -> ClaimFold:
    """The claim as its registration made it (subjects and statement, for pass 1)."""
    fold = ProjectedFold()
    fold.apply(event.body())
    return fold


class ProjectionEngine:
    """Keeps the read-model tables (status, history, stances, search, Merkle log) current."""

    def __init__(
        self, ledger: Ledger, store: ReadStore, *, prefix: str = LIVE, batch_size: int = 2000,
        gap_wait: float = 0.2, cache_size: int = 5_000, parallel_from: int = PARALLEL_FROM,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.tables = Tables(prefix)
        self.merkle = MerkleLog(prefix)
        self.batch_size = batch_size
        # PostgreSQL ids can have gaps (rolled-back inserts). The library inserts under an
        # exclusive table lock, so a gap seen is already final; waiting a moment before
        # passing it also covers a writer that does not take that lock.
        self.gap_wait = gap_wait
        self.cache_size = cache_size
        # While following a stream of writes, a batch at most this often (seconds): see run().
        self.batch_interval = store.database.settings.projection_interval_ms / 1000
        self.parallel_from = parallel_from
        self.helper_peak_rss_mib = 0.0  # peak RSS of the last bulk load's second process (0: none)
        self._folds: OrderedDict[str, ProjectedFold] = OrderedDict()
        self._generation = -1
        self._gaps_seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # What the last batch committed: the position the next one starts after (None:
        # read it), and the Merkle log's tip there (position, generation, tip).
        self._start: int | None = None
        self._tip: tuple[int, int, MerkleTip] | None = None
        self._scanner = LogScanner(ledger, store.database)
        # Among the engines of every process on this ledger, the one that applies batches
        # (store/lease.py); the others stand by and take over when its session ends.
        self.lease = Lease(store.database, f"projections {prefix}")
        self.lease_retry = store.database.settings.lease_retry_seconds
        # Why the last batch failed, while `run` retries it (None once one succeeds): an event
        # the read models cannot take stops them at the position before it (/healthz says so).
        self.failure: str | None = None

    # Schema.
    def ensure_tables(self) -> None:
        with self.store.transaction() as cur:
            self.tables.upgrade(cur)
            self.tables.create(cur, generation=0)
            self.merkle.create_tables(cur)
            cur.execute(
                f"INSERT INTO {self.tables.tracking} (name, position, generation) VALUES (?, 0, 0)"
                " ON CONFLICT (name) DO NOTHING", (TRACKING_NAME,),
            )

    # Positions.
    def position(self) -> int:
        """The last log position applied to the read models."""
        with self.store.reading() as cur:
            return self._tracking(cur, lock=False)[0]

    # Following the log.
    def catch_up(self, limit: int | None = None, progress: Progress | None = None) -> int:
        """Apply every event available now; returns how many were applied."""
        done = 0
        total = 0
        while limit is None or done < limit:
            applied, waiting = self.process_batch()
            done += applied
            if progress is not None and applied:
                total = total or self.ledger.max_position()
                progress(done, total)
            if applied == 0 or waiting:
                break
        return done

    def process_batch(self) -> tuple[int, bool]:
        """One batch. Returns (events applied, whether it stopped at a fresh gap)."""
        done = self._batch_from(self._expected())
        if done is None:  # another engine had moved the position: go on from where it is now
            done = self._batch_from(self._expected())
        return done or (0, False)

    def _expected(self) -> int:
        """Where the next batch starts: after what this engine committed last, if it knows."""
        return self._start if self._start is not None else self.position()

    def _batch_from(self, start: int) -> tuple[int, bool] | None:
        """A batch after `start`, the position this engine expects to find; None when it
        finds another (another engine or a rebuild's swap moved it), which it then expects."""
        logged = self._scanner.read(start, self.batch_size)
        if not logged:
            return 0, False
        usable, waiting = self._pass_gaps(start, logged)
        if not usable:
            return 0, waiting
        rows = [row_of(e) for e in usable]
        tip = self._tip
        if self.store.backend == "postgres" and tip is not None and tip[:2] == (start, self._generation):
            return self._batch_at(start, rows, waiting, tip[2])
        try:
            # Not durable: a crash of PostgreSQL may lose the batch, with its position; the
            # engine then applies it again.
            with self.store.transaction(durable=False) as cur:
                position, generation = self._tracking(cur, lock=True)
                if generation != self._generation:
                    self._folds.clear()
                    self._generation = generation
                if position != start:
                    self._start = position
                    return None
                # Under the tracking row's lock, at the position this engine last committed
                # (and in the same generation of tables): the Merkle log is as it left it.
                tip = self._tip if self._tip is not None and self._tip[:2] == (start, generation) else None
                with cur.pipeline():
                    new_tip = self.apply(cur, rows, tip[2] if tip else None)
                    cur.execute(
                        f"UPDATE {self.tables.tracking} SET position = ? WHERE name = ?",
                        (rows[-1].position, TRACKING_NAME),
                    )
        except BaseException:
            self._forget()
            raise
        return self._committed(rows, generation, new_tip, waiting)

    def _batch_at(self, start: int, rows: list[Row], waiting: bool, tip: MerkleTip) -> tuple[int, bool] | None:
        """A batch where this engine committed the last one (PostgreSQL): the whole
        transaction in one pipeline, about one round trip instead of four, its first statement
        checking and moving the position (MOVE_POSITION_SQL). Not durable, as above."""
        try:
            with self.store.transaction(durable=False, pipelined=True) as cur:
                cur.execute(
                    MOVE_POSITION_SQL.format(tracking=self.tables.tracking),
                    (rows[-1].position, TRACKING_NAME, start, self._generation),
                )
                new_tip = self.apply(cur, rows, tip)
        except psycopg.errors.DivisionByZero:  # the position had moved: nothing was written
            self._forget()
            return None
        except BaseException:
            self._forget()
            raise
        return self._committed(rows, self._generation, new_tip, waiting)

    def _forget(self) -> None:
        """After a batch that did not commit: its folds may hold its effects, and where
        this engine left the log is no longer known."""
        self._folds.clear()
        self._start = self._tip = None

    def _committed(self, rows: list[Row], generation: int, tip: MerkleTip, waiting: bool) -> tuple[int, bool]:
        self._start = rows[-1].position
        self._tip = (self._start, generation, tip)
        return len(rows), waiting

    def bulk_load(self, progress: Progress | None = None) -> int:
        """Apply the log up to its current end to new, empty tables (a rebuild).

        Two passes over the log, each writing rows once and never reading them back,
        updating or deleting them, in memory that does not grow with the log:

        1. in log order, into the history and Merkle tables (appended in position order);
        2. in claim order (the event table's primary key), folding each claim whole into
           the claim, stance, subject and search tables.

        They write different tables, so on a log of `parallel_from` events or more the
        second runs in a process of its own beside the first: each is mostly Python, and
        two processes use two cores. Secondary indexes are built last, by sorting. Within
        each pass a reader thread fetches and decodes the next page while the current one
        is written. Events after the end seen at the start are left to :meth:`process_batch`.
        """
        with self.store.reading() as cur:
            start, generation = self._tracking(cur, lock=False)
        if start:
            raise RuntimeError(f"bulk_load fills empty tables; these are at position {start}")
        upto = self.ledger.max_position()
        began = time.perf_counter()
        with _no_cycle_collection(), self._bulk_pragmas():
            folder = _ClaimFolder(self, upto) if upto >= self.parallel_from else None
            try:
                done = self._load_log(upto, progress, folder)
                with self.store.transaction() as cur:  # while the claims are still being folded
                    self.tables.create_history_index(cur, generation)
                log.info("rebuild: %d events into history and the Merkle log, indexed, at %.2f s", done,
                         time.perf_counter() - began)
                if folder is None:
                    folded = self.fold_claims(upto, lambda n: _report(progress, done, n, upto))
                else:
                    folded = folder.wait(lambda n: _report(progress, done, n, upto))
                    self.helper_peak_rss_mib = folder.peak_rss_mib
            finally:
                if folder is not None:
                    folder.stop()
            log.info("rebuild: %d events folded into claims at %.2f s", folded, time.perf_counter() - began)
            with self.store.transaction() as cur:
                self.tables.create_indexes(cur, generation)
                cur.execute(f"UPDATE {self.tables.tracking} SET position = ? WHERE name = ?", (upto, TRACKING_NAME))
            log.info("rebuild: indexed at %.2f s", time.perf_counter() - began)
        self._folds.clear()
        return done

    @contextlib.contextmanager
    def _bulk_pragmas(self) -> Iterator[None]:
        """On SQLite, a bigger page cache while bulk loading (index builds sort in it)."""
        if self.store.backend != "sqlite":
            yield
            return
        with self.store.reading() as cur:
            cache = cur.execute("PRAGMA cache_size").fetchone()
            cur.execute(f"PRAGMA cache_size = {BULK_CACHE_KIB}")
        try:
            yield
        finally:
            with self.store.reading() as cur:
                cur.execute(f"PRAGMA cache_size = {int(cache[0]) if cache else -2000}")

    def _load_log(self, upto: int, progress: Progress | None, folder: _ClaimFolder | None) -> int:
        """Pass 1: the log up to `upto`, in log order, into the history and Merkle tables, and
        each registration's subjects and search entry (known from the registration alone:
        writing them here leaves less to pass 2, the longer of the two)."""

        def log_pages(after: int) -> tuple[tuple[list[HistoryRow], list[Registration]], int] | None:
            logged = [e for e in self._scanner.read(after, self.batch_size) if e.position <= upto]
            if not logged:
                return None
            registrations = [
                (e.claim_id, _registered(e), e.position) for e in logged if e.type == "ClaimRegistered"
            ]
            return ([_history_row(e) for e in logged], registrations), logged[-1].position

        done = 0
        for page, registrations in _read_ahead(log_pages, 0):
            with self.store.transaction() as cur:
                cur.copy_rows(self.tables.history, HISTORY_COLUMNS, page)
                self.merkle.append(cur, [(r[0], r[5]) for r in page])
                self._write_registrations(cur, registrations)
            done += len(page)
            _report(progress, done, folder.folded() if folder else 0, upto)
            if folder is not None:
                folder.check()
        return done

    def fold_claims(self, upto: int, on_page: Callable[[int], None] | None = None) -> int:
        """Pass 2: the log up to `upto`, claim by claim, folded into the claim and stance
        tables. Returns the number of events folded."""
        scanner = LogScanner(self.ledger, self.store.database)

        def claim_pages(after: ClaimKey | None) -> tuple[list[LoggedEvent], ClaimKey | None] | None:
            events, after = scanner.by_claim(after, upto, self.batch_size)
            return (events, after) if events else None

        folded = 0
        claim = _ClaimRun()  # the claim being folded: it may continue on the next page
        try:
            for events in _read_ahead(claim_pages, None):
                finished: list[_ClaimRun] = []
                for e in events:
                    if e.claim_id != claim.claim_id:
                        if claim.claim_id:
                            finished.append(claim)
                        claim = _ClaimRun(e.claim_id)
                    claim.add(e.version, e.position, e.body())
                with self.store.transaction() as cur:
                    self._insert_claims(cur, finished)
                folded += len(events)
                if on_page is not None:
                    on_page(folded)
            with self.store.transaction() as cur:
                self._insert_claims(cur, [claim] if claim.claim_id else [])
        finally:
            scanner.close()
        return folded

    def _insert_claims(self, cur: Cursor, claims: Sequence[_ClaimRun]) -> None:
        """The rows of claims folded whole, into tables that do not hold them yet."""
        views = [(c, c.fold.view()) for c in claims]
        cur.copy_rows(self.tables.claims, CLAIM_COLUMNS, [
            _claim_row(c.claim_id, v, c.reg_position, c.position) for c, v in views
        ])
        cur.copy_rows(self.tables.stances, STANCE_COLUMNS, [
            row for c, v in views for row in _stance_rows(c.claim_id, v, c.reg_position)
        ])
        cur.copy_rows(self.tables.reviews, REVIEW_COLUMNS, [
            row for c, v in views for row in _review_rows(c.claim_id, v, c.reg_position)
        ])

    def _tracking(self, cur: Cursor, *, lock: bool) -> tuple[int, int]:
        suffix = " FOR UPDATE" if lock and cur.backend == "postgres" else ""
        row = cur.execute(
            f"SELECT position, generation FROM {self.tables.tracking} WHERE name = ?{suffix}",
            (TRACKING_NAME,),
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def _pass_gaps(
        self, start: int, logged: Sequence[LoggedEvent]
    ) -> tuple[Sequence[LoggedEvent], bool]:
        expected = start + 1
        now = time.monotonic()
        gaps: list[tuple[int, int, int]] = []  # (index of the event after it, first id, last id)
        for i, e in enumerate(logged):
            if e.position != expected:
                gaps.append((i, expected, e.position - 1))
                # Every gap in sight starts its wait now: gaps seen together are passed
                # together, so many writers' rollbacks cost one wait, not one each.
                self._gaps_seen.setdefault(expected, now)
            expected = e.position + 1
        for i, first, last in gaps:
            if now - self._gaps_seen[first] < self.gap_wait:
                return logged[:i], True
            log.warning("passing gap in notification ids %d..%d", first, last)
            self._gaps_seen.pop(first, None)
        return logged, False

    # Applying events.
    def apply(self, cur: Cursor, rows: Sequence[Row], tip: MerkleTip | None = None) -> MerkleTip:
        """Apply events in log order; returns the Merkle log's new tip (`tip`: its current one, if known)."""
        self._load_folds(cur, {r.claim_id for r in rows if r.claim_id not in self._folds})
        self._insert_history(cur, rows)
        new_tip = self.merkle.append(cur, [(r.position, r.hash) for r in rows], tip)
        dirty: dict[str, ProjectedFold] = {}
        registered: list[tuple[str, ClaimFold, int]] = []
        for r in rows:
            fold = self._folds.get(r.claim_id)
            if fold is None or fold.version != r.version - 1:
                fold = self._reload(cur, r.claim_id, r.version)
            fold.apply(r.body)
            if r.type == "ClaimRegistered":
                registered.append((r.claim_id, fold, r.position))
            dirty[r.claim_id] = fold
            self._remember(r.claim_id, fold)
        reg_positions = {claim_id: pos for claim_id, _, pos in registered}
        self._write_registrations(cur, registered)
        self._write_views(cur, dirty, reg_positions, rows)
        return new_tip

    def _insert_history(self, cur: Cursor, rows: Sequence[Row]) -> None:
        cur.copy_rows(
            self.tables.history, HISTORY_COLUMNS,
            [(r.position, r.claim_id, r.version, r.type, r.act_id, r.hash, r.body_text) for r in rows],
            HISTORY_PG_TYPES,
        )

    def _write_registrations(self, cur: Cursor, registered: list[tuple[str, ClaimFold, int]]) -> None:
        t = self.tables
        cur.copy_rows(
            t.subjects, SUBJECT_COLUMNS,
            [(s, cid, pos) for cid, fold, pos in registered for s in fold.subjects],
            SUBJECT_PG_TYPES,
        )
        cur.copy_rows(
            t.search, SEARCH_COLUMNS, [(fold.statement, cid) for cid, fold, _ in registered], SEARCH_PG_TYPES,
        )

    def _write_views(
        self, cur: Cursor, dirty: dict[str, ProjectedFold], reg_positions: dict[str, int], rows: Sequence[Row]
    ) -> None:
        t = self.tables
        last_position = {r.claim_id: r.position for r in rows}
        for cid, fold in dirty.items():
            if cid not in reg_positions and fold.reg_position:
                reg_positions[cid] = fold.reg_position
        missing = [cid for cid in dirty if cid not in reg_positions]
        reg_positions.update(self._reg_positions(cur, missing))
        for cid, fold in dirty.items():
            fold.reg_position = reg_positions[cid]
        views = {cid: fold.view() for cid, fold in dirty.items()}
        cur.upsert_rows(
            t.claims, CLAIM_COLUMNS, CLAIM_PG_TYPES,
            [_claim_row(cid, v, reg_positions[cid], last_position[cid]) for cid, v in views.items()],
            "ON CONFLICT (claim_id) DO UPDATE SET status = excluded.status, view = excluded.view,"
            " version = excluded.version, position = excluded.position, updated_at = excluded.updated_at",
        )
        self._write_stances(cur, dirty, views, reg_positions)
        self._write_reviews(cur, dirty, views, reg_positions)

    def _write_stances(
        self, cur: Cursor, dirty: dict[str, ProjectedFold], views: dict[str, dict[str, Any]],
        reg_positions: dict[str, int],
    ) -> None:
        """The dirty claims' stance rows: only those that changed, for a claim whose rows the
        engine wrote last (one act changes one holder's row, unless it changes the claim's
        status, which every row carries); every row afresh for any other."""
        changes: list[RowChange] = []
        for cid, fold in dirty.items():
            if not fold.acts:
                continue
            rows = {row[0]: row for row in _stance_rows(cid, views[cid], reg_positions[cid])}
            changes.append((cid, rows, fold.stance_rows))
            fold.stance_rows = rows
        self._write_changed_rows(
            cur, self.tables.stances, "holder_id", STANCE_COLUMNS, STANCE_PG_TYPES, changes,
            "ON CONFLICT (holder_id, claim_id) DO UPDATE SET party_id = excluded.party_id,"
            " stance = excluded.stance, act_id = excluded.act_id, said_at = excluded.said_at,"
            " reg_position = excluded.reg_position, item = excluded.item",
        )

    def _write_reviews(
        self, cur: Cursor, dirty: dict[str, ProjectedFold], views: dict[str, dict[str, Any]],
        reg_positions: dict[str, int],
    ) -> None:
        """The dirty claims' review rows, as `_write_stances` writes stance rows (a claim
        never reviewed has none, and costs nothing here)."""
        changes: list[RowChange] = []
        for cid, fold in dirty.items():
            if not fold.reviewed:
                continue
            rows = {row[0]: row for row in _review_rows(cid, views[cid], reg_positions[cid])}
            changes.append((cid, rows, fold.review_rows))
            fold.review_rows = rows
        self._write_changed_rows(
            cur, self.tables.reviews, "reviewer_id", REVIEW_COLUMNS, REVIEW_PG_TYPES, changes,
            "ON CONFLICT (reviewer_id, claim_id) DO UPDATE SET act_id = excluded.act_id,"
            " reg_position = excluded.reg_position, item = excluded.item",
        )

    @staticmethod
    def _write_changed_rows(
        cur: Cursor, table: str, key_column: str, columns: Sequence[str], pg_types: Sequence[str],
        changes: list[RowChange], on_conflict: str,
    ) -> None:
        """Per-claim rows keyed by `key_column` (a holder, a reviewer), from each claim's rows now
        and those the engine wrote last (None: unknown, so all are deleted and written again):
        only the changed rows written, the vanished ones deleted."""
        rewrite: list[str] = []  # claims whose rows are all deleted and written again
        gone: list[tuple[str, str]] = []  # (key, claim_id) of rows no longer there
        write: list[tuple[Any, ...]] = []
        for cid, rows, old in changes:
            if old is None:
                rewrite.append(cid)
                write.extend(rows.values())
            else:
                write.extend(row for key, row in rows.items() if old.get(key) != row)
                gone.extend((key, cid) for key in old if key not in rows)
        for chunk in _chunks(rewrite, 500):
            where, params = cur.in_list("claim_id", chunk)
            cur.execute(f"DELETE FROM {table} WHERE {where}", params)
        if gone:
            cur.delete_pairs(table, (key_column, "claim_id"), gone)
        cur.upsert_rows(table, columns, pg_types, write, on_conflict)

    def _reg_positions(self, cur: Cursor, claim_ids: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk in _chunks(claim_ids, 500):
            where, params = cur.in_list("claim_id", chunk)
            found.update(
                (str(cid), int(pos)) for cid, pos in cur.execute(
                    f"SELECT claim_id, position FROM {self.tables.history} WHERE version = 1 AND {where}", params,
                ).fetchall()
            )
        return found

    def _load_folds(self, cur: Cursor, claim_ids: set[str]) -> None:
        """Fold the committed history of claims not in the cache, in a few queries."""
        ids = sorted(claim_ids)
        for chunk in _chunks(ids, 500):
            where, params = cur.in_list("claim_id", chunk)
            folds: dict[str, ProjectedFold] = {}
            for claim_id, body in cur.execute(
                f"SELECT claim_id, body FROM {self.tables.history} WHERE {where} ORDER BY claim_id, version", params,
            ).fetchall():
                fold = folds.setdefault(claim_id, ProjectedFold())
                fold.apply(orjson.loads(body))
            for claim_id in chunk:
                self._remember(claim_id, folds.get(claim_id, ProjectedFold()))

    def _reload(self, cur: Cursor, claim_id: str, version: int) -> ProjectedFold:
        fold = ProjectedFold()
        for (body,) in cur.execute(
            f"SELECT body FROM {self.tables.history} WHERE claim_id = ? AND version < ? ORDER BY version",
            (claim_id, version),
        ).fetchall():
            fold.apply(orjson.loads(body))
        return fold

    def _remember(self, claim_id: str, fold: ProjectedFold) -> None:
        self._folds[claim_id] = fold
        self._folds.move_to_end(claim_id)
        while len(self._folds) > self.cache_size:
            self._folds.popitem(last=False)

    # Running.
    def run(self, stop: threading.Event, poll_interval: float = 0.5) -> None:
        """Follow the log until `stop` is set, surviving database outages."""
        waker = Waker(self.ledger, self.store.database) if self.store.backend == "postgres" else None
        began = -math.inf  # when the last batch that applied events (and left none behind) began
        spacing = self.batch_interval
        try:
            while not stop.is_set():
                if not self._leads(waker):
                    stop.wait(self.lease_retry)
                    continue
                # A batch costs a few round trips and a commit whatever its size: under a
                # stream of writes, batches are spaced by at least the interval, and by
                # BATCH_SPACING times the CPU the last one took, so that while it keeps up the
                # engine takes at most about 1/(1 + BATCH_SPACING) of a core (sharing a process
                # with the API, it leaves the API its interpreter lock): a busier process gets
                # fewer, larger batches; an idle one a short lag. CPU, not wall time: waiting
                # for the lock or the database is no reason to wait longer.
                rest = began + spacing - time.monotonic()
                if rest > 0 and stop.wait(rest):
                    break
                started, cpu = time.monotonic(), time.thread_time()
                try:
                    applied, waiting = self.process_batch()
                except (StoreUnavailable, PersistenceError, OSError) as e:
                    log.warning("projection paused: %s", e)
                    stop.wait(1.0)
                    continue
                except Exception as e:
                    if self.failure is None:  # the traceback once; the retries every second are quiet
                        log.exception("projection batch failed; retrying")
                    try:
                        after = f" after position {self.position()}"
                    except Exception:  # the error is the news; where it stopped, a detail
                        after = ""
                    self.failure = (f"the events{after} cannot be projected ({type(e).__name__}: {str(e)[:800]}); "
                                    "retried every second. `claims verify` finds an event that breaks the rules")
                    stop.wait(1.0)
                    continue
                self.failure = None
                if applied:
                    began = started if applied < self.batch_size else -math.inf
                    spacing = max(self.batch_interval, (time.thread_time() - cpu) * BATCH_SPACING)
                if applied and not waiting:
                    continue
                if waiting:
                    stop.wait(self.gap_wait / 4)
                elif waker is not None:
                    waker.wait(poll_interval, stop)
                else:
                    stop.wait(0.02)
        finally:
            if waker is not None:
                waker.close()
            self.lease.release()

    def _leads(self, waker: Waker | None) -> bool:
        """Whether this engine holds the lease and applies batches; a standby's takeover
        starts from the tracking position the last leader left, not from what it knew."""
        was = self.lease.held
        leads = self.lease.keep()
        if leads and not was:
            self._forget()
            log.info("projection engine leads (lease taken)")
        elif was and not leads:
            self._forget()
            log.warning("projection engine stands by: it lost its lease")
        if not leads and waker is not None:
            waker.close()  # a standby listens to nothing
        return leads

    def start_thread(self) -> threading.Thread:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, args=(self._stop,), name="projections", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._scanner.close()

    # Rebuild, blue/green.
    def rebuild(self, progress: Progress | None = None) -> int:
        """Rebuild every read model from the log beside the live tables, then swap them in.

        Reads keep answering from the live tables until the swap, which is one short
        transaction that also applies whatever arrived during the rebuild.
        """
        fresh = ProjectionEngine(
            self.ledger, self.store, prefix=REBUILD, batch_size=max(self.batch_size, 10_000),
            gap_wait=0.0, cache_size=self.cache_size, parallel_from=self.parallel_from,
        )
        retired = Tables(RETIRED)
        try:
            with self.store.transaction() as cur:
                generation = self._tracking(cur, lock=False)[1] + 1
                for prefix in (REBUILD, RETIRED):  # left by a rebuild that was stopped
                    Tables(prefix).drop(cur)
                    MerkleLog(prefix).drop_tables(cur)
                fresh.tables.create(cur, generation=generation, indexes=False)
                fresh.merkle.create_tables(cur)
                cur.execute(
                    f"INSERT INTO {fresh.tables.tracking} (name, position, generation) VALUES (?, 0, ?)",
                    (TRACKING_NAME, generation),
                )
            applied = fresh.bulk_load(progress=progress)
            applied += fresh.catch_up()  # what arrived meanwhile, leaving the swap little to do
            with self.store.transaction() as cur:
                if cur.backend == "postgres":
                    cur.execute(f"LOCK TABLE {self.tables.tracking} IN EXCLUSIVE MODE")
                position, _ = fresh._tracking(cur, lock=True)
                while True:  # the tail that arrived meanwhile, inside the swap transaction
                    logged = fresh._scanner.read(position, fresh.batch_size)
                    if not logged:
                        break
                    rows = [row_of(e) for e in logged]
                    fresh.apply(cur, rows)
                    position = rows[-1].position
                    applied += len(rows)
                cur.execute(f"UPDATE {fresh.tables.tracking} SET position = ? WHERE name = ?", (position, TRACKING_NAME))
                # Renames only: dropping big tables takes a while, and this transaction
                # holds the lock writers need.
                self.tables.rename_to(cur, retired)
                fresh.tables.rename_to(cur, self.tables)
                for name in MERKLE_TABLES:
                    cur.execute(f"ALTER TABLE {self.tables.prefix}{name} RENAME TO {RETIRED}{name}")
                    cur.execute(f"ALTER TABLE {REBUILD}{name} RENAME TO {self.tables.prefix}{name}")
            log.info("rebuild: swapped in; dropping the tables it retired")
            for name in [*retired.all(self.store.backend), *(f"{RETIRED}{m}" for m in MERKLE_TABLES)]:
                with self.store.transaction() as cur:  # one at a time: each holds the write lock
                    cur.execute(f"DROP TABLE IF EXISTS {name}")
        finally:
            fresh.stop()
        self.helper_peak_rss_mib = fresh.helper_peak_rss_mib
        self._folds.clear()
        return applied


def _report(progress: Progress | None, logged: int, folded: int, upto: int) -> None:
    """Progress of a bulk load, in events: each pass is half the work."""
    if progress is not None and upto:
        progress((logged + folded) // 2, upto)


class _ClaimFolder:
    """Pass 2 of a bulk load (:meth:`ProjectionEngine.fold_claims`) in a process of its own.

    A plain subprocess (``python -m projections.engine``), not multiprocessing: it must not
    re-run the caller's main module. It prints how many events it has folded, page by page.
    """

    def __init__(self, engine: ProjectionEngine, upto: int) -> None:
        self._folded = 0
        self.peak_rss_mib = 0.0  # the process's own peak, as it reports it when done
        self._process = subprocess.Popen(  # noqa: S603 (this interpreter, our module, our arguments)
            [sys.executable, "-m", "projections.engine", "fold-claims", engine.tables.prefix, str(upto),
             str(engine.batch_size)],
            env={**os.environ, "LEDGER_DATABASE_URL": engine.store.database.url},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_progress, name="rebuild-claims-progress", daemon=True),
            threading.Thread(target=self._read_errors, name="rebuild-claims-errors", daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_progress(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            with contextlib.suppress(ValueError):
                if line.startswith("peak-rss-kib "):
                    self.peak_rss_mib = int(line.split()[1]) / 1024
                else:
                    self._folded = int(line)

    def _read_errors(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self._stderr.append(line.rstrip())
            del self._stderr[:-20]

    def folded(self) -> int:
        return self._folded

    def check(self) -> None:
        """Raise what the process failed with, if it has."""
        if self._process.poll() not in (0, None):
            self._fail()

    def wait(self, on_page: Callable[[int], None]) -> int:
        while True:
            try:
                self._process.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                on_page(self._folded)
        for reader in self._readers:
            reader.join(timeout=5)
        if self._process.returncode != 0:
            self._fail()
        on_page(self._folded)
        return self._folded

    def _fail(self) -> None:
        for reader in self._readers:
            reader.join(timeout=5)
        why = self._stderr[-1] if self._stderr else f"it exited with code {self._process.returncode}"
        raise RuntimeError(f"folding claims in a second process failed: {why}")

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)


def _fold_claims_main(argv: list[str]) -> int:
    """The second process of a bulk load: ``fold-claims PREFIX UPTO BATCH_SIZE``."""
    if len(argv) != 4 or argv[0] != "fold-claims":
        print("usage: python -m projections.engine fold-claims PREFIX UPTO BATCH_SIZE", file=sys.stderr)
        return 2
    prefix, upto, batch_size = argv[1], int(argv[2]), int(argv[3])
    database = Database.from_url()
    ledger = open_ledger(database)
    store = ReadStore(database, pool_size=2)
    try:
        engine = ProjectionEngine(ledger, store, prefix=prefix, batch_size=batch_size)
        with _no_cycle_collection():  # no bigger page cache: this process builds no index
            engine.fold_claims(upto, lambda n: print(n, flush=True))
    finally:
        store.close()
        ledger.close()
    with contextlib.suppress(OSError, StopIteration, IndexError):  # VmHWM: Linux's peak RSS of this process
        status = Path("/proc/self/status").read_text().splitlines()
        print("peak-rss-kib", next(line for line in status if line.startswith("VmHWM:")).split()[1], flush=True)
    return 0


class Waker:
    """Wakes a follower of the log on PostgreSQL NOTIFY; a timeout keeps polling as the fallback.

    The engine and the stream follower (service/follower.py) both wait on it."""

    def __init__(self, ledger: Ledger, database: Database) -> None:
        self.database = database
        self.conn: Any = None
        self.channel = getattr(ledger.recorder, "channel_name", "ledger_events")

    def _connect(self) -> None:
        self.conn = psycopg.connect(**self.database.connect_kwargs(), autocommit=True)  # type: ignore[arg-type]
        self.conn.execute(f'LISTEN "{self.channel}"')

    def wait(self, timeout: float, stop: threading.Event) -> None:
        try:
            if self.conn is None:
                self._connect()
            for _ in self.conn.notifies(timeout=timeout, stop_after=1):
                break
        except Exception:
            self.close()
            stop.wait(min(timeout, 0.5))

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


if __name__ == "__main__":
    sys.exit(_fold_claims_main(sys.argv[1:]))
