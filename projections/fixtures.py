"""Fixtures: files of acts replayed into a ledger in one transaction, and exported back.

A fixture is JSON Lines, one act a line, in the HTTP body shapes plus ``op``, ``claim``
and an optional ``recorded_at`` (DESIGN §7). Import is all or nothing: the first bad
line fails the whole file with a :class:`FixtureError` naming the file and line, and
the ledger is left exactly as it was.
"""

from __future__ import annotations

import difflib
import functools
import gc
import hashlib
import json
import sqlite3
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, cast
from uuid import UUID

import orjson
from eventsourcing.application import project_aggregate
from eventsourcing.persistence import JSONTranscoder, Mapper, PersistenceError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder

from domain.claim import Claim, StateTranscoder
from domain.commands import Command, RecordAct, RegisterClaim
from domain.errors import InvalidInput, LedgerError, StoreUnavailable
from domain.ledger import Ledger, LoggedEvent, _Batch
from domain.recorder import PipelinedRecorder
from domain.values import SLUG, claim_id_for_key, parse_instant

Json = dict[str, Any]
ProgressCallback = Callable[[int, int, int | None], None]  # acts, bytes read, bytes in all

FIXTURES_DIR = Path(__file__).resolve().parents[1] / "fixtures"
SEED_FIXTURE = FIXTURES_DIR / "seed" / "putin-elton-john.jsonl"

OPS = ("register", "assert", "deny", "retract", "void")
OP_OF_TYPE = {
    "ClaimRegistered": "register", "Asserted": "assert", "Denied": "deny",
    "Retracted": "retract", "ActVoided": "void",
}
# Events are written every FLUSH_EVERY lines; at most KEEP_CLAIMS claims stay in
# memory between writes (others are reloaded, inside the same transaction, when a
# later line names them again).
FLUSH_EVERY = 2_000
KEEP_CLAIMS = 2_000


class FixtureError(LedgerError, ValueError):
    """A fixture line that cannot be imported; nothing of the file was written."""

    code = "fixture-error"
    title = "Bad fixture line"

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = path
        self.line = line
        self.message = message


@dataclass(frozen=True)
class ImportReport:
    """What one import did."""

    path: str
    acts: int  # lines read (registrations and acts)
    events: int  # new events written
    unchanged: int  # lines already in the ledger (idempotent repeats)
    first_position: int | None
    last_position: int | None
    seconds: float

    @property
    def acts_per_second(self) -> float:
        return self.acts / self.seconds if self.seconds > 0 else float("inf")


# Reading.
@dataclass(slots=True)
class FixtureLine:
    number: int
    raw: bytes
    fields: Json
    offset: int  # bytes read up to the end of this line


def read_lines(source: str | Path | Iterable[str | bytes], name: str) -> Iterator[FixtureLine]:
    """The non-blank lines of a fixture (a file path, or lines), parsed one at a time."""
    if isinstance(source, str | Path):
        with open(source, "rb") as f:
            yield from _parse(f, name)
    else:
        yield from _parse(source, name)


def _parse(stream: Iterable[str | bytes], name: str) -> Iterator[FixtureLine]:
    offset = 0
    for number, line in enumerate(stream, start=1):
        raw: bytes = line.encode() if isinstance(line, str) else line
        offset += len(raw)
        raw = raw.strip()
        if not raw:
            continue
        try:
            fields = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise FixtureError(name, number, f"malformed JSON: {e.msg} at column {e.colno}") from None
        if not isinstance(fields, dict):
            raise FixtureError(name, number, f"each line must be a JSON object, not {_json_kind(fields)}")
        yield FixtureLine(number, raw, fields, offset)


def _json_kind(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def command_of(line: FixtureLine) -> Command:
    """The ledger command a fixture line stands for (raises InvalidInput on a bad field)."""
    fields = dict(line.fields)
    op = fields.pop("op", None)
    if op is None:
        raise InvalidInput(f"op is missing; use one of {', '.join(OPS)}")
    if op not in OPS:
        raise InvalidInput(f"unknown op {op!r:.40}; use one of {', '.join(OPS)}")
    recorded = fields.pop("recorded_at", None)
    recorded_at = None if recorded is None else parse_instant(recorded, "recorded_at")
    claim = fields.pop("claim", None)
    if op == "register":
        key = fields.get("key")
        if claim is not None and key is not None and claim != key:
            raise InvalidInput(f"claim {claim!r:.130} and key {key!r:.130} differ; a registration names one key")
        if claim is not None:
            fields["key"] = claim
        return RegisterClaim.build(fields, recorded_at=recorded_at)
    if claim is None:
        raise InvalidInput("claim is missing: name the claim by its key (or id)")
    if not isinstance(claim, str):
        raise InvalidInput("claim must be a string: the claim's key (or id)")
    if fields.get("act_id") is None:
        # A stable id, so importing the same file twice records each act once.
        digest = hashlib.sha256(b"%d\n%s" % (line.number, line.raw)).hexdigest()[:12]
        fields["act_id"] = f"{op}-{digest}"
    return RecordAct.build(op, claim, fields, recorded_at=recorded_at)


# Writing in one transaction.
class EventWriter(Protocol):
    """The one open write transaction of an import, on either backend."""

    def events_of(self, claim_ids: list[UUID]) -> dict[UUID, list[StoredEvent]]: ...

    def insert(self, stored: list[StoredEvent]) -> list[int]: ...


class _ImportBatch(_Batch):
    """The ledger's own command rules, over claims read inside the import's transaction.

    Claims are read a chunk of lines at a time (one query for all the claims a chunk
    names); the least recently used are forgotten between chunks, to be read again,
    inside the same transaction, if a later line names them.
    """

    def __init__(self, ledger: Ledger, writer: EventWriter) -> None:
        super().__init__(ledger)
        self.writer = writer
        self.claims: OrderedDict[UUID, Claim | None] = OrderedDict()

    def read_ahead(self, commands: Iterable[Command]) -> None:
        wanted = {claim_id for c in commands for claim_id in _claim_ids(c) if claim_id not in self.claims}
        if wanted:
            self.read(sorted(wanted))

    def resolve(self, ref: str) -> Claim:
        for claim_id in _ref_ids(ref):
            claim = self.load(claim_id)
            if claim is not None:
                return claim
        return super().resolve(ref)  # raises UnknownClaim

    def load(self, claim_id: UUID) -> Claim | None:
        if claim_id not in self.claims:
            self.read([claim_id])
        self.claims.move_to_end(claim_id)
        return self.claims[claim_id]

    def read(self, claim_ids: list[UUID]) -> None:
        stored = self.writer.events_of(claim_ids)
        for claim_id in claim_ids:
            events = [self.ledger.mapper.to_domain_event(s) for s in stored.get(claim_id, ())]
            self.claims[claim_id] = project_aggregate(None, events) if events else None  # type: ignore[arg-type]

    def forget_least_recent(self, keep: int) -> None:
        while len(self.claims) > keep:
            self.claims.popitem(last=False)


def _claim_ids(command: Command) -> tuple[UUID, ...]:
    """The ids a command may name: as the ledger resolves them, the UUID first, then the key."""
    if isinstance(command, RegisterClaim):
        return (claim_id_for_key(command.key),)
    return _ref_ids(command.claim)


@functools.lru_cache(maxsize=65_536)
def _ref_ids(ref: str) -> tuple[UUID, ...]:
    """What ``_Batch.resolve`` tries for a claim reference, worked out once per reference
    (a key is not a UUID: ``UUID(key)`` raising for every line was a cost of its own)."""
    ids = []
    with suppress(ValueError):
        ids.append(UUID(ref))
    if SLUG.fullmatch(ref):
        ids.append(claim_id_for_key(ref))
    return tuple(ids)


def import_fixture(
    ledger: Ledger,
    path_or_lines: str | Path | Iterable[str | bytes],
    *,
    progress: ProgressCallback | None = None,
    name: str | None = None,
) -> ImportReport:
    """Record every line of a fixture, all in one transaction, or nothing at all.

    Lines are read FLUSH_EVERY at a time: built into commands, the claims they name
    read in one query, applied in order, and their events inserted. The first bad
    line raises a FixtureError and the transaction is rolled back.
    ``progress(acts, bytes_read, bytes_total)`` is called after each chunk
    (``bytes_total`` is None when reading lines rather than a file).
    """
    name = name or (str(path_or_lines) if isinstance(path_or_lines, str | Path) else "<lines>")
    total = Path(path_or_lines).stat().st_size if isinstance(path_or_lines, str | Path) else None
    started = time.perf_counter()
    acts = unchanged = 0
    positions: list[int] = []
    lines = read_lines(path_or_lines, name)
    try:
        with _fewer_collections() as settle, _write_transaction(ledger) as writer:
            batch = _ImportBatch(ledger, writer)
            mapper = _import_mapper(ledger)
            while True:
                chunk, failure = _next_chunk(lines, name)
                batch.read_ahead(command for _, command in chunk)
                pending: list[Claim.Event] = []
                for line, command in chunk:
                    outcome = batch.apply(command)
                    if outcome.error is not None:
                        raise FixtureError(name, line.number, str(outcome.error)) from outcome.error
                    if outcome.created:
                        claim = cast(Claim, batch.claims[cast(UUID, outcome.claim_id)])
                        pending.extend(cast(list[Claim.Event], claim.collect_events()))
                    else:
                        unchanged += 1
                if failure is not None:  # only now: an earlier line's broken rule comes first
                    raise failure
                if pending:
                    positions.extend(writer.insert([mapper.to_stored_event(e) for e in pending]))
                acts += len(chunk)
                batch.forget_least_recent(KEEP_CLAIMS)
                settle()
                if progress is not None and chunk:
                    progress(acts, chunk[-1][0].offset, total)
                if len(chunk) < FLUSH_EVERY:
                    break
    except PersistenceError as e:
        raise StoreUnavailable(f"the event store failed during the import of {name}: {e}") from e
    return ImportReport(
        path=name, acts=acts, events=len(positions), unchanged=unchanged,
        first_position=positions[0] if positions else None,
        last_position=positions[-1] if positions else None,
        seconds=time.perf_counter() - started,
    )


def _import_mapper(ledger: Ledger) -> Mapper[UUID]:
    """The ledger's mapper, writing the same bytes with the faster StateTranscoder when it can."""
    mapper = ledger.mapper
    if type(mapper) is not Mapper or type(mapper.transcoder) is not JSONTranscoder:
        return mapper
    return Mapper(StateTranscoder.like(mapper.transcoder), compressor=mapper.compressor, cipher=mapper.cipher)


@contextmanager
def _fewer_collections() -> Iterator[Callable[[], None]]:
    """Run the cyclic garbage collector less often during an import; yields ``settle``.

    An import allocates millions of short-lived objects while it holds thousands of
    claims; at the default threshold the collector walks those claims over and over
    (a fifth of the import's time). Even at a higher threshold its young generation
    grows past the threshold (objects freed anywhere count against it) and each pass
    walked every claim read or made since the last one, finding nothing to collect.
    ``settle()``, called between chunks, moves what is alive into the collector's
    permanent generation (``gc.freeze``), so each pass sees only the newest chunk;
    objects still die as usual when their last reference goes. The thresholds and
    the permanent generation come back as they were afterwards.
    """
    thresholds = gc.get_threshold()
    freezing = gc.get_freeze_count() == 0  # someone else's freeze (pre-fork, say) is left alone
    gc.set_threshold(max(thresholds[0], 50_000), *thresholds[1:])
    try:
        yield gc.freeze if freezing else _nothing
    finally:
        if freezing:
            gc.unfreeze()
        gc.set_threshold(*thresholds)


def _nothing() -> None:
    pass


def _next_chunk(
    lines: Iterator[FixtureLine], name: str
) -> tuple[list[tuple[FixtureLine, Command]], FixtureError | None]:
    """Up to FLUSH_EVERY lines as commands; a line that is not one ends the chunk with its error."""
    chunk: list[tuple[FixtureLine, Command]] = []
    line: FixtureLine | None = None
    try:
        for line in lines:
            chunk.append((line, command_of(line)))
            if len(chunk) == FLUSH_EVERY:
                break
    except FixtureError as e:
        return chunk, e
    except LedgerError as e:
        assert line is not None
        return chunk, FixtureError(name, line.number, str(e))
    return chunk, None


@contextmanager
def _write_transaction(ledger: Ledger) -> Iterator[EventWriter]:
    if ledger.database.backend == "sqlite":
        with _sqlite_transaction(ledger) as writer:
            yield writer
    else:
        with _postgres_transaction(ledger) as writer:
            yield writer


class _SQLiteWriter:
    def __init__(self, ledger: Ledger, cursor: Any) -> None:
        self.recorder = cast(SQLiteApplicationRecorder, ledger.recorder)
        self.cursor = cursor

    def events_of(self, claim_ids: list[UUID]) -> dict[UUID, list[StoredEvent]]:
        found: dict[UUID, list[StoredEvent]] = {}
        for start in range(0, len(claim_ids), 500):  # well under SQLite's bound on parameters
            some = claim_ids[start:start + 500]
            self.cursor.execute(
                f"SELECT originator_id, originator_version, topic, state FROM {self.recorder.events_table_name}"
                f" WHERE originator_id IN ({','.join('?' * len(some))}) ORDER BY originator_id, originator_version",
                [claim_id.hex for claim_id in some],
            )
            for row in self.cursor.fetchall():
                claim_id = UUID(row["originator_id"])
                found.setdefault(claim_id, []).append(StoredEvent(
                    originator_id=claim_id, originator_version=row["originator_version"],
                    topic=row["topic"], state=row["state"],
                ))
        return found

    def insert(self, stored: list[StoredEvent]) -> list[int]:
        """The recorder's rows, written by one executemany rather than an execute per row.

        The rowids (positions) are the ones the recorder reads back one by one: with
        the write lock held, SQLite gives each new row the largest rowid plus one.
        """
        if not stored:
            return []
        table = self.recorder.events_table_name
        before = self._max_rowid(table)
        self.cursor.executemany(self.recorder.insert_events_statement, [
            (s.originator_id.hex if isinstance(s.originator_id, UUID) else s.originator_id,
             s.originator_version, s.topic, s.state)
            for s in stored
        ])
        if self._max_rowid(table) == before + len(stored):
            return list(range(before + 1, before + len(stored) + 1))
        positions = []  # rowids past 2**63 - 1 are random: read each one back
        for s in stored:
            self.cursor.execute(
                f"SELECT rowid FROM {table} WHERE originator_id = ? AND originator_version = ?",
                (s.originator_id.hex if isinstance(s.originator_id, UUID) else s.originator_id,
                 s.originator_version),
            )
            positions.append(self.cursor.fetchone()[0])
        return positions

    def _max_rowid(self, table: str) -> int:
        self.cursor.execute(f"SELECT max(rowid) FROM {table}")
        return int(self.cursor.fetchone()[0] or 0)


@contextmanager
def _sqlite_transaction(ledger: Ledger) -> Iterator[EventWriter]:
    """BEGIN IMMEDIATE: the write lock is ours from the first read, so what we read stays true."""
    datastore = cast(SQLiteApplicationRecorder, ledger.recorder).datastore
    with datastore.get_connection(commit=True) as conn:
        cursor = conn.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise StoreUnavailable(f"the ledger's SQLite file is busy: {e}") from e
        try:
            yield _SQLiteWriter(ledger, cursor)
        except BaseException:
            conn.rollback()
            raise
        try:
            conn.commit()
        except sqlite3.Error as e:
            conn.rollback()
            raise StoreUnavailable(f"the import could not be committed: {e}") from e


class _PostgresWriter:
    def __init__(self, ledger: Ledger, cursor: Any) -> None:
        self.recorder = cast(PipelinedRecorder, ledger.recorder)
        self.cursor = cursor
        self.select = self.recorder.select_originators_statement

    def events_of(self, claim_ids: list[UUID]) -> dict[UUID, list[StoredEvent]]:
        self.cursor.execute(self.select, (claim_ids,))
        found: dict[UUID, list[StoredEvent]] = {}
        for row in self.cursor.fetchall():
            found.setdefault(row["originator_id"], []).append(StoredEvent(
                originator_id=row["originator_id"], originator_version=row["originator_version"],
                topic=row["topic"], state=bytes(row["state"]),
            ))
        return found

    def insert(self, stored: list[StoredEvent]) -> list[int]:
        # The recorder's own insert: table lock (already ours), NOTIFY, INSERT ... RETURNING.
        self.recorder._insert_stored_events(self.cursor, stored)
        positions = self.recorder._fetch_ids_after_insert_events(self.cursor, stored)
        assert positions is not None
        return list(positions)


@contextmanager
def _postgres_transaction(ledger: Ledger) -> Iterator[EventWriter]:
    """One transaction holding the events table's EXCLUSIVE lock from the first read.

    The lock is the one every save takes, so no other writer changes a claim between
    our reading it and our commit; readers are not blocked.
    """
    recorder = cast(PostgresApplicationRecorder, ledger.recorder)
    with recorder.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as cursor:
        recorder._lock_table(cursor)
        yield _PostgresWriter(ledger, cursor)


# Exporting.
EXPORT_BATCH = 2_000


def logged_events(ledger: Ledger, after: int = 0) -> Iterator[LoggedEvent]:
    """Every event after ``after``, in log order, read a batch at a time."""
    while True:
        batch = ledger.read_log(after, EXPORT_BATCH)
        if not batch:
            return
        yield from batch
        after = batch[-1].position


def export_fixture(ledger: Ledger, out: IO[str], *, after: int = 0) -> int:
    """Write the events after position ``after`` as fixture lines; returns how many.

    Importing the file into an empty ledger recreates the same events, hash for hash.
    """
    keys = _ClaimKeys(ledger)
    count = 0
    for event in logged_events(ledger, after):
        out.write(_dumps(fixture_line(event, keys.key_of(event))))
        out.write("\n")
        count += 1
    return count


def fixture_line(event: LoggedEvent, key: str) -> Json:
    """One event as a fixture line: op, claim key, recorded_at and all its data."""
    op = OP_OF_TYPE[event.type]
    data = orjson.loads(event.data_json)
    if op == "register":
        return {"op": op, **data, "recorded_at": event.recorded_at}
    return {"op": op, "claim": key, "recorded_at": event.recorded_at, **data}


def export_feed(ledger: Ledger, out: IO[str], *, after: int = 0) -> int:
    """Write the event feed after ``after``: one ``{position, hash, body}`` a line (DESIGN §4-§5).

    Each body is written as the very JCS text its hash is over.
    """
    count = 0
    for event in logged_events(ledger, after):
        out.write(f'{{"position":{event.position},"hash":"{event.hash}","body":{event.body_text()}}}\n')
        count += 1
    return count


def _dumps(value: Json) -> str:
    return orjson.dumps(value).decode()


class _ClaimKeys:
    """Claim keys by id for an export, read from each claim's registration when needed."""

    def __init__(self, ledger: Ledger, keep: int = 100_000) -> None:
        self.ledger = ledger
        self.keep = keep
        self.keys: OrderedDict[str, str] = OrderedDict()

    def key_of(self, event: LoggedEvent) -> str:
        claim_id = event.claim_id
        if event.type == "ClaimRegistered":
            key = str(orjson.loads(event.data_json)["key"])
        elif claim_id in self.keys:
            self.keys.move_to_end(claim_id)
            return self.keys[claim_id]
        else:
            (first,) = self.ledger.recorder.select_events(UUID(claim_id), limit=1)
            registered = cast(Claim.Event, self.ledger.mapper.to_domain_event(first))
            key = str(registered.data["key"])
        self.keys[claim_id] = key
        if len(self.keys) > self.keep:
            self.keys.popitem(last=False)
        return key


# Expected projections.
def fixture_projections(path: str | Path) -> dict[str, Json]:
    """What a fixture projects to: ``{"claims/<key>.json": view, "history/<key>.json": ...,
    "parties/<id>.json": ...}``, from a throwaway SQLite ledger.

    Every line must fix its ``recorded_at``: otherwise times and hashes would differ on
    every run and no expected file could match.
    """
    from projections.runtime import Runtime

    name = str(path)
    for line in read_lines(path, name):
        if line.fields.get("recorded_at") is None:
            raise FixtureError(
                name, line.number,
                "recorded_at is missing: a fixture checked against expected projections must fix "
                "the time of every line, or its times and hashes would change on every run",
            )
    with tempfile.TemporaryDirectory(prefix="claims-fixture-") as tmp:
        runtime = Runtime.open(f"sqlite:///{Path(tmp) / 'ledger.db'}")
        try:
            import_fixture(runtime.ledger, path)
            runtime.engine.catch_up()
            return _read_projections(runtime)
        finally:
            runtime.close()


def _read_projections(runtime: Any) -> dict[str, Json]:
    files: dict[str, Json] = {}
    parties: set[str] = set()
    cursor: str | None = None
    while True:
        items, cursor = runtime.read.list_claims(limit=500, cursor=cursor)
        for view in items:
            key = view["key"]
            files[f"claims/{key}.json"] = view
            history = runtime.read.history(view["id"])
            files[f"history/{key}.json"] = history
            for event in history["events"]:
                parties.update(p["id"] for p in (event.get("party"), event.get("on_behalf_of")) if p)
        if cursor is None:
            break
    for party_id in sorted(parties):
        party = runtime.read.party(party_id)
        if party is not None:
            files[f"parties/{party_id}.json"] = party
    return files


def expected_projections(expect_dir: str | Path) -> dict[str, Json]:
    root = Path(expect_dir)
    return {
        file.relative_to(root).as_posix(): json.loads(file.read_text(encoding="utf-8"))
        for folder in ("claims", "history", "parties")
        for file in sorted((root / folder).glob("*.json"))
    }


def compare_projections(actual: dict[str, Json], expected: dict[str, Json]) -> list[str]:
    """A unified diff per file that differs (files missing on either side included)."""
    diffs = []
    for name in sorted(actual.keys() | expected.keys()):
        want, got = expected.get(name), actual.get(name)
        if want == got:
            continue
        diffs.append("".join(difflib.unified_diff(
            _pretty(want, sort_keys=True).splitlines(keepends=True),
            _pretty(got, sort_keys=True).splitlines(keepends=True),
            fromfile=f"expected/{name}" if want is not None else "/dev/null",
            tofile=f"actual/{name}" if got is not None else "/dev/null",
        )))
    return diffs


def write_projections(actual: dict[str, Json], expect_dir: str | Path) -> None:
    """Make ``expect_dir`` hold exactly these files."""
    root = Path(expect_dir)
    for name in expected_projections(root).keys() - actual.keys():
        (root / name).unlink()
    for name, value in actual.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_pretty(value), encoding="utf-8")


def _pretty(value: Json | None, *, sort_keys: bool = False) -> str:
    if value is None:
        return ""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=sort_keys) + "\n"


def assert_fixture(path: str | Path, expect_dir: str | Path) -> None:
    """Pytest helper: the fixture's projections equal the expected files, or a readable diff."""
    diffs = compare_projections(fixture_projections(path), expected_projections(expect_dir))
    if diffs:
        raise AssertionError(f"{path} does not project to {expect_dir}:\n" + "\n".join(diffs))
