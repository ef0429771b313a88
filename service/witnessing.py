"""The ledger's witnesses: each new checkpoint submitted to every configured witness (C2SP
tlog-witness), their cosignatures kept and served with the checkpoint.

One thread watches the tree head (the projections' Merkle log); one thread per witness
submits the newest checkpoint to it, at most once per LEDGER_WITNESS_INTERVAL, with the
consistency proof from the size that witness last cosigned (learned from its 409 answer when
not known: after a start, the first submission says `old 0`). A witness that is down or
refuses changes nothing for the ledger: it keeps writing and serving, and `/healthz` and
`/metrics` name the witness and why.

Each witness's cosignatures of its latest trees are kept in memory and in the ledger's
database (`ledger_cosignatures`), so a restarted ledger serves them at once, witnesses up or
not; each is checked again as it is loaded.

On PostgreSQL several nodes may serve one ledger: one at a time submits, the holder of the
witnessing lease (store/lease.py); the others stand by, take the cosignatures it keeps from
the table, and take over the submissions when its session ends.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from domain.errors import InvalidInput
from domain.note import Note, NoteError, Signature
from service.runtime import Runtime
from store.db import ReadStore
from store.lease import Lease
from store.settings import WitnessEndpoint

log = logging.getLogger("claims.witnessing")

SIZE_MEDIA_TYPE = "text/x.tlog.size"
HEAD_POLL_SECONDS = 0.02  # how often the tree head is looked at
BACKOFF_CAP_SECONDS = 30.0
KEPT_TREES = 64  # cosignatures kept per witness: its latest trees
MAX_PROOF_LINES = 63

Tree = tuple[int, bytes]  # (size, root hash)
SignCheckpoint = Callable[[int, bytes], Note]  # the ledger's signed checkpoint note of a tree
ReadHead = Callable[[], Tree]  # the current tree
ReadProof = Callable[[int, int], list[bytes]]  # RFC 9162 consistency proof from one size to another


TABLE = "ledger_cosignatures"


class CosignatureTable:
    """The cosignatures kept in the ledger's database: per witness (its verifier key), its latest trees."""

    def __init__(self, store: ReadStore) -> None:
        self.store = store

    def ensure_table(self) -> None:
        with self.store.transaction() as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (witness TEXT NOT NULL, size BIGINT NOT NULL, "
                "root_hash TEXT NOT NULL, line TEXT NOT NULL, PRIMARY KEY (witness, size, root_hash))"
            )

    def keep(self, witness: str, tree: Tree, signature: Signature) -> None:
        """Keep the cosignature of `tree`, and the witness's KEPT_TREES latest trees only."""
        with self.store.transaction() as cur:
            cur.execute(
                f"INSERT INTO {TABLE} (witness, size, root_hash, line) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (witness, size, root_hash) DO UPDATE SET line = excluded.line",
                (witness, tree[0], tree[1].hex(), signature.line()),
            )
            cur.execute(
                f"DELETE FROM {TABLE} WHERE witness = ? AND size NOT IN "
                f"(SELECT size FROM {TABLE} WHERE witness = ? ORDER BY size DESC LIMIT {KEPT_TREES})",
                (witness, witness),
            )

    def load(self, witness: str) -> list[tuple[Tree, Signature]]:
        """The witness's kept cosignatures, oldest tree first (rows that do not parse are skipped)."""
        with self.store.reading() as cur:
            rows = cur.execute(
                f"SELECT size, root_hash, line FROM {TABLE} WHERE witness = ? ORDER BY size", (witness,)
            ).fetchall()
        kept = []
        for size, root_hex, line in rows:
            try:
                kept.append(((int(size), bytes.fromhex(root_hex)), Signature.parse_line(line)))
            except (ValueError, NoteError):
                log.warning("a kept cosignature of %s does not parse; it is ignored", witness)
        return kept


class WitnessProblem(Exception):
    """Why a witness did not cosign: a short reason (a metrics label) and what it means."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class WitnessView:
    """What the ledger knows of one witness."""

    endpoint: WitnessEndpoint
    known_size: int | None = None  # the size the witness last cosigned, as far as the ledger knows
    cosigned: OrderedDict[Tree, Signature] = field(default_factory=OrderedDict)
    latest: Tree | None = None  # the newest tree it cosigned
    reason: str | None = None  # None: its last answer was a cosignature (or it has not been asked yet)
    problem: str | None = None
    asked: bool = False
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def name(self) -> str:
        return self.endpoint.name

    def health(self) -> dict[str, object]:
        status = "failing" if self.reason is not None else "ok" if self.asked else "pending"
        return {
            "name": self.name, "url": self.endpoint.url, "status": status,
            "cosigned_size": None if self.latest is None else self.latest[0], "problem": self.problem,
        }


class Witnessing:
    """The background submission of checkpoints to witnesses, and the cosignatures they gave."""

    def __init__(
        self, endpoints: Sequence[WitnessEndpoint], sign: SignCheckpoint, head: ReadHead, proof: ReadProof, *,
        interval: float = 1.0, timeout: float = 5.0, table: CosignatureTable | None = None,
        lease: Lease | None = None, lease_retry: float = 0.5,
    ) -> None:
        self.views = [WitnessView(e) for e in endpoints]
        self.sign = sign
        self.read_head = head
        self.read_proof = proof
        self.interval = interval
        self.timeout = timeout
        self.table = table
        self.lease = lease  # None: this process submits, alone
        self.lease_retry = lease_retry
        self._head: Tree | None = None
        self._changed = threading.Condition()
        self._lock = threading.Lock()  # guards each view's cosignatures and status
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- What the API asks --------------------------------------------------------------------

    def cosignatures(self, size: int, root_hash: bytes) -> list[Signature]:
        """The witnesses' cosignatures of the tree (size, root_hash), in the configured order."""
        with self._lock:
            return [s for v in self.views if (s := v.cosigned.get((size, root_hash))) is not None]

    def health(self) -> list[dict[str, object]]:
        with self._lock:
            return [v.health() for v in self.views]

    def collector(self) -> Collector:
        return WitnessCollector(self)

    # -- Kept cosignatures ---------------------------------------------------------------------

    def restore(self) -> None:
        """Take back the cosignatures the table kept, each checked on the checkpoint it is of."""
        for view in self.views:
            self._restore(view)

    def _restore(self, view: WitnessView) -> None:
        """Take back one witness's kept cosignatures (those not held already)."""
        if self.table is None:
            return
        verifier = view.endpoint.verifier
        try:
            with self._lock:
                held = set(view.cosigned)
            kept = [(tree, signature, self.sign(*tree).text) for tree, signature in self.table.load(str(verifier))
                    if tree not in held]
        except Exception as e:  # the ledger still starts; the witnesses cosign again as the log grows
            log.warning("could not take back %s's kept cosignatures: %s", view.name, e)
            return
        for tree, signature, text in kept:
            if verifier not in Note(text, (signature,)).verified_by([verifier]):
                log.warning("a kept cosignature of %s does not verify on the tree of %d; it is ignored",
                            view.name, tree[0])
                continue
            with self._lock:
                view.cosigned[tree] = signature
                if view.latest is None or tree[0] >= view.latest[0]:
                    view.latest, view.known_size = tree, tree[0]
                while len(view.cosigned) > KEPT_TREES:
                    view.cosigned.popitem(last=False)

    def _keep(self, view: WitnessView, tree: Tree, signature: Signature) -> None:
        if self.table is None:
            return
        try:
            self.table.keep(str(view.endpoint.verifier), tree, signature)
        except Exception as e:  # the database is down: the cosignature is still served from memory
            log.warning("could not keep %s's cosignature of the tree of %d: %s", view.name, tree[0], e)

    # -- Threads ------------------------------------------------------------------------------

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._watch_head, name="witness-head", daemon=True)]
        self._threads += [
            threading.Thread(target=self._serve_witness, args=(view,), name=f"witness-{i + 1}", daemon=True)
            for i, view in enumerate(self.views)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        for thread in self._threads:
            thread.join(self.timeout + 2)
        if self.lease is not None:
            self.lease.release()

    def _watch_head(self) -> None:
        failing_since: float | None = None
        while not self._stop.is_set():
            try:
                head = self.read_head()
                failing_since = None
            except Exception as e:  # the database is down: the API says so; try again shortly
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("witnessing cannot read the tree head: %s", e)
                self._stop.wait(1.0)
                continue
            if head != self._head:
                with self._changed:
                    self._head = head
                    self._changed.notify_all()
            self._stop.wait(HEAD_POLL_SECONDS)

    def _next_tree(self, view: WitnessView) -> Tree | None:
        """Wait until there is a tree this witness has not cosigned (None once stopping)."""
        with self._changed:
            while not self._stop.is_set():
                head = self._head
                if head is not None and head != view.latest:
                    return head
                self._changed.wait(1.0)
        return None

    def _serve_witness(self, view: WitnessView) -> None:
        failures = 0
        with httpx.Client(timeout=self.timeout) as http:
            while True:
                tree = self._next_tree(view)
                if tree is None:
                    return
                if self.lease is not None and not self.lease.keep():
                    # Another node submits: serve what it keeps in the table.
                    self._restore(view)
                    self._stop.wait(self.lease_retry)
                    continue
                started = time.monotonic()
                failures = 0 if self.submit(view, tree, http) else failures + 1
                self._stop.wait(max(0.0, self.pause(failures) - (time.monotonic() - started)))

    def pause(self, failures: int) -> float:
        """Seconds from one submission to the next: the interval, doubled after each failure in a
        row up to BACKOFF_CAP_SECONDS (a witness that is down is not hammered)."""
        if failures == 0:
            return self.interval
        return max(self.interval, min(self.interval * 2 ** min(failures, 20), BACKOFF_CAP_SECONDS))

    # -- One submission -----------------------------------------------------------------------

    def submit(self, view: WitnessView, tree: Tree, http: httpx.Client) -> bool:
        """Submit the checkpoint of `tree` to the witness; True when it cosigned it."""
        try:
            signature = self._add_checkpoint(view, tree, http)
        except WitnessProblem as e:
            with self._lock:
                if view.reason != e.reason or view.problem != e.detail:
                    log.warning("witness %s did not cosign the tree of %d: %s", view.name, tree[0], e.detail)
                view.reason, view.problem, view.asked = e.reason, e.detail, True
                view.outcomes[e.reason] += 1
            return False
        with self._lock:
            view.cosigned[tree] = signature
            view.cosigned.move_to_end(tree)
            while len(view.cosigned) > KEPT_TREES:
                view.cosigned.popitem(last=False)
            view.latest, view.known_size = tree, tree[0]
            if view.reason is not None:
                log.info("witness %s cosigns again (tree of %d)", view.name, tree[0])
            view.reason, view.problem, view.asked = None, None, True
            view.outcomes["cosigned"] += 1
        self._keep(view, tree, signature)
        return True

    def _add_checkpoint(self, view: WitnessView, tree: Tree, http: httpx.Client) -> Signature:
        size, root = tree
        try:
            note = self.sign(size, root)
        except Exception as e:
            raise WitnessProblem("unsigned", f"the ledger could not sign its checkpoint: {e}") from None
        old = view.known_size or 0
        for _ in range(3):  # a 409 teaches the witness's size; the retry uses it
            if old > size:
                raise WitnessProblem(
                    "ahead", f"the witness has cosigned a tree of {old} events and the ledger's has {size}: "
                    "the ledger's log was rolled back or replaced since",
                )
            body = submission(old, self._proof(old, size), note)
            try:
                response = http.post(f"{view.endpoint.url}/add-checkpoint", content=body,
                                     headers={"Content-Type": "text/plain; charset=utf-8"})
            except httpx.HTTPError as e:
                raise WitnessProblem(
                    "unreachable", f"unreachable at {view.endpoint.url}: {str(e) or type(e).__name__}"
                ) from None
            if response.status_code == 409 and response.headers.get("content-type", "").split(";")[0] == SIZE_MEDIA_TYPE:
                old = _size_answer(response)
                with self._lock:
                    view.known_size = old
                continue
            if response.status_code == 200:
                return _cosignature(view, note, response)
            raise _refusal(response, old, size)
        raise WitnessProblem("unsettled", "the witness's size kept changing while the ledger submitted to it")

    def _proof(self, old: int, size: int) -> list[bytes]:
        if not 0 < old < size:
            return []
        try:
            return self.read_proof(old, size)
        except Exception as e:
            raise WitnessProblem("no-proof", f"the ledger could not read its consistency proof from {old} to {size}: {e}") from None


def submission(old: int, proof: Sequence[bytes], note: Note) -> bytes:
    """An add-checkpoint body: `old <size>`, the proof's hashes in base64, an empty line, the note."""
    if len(proof) > MAX_PROOF_LINES:
        raise InvalidInput(f"a consistency proof of {len(proof)} hashes is longer than tlog-witness allows")
    lines = [f"old {old}", *(base64.b64encode(h).decode("ascii") for h in proof)]
    return ("\n".join(lines) + "\n\n" + str(note)).encode("utf-8")


def _size_answer(response: httpx.Response) -> int:
    text = response.text
    if not text.endswith("\n") or not text[:-1].isdigit() or (len(text) > 2 and text[0] == "0"):
        raise WitnessProblem("bad-answer", f"the witness's 409 size answer is not a decimal size line: {text[:80]!r}")
    return int(text[:-1])


def _cosignature(view: WitnessView, note: Note, response: httpx.Response) -> Signature:
    """The witness's valid cosignature in its 200 answer (lines of other keys are ignored)."""
    verifier = view.endpoint.verifier
    try:
        lines = [Signature.parse_line(line) for line in response.text.splitlines(keepends=True)]
        cosigned = note.with_signatures(*(s for s in lines if (s.name, s.key_id) == (verifier.name, verifier.key_id)))
    except NoteError as e:
        raise WitnessProblem("bad-answer", f"the witness answered 200 without cosignature lines: {e}") from None
    if verifier not in cosigned.verified_by([verifier]):
        raise WitnessProblem(
            "bad-cosignature", f"the witness answered no valid cosignature of its configured key {verifier}"
        )
    return cosigned.signatures_by(verifier)[0]


def _refusal(response: httpx.Response, old: int, size: int) -> WitnessProblem:
    status = response.status_code
    try:
        detail = str(response.json().get("detail") or "")
    except (ValueError, AttributeError):
        detail = response.text.strip()[:200]
    said = f" (it says: {detail})" if detail else ""
    if status == 403:
        return WitnessProblem("refused-key", f"refuses the ledger's signing key: start it with `--log` and the "
                                             f"ledger's verifier key{said}")
    if status == 404:
        return WitnessProblem("unknown-log", f"does not follow this ledger's log{said}")
    if status == 422:
        return WitnessProblem(
            "inconsistent", f"refuses the consistency proof from {old} to {size} events: the tree it cosigned is "
            f"not a prefix of the ledger's now (the log was rewritten?){said}",
        )
    if status == 409:
        return WitnessProblem(
            "fork", f"has cosigned another tree of {size} events: the ledger presents two trees of one size{said}"
        )
    return WitnessProblem(f"http-{status}", f"answered {status}{said}")


class WitnessCollector(Collector):
    """The witnesses' state for /metrics, read at scrape time."""

    def __init__(self, witnessing: Witnessing) -> None:
        self.witnessing = witnessing

    def collect(self) -> Iterator[Metric]:
        ok = GaugeMetricFamily("claims_witness_ok", "1 when the witness's last answer was a cosignature",
                               labels=["witness"])
        problem = GaugeMetricFamily(
            "claims_witness_problem", "1 for a witness whose last answer was not a cosignature, by reason",
            labels=["witness", "reason"],
        )
        size = GaugeMetricFamily("claims_witness_cosigned_size", "Tree size of the witness's newest cosignature",
                                 labels=["witness"])
        submissions = CounterMetricFamily(
            "claims_witness_submissions", "Checkpoints submitted to the witness, by outcome",
            labels=["witness", "outcome"],
        )
        with self.witnessing._lock:
            for view in self.witnessing.views:
                ok.add_metric([view.name], 1.0 if view.reason is None and view.asked else 0.0)
                if view.reason is not None:
                    problem.add_metric([view.name, view.reason], 1.0)
                size.add_metric([view.name], float(view.latest[0]) if view.latest else 0.0)
                for outcome, count in sorted(view.outcomes.items()):
                    submissions.add_metric([view.name, outcome], float(count))
        yield from (ok, problem, size, submissions)


def open_witnessing(runtime: Runtime) -> Witnessing | None:
    """The witnessing of the ledger `runtime` opened, as LEDGER_WITNESSES configures it (None: no witnesses),
    with the cosignatures its table kept.

    Not started: `start()` it, and `stop()` it before the runtime closes.
    """
    settings = runtime.database.settings
    endpoints = settings.witness_endpoints()
    if not endpoints:
        return None
    table = CosignatureTable(runtime.store)
    table.ensure_table()
    witnessing = Witnessing(endpoints, runtime.sign_checkpoint, runtime.tree_head, runtime.consistency, interval=settings.witness_interval,
                            timeout=settings.witness_timeout, table=table,
                            lease=Lease(runtime.database, "witnessing"), lease_retry=settings.lease_retry_seconds)
    witnessing.restore()
    return witnessing
