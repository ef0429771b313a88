"""The projection engine: follows the ledger's notification log into the read models.

Each batch of events is applied in one read-model transaction that also moves the
tracking position, so a crash at any instant neither skips nor double-applies an event.
Claims' folds are cached between batches; the cache is only a shortcut for re-reading
the claim's history rows, which live in the same transaction.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from eventsourcing.persistence import PersistenceError

from domain.errors import StoreUnavailable
from domain.fold import ClaimFold
from domain.ledger import Ledger, LoggedEvent
from projections.db import Cursor, ReadStore
from projections.log import LogScanner
from projections.merkle import MerkleLog
from projections.tables import LIVE, REBUILD, Tables

log = logging.getLogger("claims.projections")

TRACKING_NAME = "ledger"
Progress = Callable[[int, int], None]


class ProjectedFold(ClaimFold):
    """The fold without each act's data: the engine caches thousands of these."""

    keeps_data = False


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
    data = orjson.loads(event.data_json)
    body = {
        "claim_id": event.claim_id, "version": event.version, "type": event.type,
        "recorded_at": event.recorded_at, "prev_hash": event.prev_hash, "data": data, "hash": event.hash,
    }
    return Row(
        event.position, event.claim_id, event.version, event.type, data.get("act_id"), event.hash,
        event.body_text(), body,
    )


class ProjectionEngine:
    """Keeps the read-model tables (status, history, stances, search, Merkle log) current."""

    def __init__(
        self, ledger: Ledger, store: ReadStore, *, prefix: str = LIVE, batch_size: int = 2000,
        gap_wait: float = 0.2, cache_size: int = 5_000,
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
        self._folds: OrderedDict[str, ClaimFold] = OrderedDict()
        self._generation = -1
        self._gaps_seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._position = 0
        self._scanner = LogScanner(ledger)
        self.events_applied = 0

    # Schema.
    def ensure_tables(self) -> None:
        with self.store.transaction() as cur:
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
            row = cur.execute(
                f"SELECT position FROM {self.tables.tracking} WHERE name = ?", (TRACKING_NAME,)
            ).fetchone()
        self._position = int(row[0]) if row else 0
        return self._position

    def lag(self) -> int:
        return max(0, self.ledger.max_position() - self.position())

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
        start = self._read_position()
        logged = self._scanner.read(start, self.batch_size)
        if not logged:
            return 0, False
        usable, waiting = self._pass_gaps(start, logged)
        if not usable:
            return 0, waiting
        rows = [row_of(e) for e in usable]
        try:
            with self.store.transaction() as cur:
                position, generation = self._tracking(cur, lock=True)
                if generation != self._generation:
                    self._folds.clear()
                    self._generation = generation
                if position != start:  # another engine moved on: start again from there
                    return 0, False
                self.apply(cur, rows)
                cur.execute(
                    f"UPDATE {self.tables.tracking} SET position = ? WHERE name = ?",
                    (rows[-1].position, TRACKING_NAME),
                )
        except BaseException:
            self._folds.clear()  # they may hold this batch's uncommitted effects
            raise
        self._position = rows[-1].position
        self.events_applied += len(rows)
        return len(rows), waiting

    def bulk_load(self, progress: Progress | None = None) -> int:
        """Apply the whole log to tables no one else writes (a rebuild), reading ahead.

        A reader thread decodes the next pages while this one writes the current page:
        the database's own work releases the GIL, so the two overlap on two cores.
        """
        pages: queue.Queue[list[Row] | BaseException | None] = queue.Queue(maxsize=2)
        stop = threading.Event()
        start = self._read_position()
        total = self.ledger.max_position()

        def read_ahead() -> None:
            after = start
            try:
                while not stop.is_set():
                    logged = self._scanner.read(after, self.batch_size)
                    if not logged:
                        break
                    pages.put([row_of(e) for e in logged])
                    after = logged[-1].position
                pages.put(None)
            except BaseException as e:  # handed to the writing thread, which raises it
                pages.put(e)

        reader = threading.Thread(target=read_ahead, name="rebuild-reader", daemon=True)
        reader.start()
        done = 0
        try:
            while (page := pages.get()) is not None:
                if isinstance(page, BaseException):
                    raise page
                with self.store.transaction() as cur:
                    self.apply(cur, page)
                    cur.execute(
                        f"UPDATE {self.tables.tracking} SET position = ? WHERE name = ?",
                        (page[-1].position, TRACKING_NAME),
                    )
                done += len(page)
                if progress is not None:
                    progress(done, max(total, page[-1].position))
        finally:
            stop.set()
            while reader.is_alive():  # unblock a reader waiting to put a page
                with contextlib.suppress(queue.Empty):
                    pages.get(timeout=0.05)
            self._folds.clear()
        return done

    def _read_position(self) -> int:
        with self.store.reading() as cur:
            return self._tracking(cur, lock=False)[0]

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
    def apply(self, cur: Cursor, rows: Sequence[Row]) -> None:
        t = self.tables
        self._load_folds(cur, {r.claim_id for r in rows if r.claim_id not in self._folds})
        cur.copy_rows(
            t.history, ("position", "claim_id", "version", "type", "act_id", "hash", "body"),
            [(r.position, r.claim_id, r.version, r.type, r.act_id, r.hash, r.body_text) for r in rows],
        )
        self.merkle.append(cur, [(r.position, r.hash) for r in rows])
        dirty: dict[str, ClaimFold] = {}
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

    def _write_registrations(self, cur: Cursor, registered: list[tuple[str, ClaimFold, int]]) -> None:
        t = self.tables
        cur.copy_rows(
            t.subjects, ("subject", "claim_id", "reg_position"),
            [(s, cid, pos) for cid, fold, pos in registered for s in fold.subjects],
        )
        if cur.backend == "sqlite":
            cur.executemany(
                f"INSERT INTO {t.search} (statement, claim_id) VALUES (?, ?)",
                [(fold.statement, cid) for cid, fold, _ in registered],
            )

    def _write_views(
        self, cur: Cursor, dirty: dict[str, ClaimFold], reg_positions: dict[str, int], rows: Sequence[Row]
    ) -> None:
        t = self.tables
        last_position = {r.claim_id: r.position for r in rows}
        missing = [cid for cid in dirty if cid not in reg_positions]
        reg_positions.update(self._reg_positions(cur, missing))
        views = {cid: fold.view() for cid, fold in dirty.items()}
        cur.upsert_rows(
            t.claims,
            ("claim_id", "key", "statement", "language", "status", "view", "version", "reg_position", "position",
             "registered_at", "updated_at"),
            ("text", "text", "text", "text", "text", "text", "int", "bigint", "bigint", "text", "text"),
            [
                (cid, v["key"], v["statement"], v["language"], v["status"], orjson.dumps(v).decode(),
                 v["version"], reg_positions[cid], last_position[cid], v["registered_at"], v["updated_at"])
                for cid, v in views.items()
            ],
            "ON CONFLICT (claim_id) DO UPDATE SET status = excluded.status, view = excluded.view,"
            " version = excluded.version, position = excluded.position, updated_at = excluded.updated_at",
        )
        with_acts = [cid for cid, fold in dirty.items() if fold.acts]
        if not with_acts:
            return
        for chunk in _chunks(with_acts, 500):
            marks = ",".join("?" * len(chunk))
            cur.execute(f"DELETE FROM {t.stances} WHERE claim_id IN ({marks})", chunk)
        cur.copy_rows(
            t.stances,
            ("holder_id", "claim_id", "party_id", "stance", "act_id", "said_at", "reg_position", "item"),
            [
                (s["holder"]["id"], cid, s["party"]["id"], s["stance"], s["act_id"], s["said_at"],
                 reg_positions[cid], orjson.dumps(
                     {"claim_id": cid, "key": views[cid]["key"], "statement": views[cid]["statement"],
                      "status": views[cid]["status"], **s}).decode())
                for cid in with_acts for s in views[cid]["stances"]
            ],
        )

    def _reg_positions(self, cur: Cursor, claim_ids: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk in _chunks(claim_ids, 500):
            marks = ",".join("?" * len(chunk))
            found.update(
                (str(cid), int(pos)) for cid, pos in cur.execute(
                    f"SELECT claim_id, position FROM {self.tables.history}"
                    f" WHERE version = 1 AND claim_id IN ({marks})", chunk,
                ).fetchall()
            )
        return found

    def _load_folds(self, cur: Cursor, claim_ids: set[str]) -> None:
        """Fold the committed history of claims not in the cache, in a few queries."""
        ids = sorted(claim_ids)
        for chunk in _chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            folds: dict[str, ClaimFold] = {}
            for claim_id, body in cur.execute(
                f"SELECT claim_id, body FROM {self.tables.history} WHERE claim_id IN ({marks})"
                " ORDER BY claim_id, version", chunk,
            ).fetchall():
                fold = folds.setdefault(claim_id, ProjectedFold())
                fold.apply(orjson.loads(body))
            for claim_id in chunk:
                self._remember(claim_id, folds.get(claim_id, ProjectedFold()))

    def _reload(self, cur: Cursor, claim_id: str, version: int) -> ClaimFold:
        fold = ProjectedFold()
        for (body,) in cur.execute(
            f"SELECT body FROM {self.tables.history} WHERE claim_id = ? AND version < ? ORDER BY version",
            (claim_id, version),
        ).fetchall():
            fold.apply(orjson.loads(body))
        return fold

    def _remember(self, claim_id: str, fold: ClaimFold) -> None:
        self._folds[claim_id] = fold
        self._folds.move_to_end(claim_id)
        while len(self._folds) > self.cache_size:
            self._folds.popitem(last=False)

    # Running.
    def run(self, stop: threading.Event, poll_interval: float = 0.5) -> None:
        """Follow the log until `stop` is set, surviving database outages."""
        waker = _Waker(self.ledger) if self.store.backend == "postgres" else None
        try:
            while not stop.is_set():
                try:
                    applied, waiting = self.process_batch()
                except (StoreUnavailable, PersistenceError, OSError) as e:
                    log.warning("projection paused: %s", e)
                    stop.wait(1.0)
                    continue
                except Exception:
                    log.exception("projection batch failed; retrying")
                    stop.wait(1.0)
                    continue
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
            gap_wait=0.0, cache_size=self.cache_size,
        )
        try:
            with self.store.transaction() as cur:
                generation = self._current_generation(cur) + 1
                fresh.tables.drop(cur)
                _drop_merkle(cur, REBUILD)
                fresh.tables.create(cur, generation=generation)
                fresh.merkle.create_tables(cur)
                cur.execute(
                    f"INSERT INTO {fresh.tables.tracking} (name, position, generation) VALUES (?, 0, ?)",
                    (TRACKING_NAME, generation),
                )
            applied = fresh.bulk_load(progress=progress)
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
                self.tables.drop(cur)
                _drop_merkle(cur, self.tables.prefix)
                fresh.tables.rename_to(cur, self.tables)
                for name in MERKLE_TABLES:
                    cur.execute(f"ALTER TABLE {REBUILD}{name} RENAME TO {self.tables.prefix}{name}")
        finally:
            fresh.stop()
        self._folds.clear()
        return applied

    def _current_generation(self, cur: Cursor) -> int:
        row = cur.execute(
            f"SELECT generation FROM {self.tables.tracking} WHERE name = ?", (TRACKING_NAME,)
        ).fetchone()
        return int(row[0]) if row else 0


class _Waker:
    """Wakes the engine on PostgreSQL NOTIFY; a timeout keeps polling as the fallback."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.conn: Any = None
        self.channel = getattr(ledger.recorder, "channel_name", "ledger_events")

    def _connect(self) -> None:
        import psycopg

        self.conn = psycopg.connect(**ledger_connect_kwargs(self.ledger), autocommit=True)  # type: ignore[arg-type]
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


MERKLE_TABLES = ("merkle_leaves", "merkle_nodes")


def _drop_merkle(cur: Cursor, prefix: str) -> None:
    for name in MERKLE_TABLES:
        cur.execute(f"DROP TABLE IF EXISTS {prefix}{name}")


def ledger_connect_kwargs(ledger: Ledger) -> dict[str, object]:
    return ledger.database.connect_kwargs()


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
