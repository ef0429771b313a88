"""`claims audit --mirror DIR`: a verified local mirror of a remote ledger, and audits that cost
what is new.

The mirror is one SQLite file (DIR/mirror.sqlite, WAL mode) holding every verified feed item,
the compact range of the Merkle tree (the roots of the complete subtrees that tile its leaves:
enough to compute its root and to go on appending), each claim's last version and hash, and
the kept checkpoint. An audit with a mirror is the audit of audit/remote.py resumed: the same
checkpoint checks (pinned key, witnesses, the consistency proof from the kept checkpoint, whose
root the mirror recomputes rather than trusting the server's), the same chain rules, and the
same comparison of folded views with served ones, on the events after the mirror's tree size
only. The claims those events touch are folded from their whole history in the mirror; the
others are compared by a random sample (`sample`) or all (`full`).

Everything an audit adds is written in one transaction, committed only when every check holds:
killed at any instant, the mirror is at its last verified state.

The mirror answers `claims audit show` and `history` offline with the server's own view
functions: the domain fold (`domain.fold.fold_claim`) and the history's item shape
(`projections.queries.history_item`).
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Set
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

import client
from audit.chain import ChainCheck
from audit.remote import (
    LIST_PAGE,
    AuditAbort,
    AuditReport,
    Json,
    Kept,
    Progress,
    Remote,
    WitnessPolicy,
    _pull,
    _Replay,
    check_root,
    compare_views,
    kept_text,
    new_checkpoint,
    parse_kept,
    pin,
    read_kept,
    save_checkpoint,
)
from audit.signing import PinnedKey, write_private
from domain.errors import InvalidInput, LedgerError
from domain.fold import ClaimFold, fold_claim, select_events
from domain.merkle import TreeHasher
from domain.values import claim_ids_for_ref
from projections.queries import history_item

FILE = "mirror.sqlite"
STATUS = "status.json"
DEFAULT_SAMPLE = 100
COMPARE_BATCH = 1000
INSERT_BATCH = 2000

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    leaf INTEGER PRIMARY KEY, position INTEGER NOT NULL, claim_id TEXT NOT NULL, version INTEGER NOT NULL,
    hash TEXT NOT NULL, body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_claim ON events (claim_id, version);
CREATE TABLE IF NOT EXISTS subtrees (level INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS claims (claim_id TEXT PRIMARY KEY, key TEXT, version INTEGER NOT NULL, hash TEXT NOT NULL);
"""


class Mirror:
    """The mirror in DIR: what the last successful audit verified, and nothing else."""

    def __init__(self, directory: Path, *, create: bool = True) -> None:
        self.directory = directory
        self.path = directory / FILE
        if not create and not self.path.exists():
            raise InvalidInput(f"{directory} holds no mirror ({FILE}): make one with `claims audit --mirror {directory}`")
        if directory.exists() and not directory.is_dir():
            raise InvalidInput(f"--mirror {directory} is a file, not a directory")
        directory.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise InvalidInput(f"{self.path} is not a mirror `claims audit` can open ({e}); remove it to start "
                               "again") from None
        self._pending: list[tuple[int, int, str, int, str, str]] = []

    def close(self) -> None:
        self.db.close()

    # -- What it holds ----------------------------------------------------------------------------

    def meta(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    @property
    def tree_size(self) -> int:
        return int(self.meta("tree_size") or 0)

    @property
    def last_position(self) -> int:
        return int(self.meta("last_position") or 0)

    def kept(self) -> Kept | None:
        text = self.meta("kept")
        return None if text is None else parse_kept(text.encode(), self.path)

    def hasher(self) -> TreeHasher:
        subtrees = [bytes(h) for (h,) in self.db.execute("SELECT hash FROM subtrees ORDER BY level")]
        try:
            return TreeHasher.resume(self.tree_size, subtrees)
        except ValueError as e:
            raise InvalidInput(f"the mirror {self.path} is damaged: {e}; remove it to start again") from None

    def heads(self) -> dict[str, tuple[int, str]]:
        return {c: (v, h) for c, v, h in self.db.execute("SELECT claim_id, version, hash FROM claims")}

    def resolve(self, ref: str) -> str | None:
        """The id of the claim a UUID or key names, as the server resolves it."""
        for claim_id in claim_ids_for_ref(ref):
            if self.db.execute("SELECT 1 FROM claims WHERE claim_id = ?", (str(claim_id),)).fetchone():
                return str(claim_id)
        return None

    def rows(self, claim_id: str) -> list[tuple[int, Json]]:
        """A claim's events in order: (log position, body with its hash)."""
        found = []
        for position, digest, text in self.db.execute(
            "SELECT position, hash, body FROM events WHERE claim_id = ? ORDER BY version", (claim_id,)
        ):
            body = orjson.loads(text)
            body["hash"] = digest
            found.append((int(position), body))
        return found

    # -- The server's answers, from the mirror alone --------------------------------------------------

    def claim_at(self, ref: str, version: int | None = None, recorded_as_of: datetime | None = None,
                 said_as_of: datetime | None = None) -> Json | None:
        """GET /v1/claims/{ref} for the same cut (projections/queries.py `claim_at`)."""
        claim_id = self.resolve(ref)
        if claim_id is None:
            return None
        bodies = [body for _, body in self.rows(claim_id)]
        if version is not None and version > len(bodies):
            return None
        return fold_claim(bodies, version=version, recorded_as_of=recorded_as_of, said_as_of=said_as_of)

    def history_at(self, ref: str, version: int | None = None, recorded_as_of: datetime | None = None,
                   said_as_of: datetime | None = None) -> Json | None:
        """GET /v1/claims/{ref}/history for the same cut (projections/queries.py `history_at`)."""
        claim_id = self.resolve(ref)
        if claim_id is None:
            return None
        rows = self.rows(claim_id)
        if version is not None and version > len(rows):
            return None
        position_of = {id(body): position for position, body in rows}
        chosen = select_events((b for _, b in rows), version=version, recorded_as_of=recorded_as_of,
                               said_as_of=said_as_of)
        if not chosen or chosen[0]["type"] != "ClaimRegistered":
            return None
        return {"claim_id": claim_id, "events": [history_item(position_of[id(b)], b) for b in chosen]}

    # -- Moving from one verified state to the next -----------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside is committed together, or (on any exception) not at all."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise InvalidInput(f"the mirror {self.path} is busy ({e}): another `claims audit` is using it") from None
        try:
            yield
        except BaseException:
            self._pending.clear()
            self.db.execute("ROLLBACK")
            raise

    def add(self, leaf: int, item: Json) -> None:
        """A feed item taken by the replay (inside the transaction). The body is kept as JSON text, not
        as its RFC 8785 bytes, which write 2.0 as 2: folded again, it must give the values served."""
        body = item["body"]
        try:  # orjson writes what json would here, several times faster
            text = orjson.dumps(body).decode()
        except orjson.JSONEncodeError:  # a lone surrogate, an integer past 64 bits
            text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        self._pending.append((leaf, item["position"], body["claim_id"], body["version"], str(item["hash"]), text))
        if len(self._pending) >= INSERT_BATCH:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self.db.executemany("INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?, ?)", self._pending)
            self._pending.clear()

    def commit(self, replay: _Replay, checkpoint: Json, kept: str, url: str) -> None:
        """The new verified state: heads of the touched claims, the tree, the kept checkpoint."""
        self.flush()
        for claim_id in replay.touched:
            row = self.db.execute(
                "SELECT version, hash, (SELECT json_extract(body, '$.data.key') FROM events e"
                " WHERE e.claim_id = events.claim_id AND e.version = 1) FROM events WHERE claim_id = ?"
                " ORDER BY version DESC LIMIT 1", (claim_id,)
            ).fetchone()
            self.db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?)", (claim_id, row[2], row[0], row[1]))
        self.db.execute("DELETE FROM subtrees")
        self.db.executemany("INSERT INTO subtrees VALUES (?, ?)", enumerate(replay.hasher.subtrees))
        for name, value in {"tree_size": str(replay.hasher.size), "last_position": str(replay.last_position),
                            "root_hash": checkpoint["root_hash"], "kept": kept, "url": url,
                            "verified_at": _now()}.items():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))
        self.db.execute("COMMIT")

    def sample(self, size: int, leave_out: set[str]) -> list[str]:
        """Up to `size` claims chosen at random among those not in `leave_out`."""
        if size <= 0:
            return []
        chosen: list[str] = []
        for (claim_id,) in self.db.execute("SELECT claim_id FROM claims ORDER BY random()"):
            if claim_id not in leave_out:
                chosen.append(claim_id)
                if len(chosen) == size:
                    break
        return chosen

    def find_rewritten(self, remote: Remote, upto: int) -> str | None:
        """Where the server's feed first differs from the mirror's first `upto` events: the
        claim, version and position of an old event dropped, reordered or rewritten."""
        mirrored = self.db.execute("SELECT position, claim_id, version, hash FROM events WHERE leaf < ? ORDER BY leaf",
                                   (upto,))
        served = remote.feed(0)
        for position, claim_id, version, digest in mirrored:
            item = next(served, None)
            if not isinstance(item, dict):
                return f"the feed ends before position {position} (claim {claim_id} version {version})"
            body = item.get("body") if isinstance(item.get("body"), dict) else {}
            assert isinstance(body, dict)
            now = (item.get("position"), body.get("claim_id"), body.get("version"), item.get("hash"))
            if now != (position, claim_id, version, digest):
                return (f"position {position} (claim {claim_id} version {version}, hash {digest}) is now served as "
                        f"position {now[0]} (claim {now[1]} version {now[2]}, hash {now[3]!s:.64})")
        return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class MirrorReport(AuditReport):
    """An audit with a mirror: what it added and how many claims it compared."""

    mirror: Path | None = None
    new_events: int = 0
    compared: int = 0
    touched: int = 0
    sampled: int = 0
    mirrored: int = 0  # the mirror's tree size after the audit

    def lines(self) -> list[str]:
        lines = super().lines()
        lines[-1:-1] = [
            f"mirror {self.mirror}: {self.new_events} new events verified, {self.mirrored} in all",
            f"claims compared with the server: {self.compared} ({self.touched} touched by the new events, "
            f"{self.sampled} of the others)",
        ]
        return lines


def audit_mirror(
    url: str, directory: Path, *, checkpoint_file: Path | None = None, public_key_file: Path | None = None,
    token: str | None = None, progress: Progress | None = None, witnesses: WitnessPolicy | None = None,
    sample: int = DEFAULT_SAMPLE, full: bool = False,
) -> MirrorReport:
    """Audit the ledger at `url` from the mirror in `directory` (made on the first audit).

    With `checkpoint_file` the checkpoint is also kept there (and, while the mirror is empty, a
    checkpoint kept there is the one checked against). The mirror moves only when all holds.
    """
    if sample < 0:
        raise InvalidInput(f"--sample {sample}: give how many untouched claims to compare, 0 or more")
    mirror = Mirror(directory)
    try:
        kept = mirror.kept()
        where: Path | str = mirror.path
        if kept is None and checkpoint_file is not None:
            kept, where = read_kept(checkpoint_file), checkpoint_file
        pinned = pin(kept, where, public_key_file)
        report = MirrorReport(url=url, kept=kept, mirror=directory)
        remote = Remote(url, token)
        try:
            _audit_mirror(remote, mirror, report, kept, pinned, progress, witnesses, sample, full)
        except AuditAbort as e:
            report.problem(str(e))
        finally:
            remote.close()
        report.mirrored = mirror.tree_size
    finally:
        mirror.close()
    if report.saved and checkpoint_file is not None and report.checkpoint is not None and report.pinned is not None:
        save_checkpoint(checkpoint_file, report.checkpoint, report.pinned)
    return report


def _audit_mirror(
    remote: Remote, mirror: Mirror, report: MirrorReport, kept: Kept | None, pinned: PinnedKey | None,
    progress: Progress | None, witnesses: WitnessPolicy | None, sample: int, full: bool,
) -> None:
    hasher = mirror.hasher()
    mirrored = hasher.size
    if mirrored and (kept is None or kept.tree_size != mirrored or kept.root_hash != hasher.root().hex()):
        raise AuditAbort(
            f"the mirror {mirror.path} holds {mirrored} events whose root is {hasher.root().hex()}, not its kept "
            "checkpoint's: the mirror was altered; remove it to start again"
        )
    try:
        new = new_checkpoint(remote, report, kept, pinned, witnesses)
    except AuditAbort:
        if kept is not None and mirrored:
            try:
                found = mirror.find_rewritten(remote, mirrored)
            except AuditAbort:
                found = None  # the feed fails too: the first problem says enough
            if found is not None:
                report.problem(f"an event the mirror verified was changed on the server: {found}")
        raise
    report.checkpoint = new
    with suppress(_Rollback):
        _extend(remote, mirror, report, new, hasher, progress, sample, full)


def _extend(remote: Remote, mirror: Mirror, report: MirrorReport, new: Json, hasher: TreeHasher,
            progress: Progress | None, sample: int, full: bool) -> None:
    """The new events into the mirror, checked, and the claims compared: committed if all holds."""
    mirrored = hasher.size
    with mirror.transaction():
        heads = mirror.heads()
        replay = _Replay(tree_size=new["tree_size"], chains=ChainCheck.resume(heads), hasher=hasher,
                         last_position=mirror.last_position, fold=False, sink=mirror.add)
        _pull(remote, replay, report, progress)
        check_root(replay, new, report)
        mirror.flush()
        report.new_events = replay.events
        report.events = mirrored + replay.events
        report.claims = len(heads) + len(replay.touched - heads.keys())
        report.touched = len(replay.touched)
        if full or mirrored == 0:
            _compare_listed(remote, mirror, heads.keys() | replay.touched, report, progress, sample)
            report.sampled = report.claims - report.touched
        else:
            others = mirror.sample(sample, replay.touched)
            _compare_from_mirror(remote, mirror, [*sorted(replay.touched), *others], report, progress)
            report.sampled = len(others)
        report.compared = report.touched + report.sampled
        if not report.ok or report.pinned is None:
            raise _Rollback
        mirror.commit(replay, new, kept_text(new, report.pinned), remote.url)
        report.saved = True


class _Rollback(Exception):
    pass


def _folded(mirror: Mirror, claim_ids: Iterable[str], report: AuditReport) -> dict[str, Json]:
    """Each claim folded with the ledger's fold from its events in the mirror."""
    views: dict[str, Json] = {}
    for claim_id in claim_ids:
        fold = ClaimFold()
        for position, body in mirror.rows(claim_id):
            try:
                fold.apply(body)
            except (LedgerError, LookupError, TypeError, ValueError, AttributeError) as e:
                report.problem(f"position {position} (claim {claim_id} version {body.get('version')}): the body "
                               f"is not an event the ledger's fold can apply ({e})")
                break
        else:
            if fold.registered:
                views[claim_id] = fold.view()
    return views


def _compare_from_mirror(remote: Remote, mirror: Mirror, claim_ids: list[str], report: AuditReport,
                         progress: Progress | None) -> None:
    """Each claim folded from the mirror against the server's view, a batch at a time (the views
    are made here, fetched and compared by the reader threads)."""
    for start in range(0, len(claim_ids), COMPARE_BATCH):
        views = _folded(mirror, claim_ids[start:start + COMPARE_BATCH], report)
        compare_views(remote, list(views), views.__getitem__, report, None)
        if progress is not None:
            progress("claims", min(start + COMPARE_BATCH, len(claim_ids)), len(claim_ids))


def _compare_listed(remote: Remote, mirror: Mirror, known: Set[str], report: AuditReport,
                    progress: Progress | None, sample: int) -> None:
    """Every claim: the server's list of claims a page at a time, each listed view compared with
    the claim folded from the mirror; a listed claim with no event in the feed is a problem, and
    a claim the list missed is compared on its own. So that the list cannot say one thing and
    GET /v1/claims/{id} another, `sample` claims at random are also compared one by one."""
    listed: set[str] = set()
    cursor: str | None = None
    while True:
        page = remote.get("/v1/claims", limit=LIST_PAGE, **({"cursor": cursor} if cursor else {}))
        views = {str(item.get("id")): item for item in page.get("items", []) if isinstance(item, dict)}
        for claim_id in sorted(views.keys() - known):
            report.problem(f"claim {claim_id} is served but the feed holds no event of it")
        local = _folded(mirror, sorted(views.keys() & known), report)
        compare_views(remote, list(local), local.__getitem__, report, None, listed=views)
        listed |= views.keys()
        if progress is not None:
            progress("claims", len(listed), len(known))
        cursor = page.get("next_cursor")
        if not cursor:
            break
    _compare_from_mirror(remote, mirror, sorted(known - listed), report, progress)
    _compare_from_mirror(remote, mirror, random.sample(sorted(known), min(sample, len(known))), report, None)


# -- The monitor ---------------------------------------------------------------------------------


def write_status(directory: Path, status: Json) -> None:
    """DIR/status.json, replaced whole or not at all."""
    write_private(directory / STATUS, (json.dumps(status, indent=2, ensure_ascii=False) + "\n").encode())


def watch(
    url: str, directory: Path, *, log: Callable[[str], None], keep_going: bool = False, interval: float = 2.0,
    rounds: int | None = None, **audit: Any,
) -> int:
    """Follow the ledger: audit from the mirror now, then again at each new checkpoint (the event
    stream says when the log grew; `interval` is the most it waits otherwise). Each audit's
    outcome goes to `log` and DIR/status.json. Returns 1 at the first inconsistency (or, with
    `keep_going`, goes on reporting); after `rounds` audits (None: for ever) 0 if all held."""
    grew = threading.Event()
    stop = threading.Event()
    problems: list[str] = []
    failed = False

    def follow(after: int) -> None:
        api = client.LedgerClient(url, audit.get("token"))
        try:
            for _ in api.stream_events(after):
                grew.set()
                if stop.is_set():
                    return
        except client.LedgerError as e:  # refused (a token without role auditor): poll instead
            log(f"{_now()} the event stream is not followed ({e}); checking every {interval} s")
        finally:
            api.close()

    follower: threading.Thread | None = None
    done = 0
    last_size = -1
    try:
        while rounds is None or done < rounds:
            report = audit_mirror(url, directory, **audit)
            done += 1
            size = report.mirrored
            if report.ok:
                if size != last_size:
                    log(f"{_now()} verified: tree size {size}, {report.new_events} new events, "
                        f"{report.compared} claims compared")
            else:
                failed = True
                for line in report.problems:
                    if line not in problems:  # each problem once, however many checks find it again
                        log(f"{_now()} problem: {line}")
                        problems = [*problems, line][-50:]
            last_size = size
            write_status(directory, {"tree_size": size, "verified_at": _mirrored(directory, "verified_at"), "checked_at": _now(),
                                     "ok": report.ok, "problems": problems, "url": url})
            if failed and not keep_going:
                return 1
            if rounds is not None and done >= rounds:
                break
            if follower is None:  # from the mirror's end: the stream wakes the next check
                follower = threading.Thread(target=follow, args=(_mirrored(directory, "last_position"),), daemon=True)
                follower.start()
            grew.wait(interval)
            grew.clear()
    finally:
        stop.set()
    return 1 if failed else 0


def _mirrored(directory: Path, name: str) -> Any:
    mirror = Mirror(directory)
    try:
        value = mirror.meta(name)
    finally:
        mirror.close()
    return int(value or 0) if name in ("last_position", "tree_size") else value
