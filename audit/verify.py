"""`claims verify`: the whole store checked against itself.

Three checks, each naming the claim and version where something does not hold:
every stored event's hash and its claim's hash chain; the Merkle root of all events in
log order against the root the projections' Merkle log holds; every read-model table
against a fresh rebuild into ``vf_`` tables (dropped afterwards).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import orjson

from audit.merkle import EMPTY_ROOT, MerkleLog, TreeHasher, leaf_hash
from domain.canonical import GENESIS_HASH, body_text, canonical_bytes
from domain.claim import Claim
from domain.errors import LedgerError
from domain.ledger import Ledger, UndecodableEvent
from projections.engine import MERKLE_TABLES, TRACKING_NAME, ProjectionEngine, Row, row_of
from projections.tables import LIVE
from service.runtime import Runtime
from store.db import Cursor, ReadStore
from store.log import LogScanner, scanning

VERIFY_PREFIX = "vf_"
SCAN_BATCH = 20_000
BUILD_BATCH = 10_000
COMPARE_ATTEMPTS = 5
MAX_FINDINGS = 1_000
ROWS_SHOWN_PER_TABLE = 20

# (stage, done, total): stage is "hash chains" or "projections".
Progress = Callable[[str, int, int], None]
# A stored event as its table holds it: (position, claim id, version, topic, state).
RawEvent = tuple[int, str, int, str, bytes]
# Its stored fields, in LoggedEvent's order: (position, claim id, version, type,
# recorded_at, prev_hash, hash, data_json). A tuple: the hot loop unpacks millions.
Fields = tuple[int, str, int, str, str, str, str, str]
Scan = Callable[[int, int], list[RawEvent]]


@dataclass(frozen=True)
class Finding:
    """One thing that does not hold, and where it is."""

    check: str  # event-hash, chain, version, type, decode, encoding, merkle, projection
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
    runtime: Runtime, progress: Progress | None = None, *, projections: bool = True
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


# -- Reading the event store ---------------------------------------------------------------


# -- Check 1 and 2: hashes, chains, Merkle root ----------------------------------------------


def _check_log(runtime: Runtime, report: VerifyReport, progress: Progress | None) -> None:
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
    chains: dict[str, tuple[int, str]] = {}
    hasher = TreeHasher()
    root_at_checked = EMPTY_ROOT if checked_size == 0 else None
    sha256 = hashlib.sha256
    after = 0
    decode = ledger.decode_stored
    with scanning(ledger, snapshot=True) as scanner:
        while rows := scanner.raw(after, SCAN_BATCH):
            for raw in rows:
                try:
                    event = decode(*raw)
                    position, claim_id, version, kind = event.position, event.claim_id, event.version, event.type
                    recorded_at, prev_hash, stored = event.recorded_at, event.prev_hash, event.hash
                    data_json = event.data_json
                except UndecodableEvent as problem:
                    report.add(Finding("decode", f"the stored event cannot be read: {problem}",
                                       raw[1], raw[2], raw[0]))
                    hasher.append(leaf_hash(raw[4]))  # keeps later leaves in place; the root will differ
                else:
                    text = body_text(claim_id=claim_id, version=version, type=kind, recorded_at=recorded_at,
                                     prev_hash=prev_hash, data_json=data_json)
                    digest = sha256(text.encode()).hexdigest()
                    last_version, last_hash = chains.get(claim_id, (0, GENESIS_HASH))
                    if digest != stored or version != last_version + 1 or prev_hash != last_hash or (
                        (version == 1) != (kind == "ClaimRegistered")
                    ):
                        _report_event(report, digest, last_version, last_hash, raw[0], claim_id, version, kind,
                                      prev_hash, stored)
                    chains[claim_id] = (version, stored)
                    try:
                        hasher.append(sha256(b"\x00" + bytes.fromhex(stored)).digest())
                    except ValueError:
                        report.add(Finding("event-hash", f"the stored hash {stored!r:.80} is not 64 hex digits",
                                           claim_id, version, position))
                        hasher.append(leaf_hash(stored.encode()))
                if hasher.size == checked_size:
                    root_at_checked = hasher.root()
            after = rows[-1][0]
            if progress is not None:
                progress("hash chains", after, max(total, after))
    report.events = hasher.size
    report.store_position = after
    report.claims = len(chains)
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


def _report_event(
    report: VerifyReport, digest: str, last_version: int, last_hash: str, position: int, claim_id: str,
    version: int, kind: str, prev_hash: str, stored: str,
) -> None:
    """What is wrong with an event: its own hash, or its place in its claim's chain."""
    if digest != stored:
        report.add(Finding(
            "event-hash", f"the stored event was changed after it was recorded: its fields hash to {digest} "
            f"but it carries the hash {stored}", claim_id, version, position,
        ))
    if version != last_version + 1:
        detail = (f"the claim's first event in the log is version {version}, not 1" if last_version == 0 else
                  f"version {version} follows version {last_version} in the log; a claim's versions run 1, 2, 3, ...")
        report.add(Finding("version", detail, claim_id, version, position))
    elif prev_hash != last_hash:
        expected = "64 zeros (it is the claim's first event)" if last_version == 0 else \
            f"{last_hash}, the hash of version {last_version}"
        report.add(Finding("chain", f"prev_hash is {prev_hash} but must be {expected}", claim_id, version, position))
    if (version == 1) != (kind == "ClaimRegistered"):
        detail = (f"a claim's first event is ClaimRegistered, not {kind}" if version == 1 else
                  "ClaimRegistered after the claim's first event: a claim is registered once")
        report.add(Finding("type", detail, claim_id, version, position))


# -- Check 3: projections against a fresh rebuild --------------------------------------------


@dataclass(frozen=True)
class _Table:
    base: str
    key: tuple[str, ...]
    columns: tuple[str, ...]
    sqlite_only: bool = False

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
    _Table("history", ("position",), ("position", "claim_id", "version", "type", "act_id", "hash", "body")),
    _Table("search", ("claim_id",), ("claim_id", "statement")),
    _Table("merkle_leaves", ("leaf_index",), ("leaf_index", "position", "hash")),
    _Table("merkle_nodes", ("level", "idx"), ("level", "idx", "hash")),
)
JSON_COLUMNS = frozenset({"view", "item", "body"})


def _check_projections(runtime: Runtime, report: VerifyReport, progress: Progress | None) -> None:
    store = runtime.store
    fresh = ProjectionEngine(runtime.ledger, store, prefix=VERIFY_PREFIX, batch_size=BUILD_BATCH, gap_wait=0.0)
    _drop(store, fresh)  # left by a verify that was killed
    fresh.ensure_tables()
    try:
        built = 0
        with scanning(runtime.ledger, snapshot=False) as scanner:
            for _ in range(COMPARE_ATTEMPTS):
                target = runtime.engine.position()
                built = _build(runtime.ledger, fresh, scanner, built, target, report, progress)
                with store.reading() as cur:
                    if _position(cur, LIVE) != target:
                        continue  # the live engine moved on meanwhile: build up to it and look again
                    for table in TABLES:
                        if not table.sqlite_only or cur.backend == "sqlite":
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
        for name in MERKLE_TABLES:
            cur.execute(f"DROP TABLE IF EXISTS {engine.tables.prefix}{name}")


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
        with fresh.store.transaction() as cur:
            fresh.apply(cur, rows)
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
