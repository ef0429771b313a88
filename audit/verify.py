"""`claims verify`: the whole store checked against itself.

Three checks, each naming the claim and version where something does not hold:
every stored event's hash and its claim's hash chain; the Merkle root of all events in
log order against the root the projections' Merkle log holds; every read-model table
against a fresh rebuild into ``vf_`` tables (dropped afterwards).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

import orjson
import psycopg

from audit.chain import ChainCheck
from domain.canonical import body_text, canonical_bytes
from domain.claim import Claim
from domain.errors import LedgerError
from domain.ledger import Ledger, UndecodableEvent
from domain.merkle import EMPTY_ROOT, TreeHasher, leaf_hash
from projections.engine import TRACKING_NAME, ProjectionEngine, Row, row_of
from projections.merkle import MerkleLog
from projections.tables import LIVE
from store.db import Cursor, ReadStore
from store.log import LogScanner, scanning
from store.settings import Database

VERIFY_PREFIX = "vf_"
SCAN_BATCH = 20_000
BUILD_BATCH = 10_000
COMPARE_ATTEMPTS = 5
MAX_FINDINGS = 1_000
ROWS_SHOWN_PER_TABLE = 20



class OpenLedger(Protocol):
    """What verify reads: the event store, the read store and its engine (a process's Runtime)."""

    @property
    def database(self) -> Database: ...
    @property
    def ledger(self) -> Ledger: ...
    @property
    def store(self) -> ReadStore: ...
    @property
    def engine(self) -> ProjectionEngine: ...


# (stage, done, total): stage is "hash chains" or "projections".
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Finding:
    """One thing that does not hold, and where it is."""

    check: str  # a rule of audit.chain, or decode, encoding, merkle, projection
    detail: str
    claim_id: str | None = None
    version: int | None = None
    position: int | None = None
    key: str | None = None

    def describe(self) -> str:
        where = []
        if self.claim_id is not None:
            where.append(f"claim {self.key} ({self.claim_id})" if self.key else f"claim {self.claim_id}")
        if self.version is not None:
            where.append(f"version {self.version}")
        if self.position is not None:
            where.append(f"position {self.position}")
        return f"[{self.check}] {', '.join(where)}: {self.detail}" if where else f"[{self.check}] {self.detail}"


@dataclass
class VerifyReport:
    """What `verify_store` found; `ok` when every check held."""

    events: int = 0
    claims: int = 0
    root_hash: str = EMPTY_ROOT.hex()  # of all events in the store, in log order
    merkle_checked_size: int = 0  # leaves of the projections' Merkle log compared
    store_position: int = 0  # the newest event's position
    projected_position: int = 0  # the log position the projection comparison was made at
    projections_compared: bool = False
    findings: list[Finding] = field(default_factory=list)
    omitted: int = 0  # findings past MAX_FINDINGS, counted only
    chain_seconds: float = 0.0
    projection_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.findings and not self.omitted

    @property
    def events_per_second(self) -> float:
        """Hash-chain and Merkle checking speed, reading included."""
        return self.events / self.chain_seconds if self.chain_seconds else 0.0

    def add(self, finding: Finding) -> None:
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(finding)
        else:
            self.omitted += 1

    def lines(self) -> list[str]:
        """A readable account: what was checked, then every finding."""
        lines = [
            f"hash chains: {self.events} events of {self.claims} claims checked in {self.chain_seconds:.2f} s "
            f"({self.events_per_second:,.0f} events/s)",
            f"merkle: root of all {self.events} events {self.root_hash}; "
            f"compared with the projections' log at {self.merkle_checked_size} leaves",
        ]
        if self.projections_compared:
            differing = sum(1 for f in self.findings if f.check == "projection")
            lines.append(
                f"projections: compared with a fresh rebuild at position {self.projected_position} in "
                f"{self.projection_seconds:.2f} s: "
                + (f"{differing} difference(s) listed below" if differing else "every table equal")
            )
            if self.projected_position < self.store_position:
                lines.append(
                    f"  the projections lag the store: events after position {self.projected_position} (up to "
                    f"{self.store_position}) were hash-checked but are not projected yet; run `claims project`"
                )
        lines.extend(f.describe() for f in self.findings)
        if self.omitted:
            lines.append(f"... and {self.omitted} more findings")
        lines.append("all checks hold" if self.ok else f"{len(self.findings) + self.omitted} problem(s) found")
        return lines


def verify_store(
    runtime: OpenLedger, progress: Progress | None = None, *, projections: bool = True
) -> VerifyReport:
    """Check the whole store; `projections=False` skips the (slower) rebuild comparison."""
    report = VerifyReport()
    started = time.perf_counter()
    _check_log(runtime, report, progress)
    report.chain_seconds = time.perf_counter() - started
    if projections:
        started = time.perf_counter()
        _check_projections(runtime, report, progress)
        report.projection_seconds = time.perf_counter() - started
    _name_claims(runtime.ledger, report)
    return report


# -- Check 1 and 2: hashes, chains, Merkle root ----------------------------------------------


def _check_log(runtime: OpenLedger, report: VerifyReport, progress: Progress | None) -> None:
    ledger = runtime.ledger
    merkle = MerkleLog(LIVE)
    # The projections' tree is read first: every event it holds is committed, so the scan
    # that follows sees at least as many events.
    with runtime.store.reading() as cur:
        checked_size = merkle.size(cur)
        try:
            projected_root: bytes | None = merkle.root(cur, checked_size)
        except LedgerError as e:
            projected_root = None
            report.add(Finding("merkle", f"the projections' Merkle log cannot give its root: {e}"))
    report.merkle_checked_size = checked_size
    total = ledger.max_position()
    chains = ChainCheck()
    take = chains.take
    hasher = TreeHasher()
    root_at_checked = EMPTY_ROOT if checked_size == 0 else None
    sha256 = hashlib.sha256
    after = 0
    decode = ledger.decode_stored
    with scanning(ledger, runtime.database, snapshot=True) as scanner:
        while rows := scanner.raw(after, SCAN_BATCH):
            for raw in rows:
                try:
                    position, claim_id, version, kind, recorded_at, prev_hash, stored, data_json = decode(*raw)
                except UndecodableEvent as problem:
                    report.add(Finding("decode", f"the stored event cannot be read: {problem}",
                                       raw[1], raw[2], raw[0]))
                    hasher.append(leaf_hash(raw[4]))  # keeps later leaves in place; the root will differ
                else:
                    text = body_text(claim_id=claim_id, version=version, type=kind, recorded_at=recorded_at,
                                     prev_hash=prev_hash, data_json=data_json)
                    for broken in take(claim_id, version, kind, prev_hash, stored, sha256(text.encode()).hexdigest()):
                        report.add(Finding(broken.rule, broken.detail, claim_id, version, position))
                    try:
                        hasher.append(sha256(b"\x00" + bytes.fromhex(stored)).digest())
                    except ValueError:  # not hex, so not its body's hash (reported above); the root will differ
                        hasher.append(leaf_hash(stored.encode()))
                if hasher.size == checked_size:
                    root_at_checked = hasher.root()
            after = rows[-1][0]
            if progress is not None:
                progress("hash chains", after, max(total, after))
    report.events = hasher.size
    report.store_position = after
    report.claims = chains.claims
    report.root_hash = hasher.root().hex()
    if root_at_checked is None:
        report.add(Finding(
            "merkle", f"the projections' Merkle log holds {checked_size} leaves but the store has only "
            f"{hasher.size} events: events were removed from the store",
        ))
    elif projected_root is not None and root_at_checked != projected_root:
        report.add(Finding(
            "merkle", f"the root of the first {checked_size} events recomputed from the store is "
            f"{root_at_checked.hex()} but the projections' Merkle log has {projected_root.hex()} at that size: "
            "events were changed, removed or reordered since they were projected (the projection rows "
            "that differ are listed under [projection])",
        ))


# -- Check 3: projections against a fresh rebuild --------------------------------------------


@dataclass(frozen=True)
class _Table:
    base: str
    key: tuple[str, ...]
    columns: tuple[str, ...]

    def name(self, prefix: str) -> str:
        return f"{prefix}{self.base}"


# Every read-model table but tracking (whose generation differs by design). Columns are
# named so PostgreSQL's generated tsvector (a function of `statement`) is left out.
TABLES = (
    _Table("claims", ("claim_id",), ("claim_id", "key", "statement", "language", "status", "view", "version",
                                      "reg_position", "position", "registered_at", "updated_at")),
    _Table("subjects", ("subject", "claim_id"), ("subject", "claim_id", "reg_position")),
    _Table("stances", ("holder_id", "claim_id"), ("holder_id", "claim_id", "party_id", "stance", "act_id",
                                                  "said_at", "reg_position", "item")),
    _Table("reviews", ("reviewer_id", "claim_id"), ("reviewer_id", "claim_id", "act_id", "reg_position", "item")),
    _Table("history", ("position",), ("position", "claim_id", "version", "type", "act_id", "hash", "body")),
    _Table("search", ("claim_id",), ("claim_id", "statement")),
    _Table("merkle_leaves", ("leaf_index",), ("leaf_index", "position", "hash")),
    _Table("merkle_nodes", ("level", "idx"), ("level", "idx", "hash")),
    _Table("merkle_tiles", ("level", "idx"), ("level", "idx", "data")),
)
JSON_COLUMNS = frozenset({"view", "item", "body"})


class Unprojectable(Exception):
    """The stored events cannot be applied to fresh read models (see `_build`)."""


def _check_projections(runtime: OpenLedger, report: VerifyReport, progress: Progress | None) -> None:
    store = runtime.store
    fresh = ProjectionEngine(runtime.ledger, store, prefix=VERIFY_PREFIX, batch_size=BUILD_BATCH, gap_wait=0.0)
    _drop(store, fresh)  # left by a verify that was killed
    fresh.ensure_tables()
    try:
        built = 0
        with scanning(runtime.ledger, runtime.database, snapshot=False) as scanner:
            for _ in range(COMPARE_ATTEMPTS):
                target = runtime.engine.position()
                try:
                    built = _build(runtime.ledger, fresh, scanner, built, target, report, progress)
                except Unprojectable as e:
                    report.add(Finding("projection", str(e)))
                    return
                with store.reading() as cur:
                    if _position(cur, LIVE) != target:
                        continue  # the live engine moved on meanwhile: build up to it and look again
                    for table in TABLES:
                        _compare(cur, table, report)
                report.projected_position = target
                report.projections_compared = True
                return
        report.add(Finding(
            "projection", f"the projections moved on during each of {COMPARE_ATTEMPTS} comparisons; "
            "run verify again when the ledger is quieter",
        ))
    finally:
        _drop(store, fresh)


def _drop(store: ReadStore, engine: ProjectionEngine) -> None:
    with store.transaction() as cur:
        engine.tables.drop(cur)
        engine.merkle.drop_tables(cur)


def _position(cur: Cursor, prefix: str) -> int:
    row = cur.execute(f"SELECT position FROM {prefix}tracking WHERE name = ?", (TRACKING_NAME,)).fetchone()
    return int(row[0]) if row else 0


def _build(
    ledger: Ledger, fresh: ProjectionEngine, scanner: LogScanner, after: int, target: int, report: VerifyReport,
    progress: Progress | None,
) -> int:
    """Apply the stored events after `after` up to `target` to the fresh tables, as the engine does.

    Each event is also checked to carry its data in canonical form: the feed serves the
    parsed body, and an auditor's hash of it equals the stored hash only then.
    """
    while after < target:
        raws = [raw for raw in scanner.raw(after, BUILD_BATCH) if raw[0] <= target]
        if not raws:
            break
        rows: list[Row] = []
        for raw in raws:
            try:
                event = ledger.decode_stored(*raw)
                row = row_of(event)
            except (UndecodableEvent, orjson.JSONDecodeError, TypeError, AttributeError):
                continue  # reported by the hash-chain check; the rebuild goes on without it
            if canonical_bytes(row.body["data"]) != event.data_json.encode():
                report.add(Finding(
                    "encoding", "the event's data is not stored in RFC 8785 canonical form, so the hash of the "
                    "body the feed serves differs from the stored hash", event.claim_id, event.version, event.position,
                ))
            rows.append(row)
        try:
            with fresh.store.transaction() as cur:
                fresh.apply(cur, rows)
        except (sqlite3.IntegrityError, psycopg.IntegrityError) as e:
            # Events that break a claim's rules (a second registration, say) can make rows the
            # read models' constraints refuse: the chain check names those events.
            raise Unprojectable(
                f"the stored events after position {after} cannot be projected, so the read models "
                f"were not compared ({type(e).__name__}: {str(e).splitlines()[0]}); the hash-chain "
                "findings name the events that break the claims' rules"
            ) from None
        after = raws[-1][0]
        if progress is not None:
            progress("projections", after, target)
    return after


def _compare(cur: Cursor, table: _Table, report: VerifyReport) -> None:
    live, rebuilt = table.name(LIVE), table.name(VERIFY_PREFIX)
    columns = ", ".join(table.columns)
    order = ", ".join(str(table.columns.index(k) + 1) for k in table.key)

    def except_(a: str, b: str) -> str:
        return f"SELECT {columns} FROM {a} EXCEPT SELECT {columns} FROM {b}"

    def count(sql: str) -> int:
        row = cur.execute(f"SELECT COUNT(*) FROM ({sql}) d").fetchone()
        return 0 if row is None else int(row[0])

    count_live, count_rebuilt = count(except_(live, rebuilt)), count(except_(rebuilt, live))
    if count_live == 0 and count_rebuilt == 0:
        sizes = [count(f"SELECT * FROM {name}") for name in (live, rebuilt)]
        if sizes[0] != sizes[1]:
            report.add(Finding("projection", f"{live} has {sizes[0]} rows where a fresh rebuild has {sizes[1]} "
                                             "(rows repeated)"))
        return
    shown = ROWS_SHOWN_PER_TABLE
    theirs = cur.execute(f"{except_(live, rebuilt)} ORDER BY {order} LIMIT ?", (shown,)).fetchall()
    ours = cur.execute(f"{except_(rebuilt, live)} ORDER BY {order} LIMIT ?", (shown,)).fetchall()
    live_rows = {_key(table, r): dict(zip(table.columns, r, strict=True)) for r in theirs}
    rebuilt_rows = {_key(table, r): dict(zip(table.columns, r, strict=True)) for r in ours}
    for key in sorted(live_rows.keys() | rebuilt_rows.keys(), key=repr):
        have, want = live_rows.get(key), rebuilt_rows.get(key)
        row = have or want
        assert row is not None
        if have is not None and want is not None:
            detail = f"{live}{_row_key(table, row)} differs from a fresh rebuild: " + "; ".join(
                _differences(have, want)
            )
        elif have is not None:
            detail = f"{live} has a row a fresh rebuild does not: {_shown(have)}"
        else:
            detail = f"{live} lacks a row a fresh rebuild has: {_shown(row)}"
        claim_id, version, position = _where(cur, table, row)
        report.add(Finding("projection", detail, claim_id, version, position))
    rest = max(count_live, count_rebuilt) - len(live_rows.keys() | rebuilt_rows.keys())
    if rest > 0:
        report.add(Finding("projection", f"{live}: {rest} more differing rows not listed"))


def _row_key(table: _Table, row: dict[str, Any]) -> str:
    """The row's key, where the claim and position named beside it do not already say it."""
    if table.key in (("claim_id",), ("position",)):
        return ""
    if table.base == "merkle_nodes":
        level, idx = int(row["level"]), int(row["idx"])
        first, last = idx << level, ((idx + 1) << level) - 1
        return f" row level={level}, idx={idx} (the subtree of leaves {first}..{last})"
    return " row " + ", ".join(f"{k}={_value(row[k])}" for k in table.key)


def _key(table: _Table, row: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(row[table.columns.index(k)] for k in table.key)


def _differences(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for column, value in have.items():
        expected = want[column]
        if value == expected:
            continue
        if column in JSON_COLUMNS:
            try:
                found.extend(_json_differences(column, orjson.loads(value), orjson.loads(expected)))
                continue
            except orjson.JSONDecodeError:
                pass
        found.append(f"{column} is {_value(value)} but the rebuild has {_value(expected)}")
    return found


def _json_differences(path: str, have: Any, want: Any) -> list[str]:
    """The innermost fields where two JSON values differ, e.g. `body.data.quote`."""
    if have == want:
        return []
    if isinstance(have, dict) and isinstance(want, dict):
        return [d for name in sorted(have.keys() | want.keys())
                for d in _json_differences(f"{path}.{name}", have.get(name), want.get(name))]
    return [f"{path} is {_value(have)} but the rebuild has {_value(want)}"]


def _value(value: Any) -> str:
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if not isinstance(value, str):
        return orjson.dumps(value).decode()[:120]
    return repr(value if len(value) <= 120 else value[:117] + "...")


def _shown(row: dict[str, Any]) -> str:
    return ", ".join(f"{name}={_value(value)}" for name, value in row.items())


def _where(cur: Cursor, table: _Table, row: dict[str, Any]) -> tuple[str | None, int | None, int | None]:
    """The claim, version and position a differing row stands for, where it has them."""
    position = row.get("position")
    if "claim_id" not in row and position is not None:
        for prefix in (VERIFY_PREFIX, LIVE):
            found = cur.execute(
                f"SELECT claim_id, version FROM {prefix}history WHERE position = ?", (position,)
            ).fetchone()
            if found:
                return str(found[0]), int(found[1]), int(position)
        return None, None, int(position)
    version = row.get("version")
    return row.get("claim_id"), None if version is None else int(version), (
        None if position is None or table.base == "claims" else int(position)
    )


def _name_claims(ledger: Ledger, report: VerifyReport) -> None:
    """Put each finding's claim key beside its id (read from the claim's first stored event)."""
    keys: dict[str, str | None] = {}
    for i, finding in enumerate(report.findings):
        claim_id = finding.claim_id
        if claim_id is None:
            continue
        if claim_id not in keys:
            keys[claim_id] = _claim_key(ledger, claim_id)
        if keys[claim_id]:
            report.findings[i] = Finding(finding.check, finding.detail, claim_id, finding.version,
                                         finding.position, keys[claim_id])


def _claim_key(ledger: Ledger, claim_id: str) -> str | None:
    try:
        stored = ledger.recorder.select_events(UUID(claim_id), lte=1)
        if not stored:
            return None
        first: Claim.Event = ledger.mapper.to_domain_event(stored[0])  # type: ignore[assignment]
        key = first.data.get("key")
    except Exception:  # a damaged first event: the id alone names the claim
        return None
    return key if isinstance(key, str) else None
