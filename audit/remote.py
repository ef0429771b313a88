"""`claims audit`: check a remote ledger trusting nothing but a kept checkpoint and the pinned key.

The auditor fetches a new checkpoint (a C2SP tlog-checkpoint in a signed note), checks it
with the pinned key, checks that the kept one is a prefix of it (an RFC 9162 consistency proof), pulls the whole feed, recomputes every event's hash, every
claim's chain and the Merkle root, folds every claim with the ledger's own fold and compares
it with what the server serves. The new checkpoint replaces the kept one only when all holds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import client
from audit.chain import ChainCheck
from audit.signing import (
    JSON_CHECKPOINT_FIELDS,
    PinnedKey,
    read_checkpoint_note,
    verify_json_checkpoint,
    write_private,
)
from client import LedgerClient
from domain import ijson
from domain.canonical import canonical_bytes
from domain.errors import InvalidInput, InvalidJson, LedgerError
from domain.fold import ClaimFold
from domain.ijson import safe_integer
from domain.merkle import TreeHasher, event_leaf_hash, verify_consistency
from domain.note import COSIGNATURE_V1, Note, NoteError, Verifier

Json = dict[str, Any]
Progress = Callable[[str, int, int], None]  # (stage, done, total; 0 when unknown)

BODY_FIELDS = frozenset({"claim_id", "version", "type", "recorded_at", "prev_hash", "data"})
# The fields of GET /v1/claims/{id} that the fold alone determines: all of them.
VIEW_FIELDS = ("id", "key", "statement", "language", "subjects", "status", "stances", "reviews", "counts",
               "version", "registered_at", "updated_at")
LIST_PAGE = 500
CLAIM_READERS = 8
MAX_PROBLEMS = 200
TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class AuditAbort(Exception):
    """A problem after which nothing further can be trusted or checked."""


@dataclass
class AuditReport:
    """What `audit_ledger` checked, what it found, and whether it saved the new checkpoint."""

    url: str
    pinned: PinnedKey | None = None
    kept: Kept | None = None
    checkpoint: Json | None = None  # the new checkpoint, checked: origin, tree_size, root_hash (hex), note
    events: int = 0
    claims: int = 0
    problems: list[str] = field(default_factory=list)
    omitted: int = 0
    notes: list[str] = field(default_factory=list)
    saved: bool = False
    witnessed: str | None = None  # with --witness: which witnesses cosigned the checkpoint

    @property
    def ok(self) -> bool:
        return not self.problems and not self.omitted

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self.omitted += 1

    def lines(self) -> list[str]:
        lines = list(self.notes)
        if self.checkpoint is not None:
            lines.append(f"checkpoint: {self.checkpoint['tree_size']} events, root {self.checkpoint['root_hash']}, "
                         f"origin {self.checkpoint['origin']}")
        if self.witnessed is not None:
            lines.append(self.witnessed)
        lines.append(f"feed: {self.events} events of {self.claims} claims")
        lines.extend(f"problem: {p}" for p in self.problems)
        if self.omitted:
            lines.append(f"... and {self.omitted} more problems")
        if self.ok:
            lines.append("all checks hold" + ("; the new checkpoint is saved" if self.saved else ""))
        else:
            lines.append(f"{len(self.problems) + self.omitted} problem(s); the kept checkpoint is left as it was")
        return lines


# -- The kept checkpoint and the pinned key -----------------------------------------------------


@dataclass(frozen=True)
class Kept:
    """A kept checkpoint: a signed note, or (once, as it is replaced) a checkpoint in the former
    JSON format; and the key pinned with it."""

    tree_size: int
    root_hash: str  # hex
    origin: str | None = None  # None for the former format, which had none
    note: Note | None = None
    former: Json | None = None
    fields: Json = field(default_factory=dict)  # what the file says beside the note, checked against it
    pinned: PinnedKey | None = None


def read_kept(path: Path) -> Kept | None:
    """The checkpoint kept in `path` with the key pinned with it (None when there is none yet)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise InvalidInput(f"the checkpoint file {path} cannot be read as JSON ({e}); fix or remove it") from None
    return parse_kept(raw, path)


def parse_kept(raw: bytes, path: Path | str) -> Kept:
    """A kept checkpoint from the text `claims audit` keeps (in a file or in a mirror, `path`)."""
    try:
        kept = ijson.loads(raw)
    except InvalidJson as e:
        raise InvalidInput(f"the checkpoint file {path} cannot be read as JSON ({e}); fix or remove it") from None
    if isinstance(kept, dict) and isinstance(kept.get("note"), str):
        try:
            note, checkpoint = read_checkpoint_note(kept["note"])
        except NoteError as e:
            raise InvalidInput(f"the note in the checkpoint file {path} is not a signed checkpoint: {e}") from None
        pinned = _pin(kept.get("verifier_key"), f"the verifier_key in {path}")
        return Kept(checkpoint.size, checkpoint.root_hash.hex(), checkpoint.origin, note,
                    fields={k: kept.get(k) for k in ("origin", "tree_size", "root_hash")}, pinned=pinned)
    if isinstance(kept, dict) and kept.keys() >= JSON_CHECKPOINT_FIELDS:
        former = {name: kept[name] for name in JSON_CHECKPOINT_FIELDS}
        if type(former["tree_size"]) is not int or not isinstance(former["root_hash"], str):
            raise InvalidInput(f"the checkpoint file {path} holds a JSON checkpoint without a whole tree_size "
                               "and a hex root_hash")
        return Kept(former["tree_size"], former["root_hash"], former=former,
                    pinned=_pin(kept.get("public_key"), f"the public_key in {path}"))
    raise InvalidInput(
        f"the checkpoint file {path} does not hold a checkpoint: a kept one is "
        "{origin, tree_size, root_hash, note, verifier_key}, as `claims audit` writes it"
    )


def _pin(value: object, where: str) -> PinnedKey | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{where} is not text")
    try:
        return PinnedKey.parse(value)
    except InvalidInput as e:
        raise InvalidInput(f"{where}: {e}") from None


def read_public_key(path: Path) -> PinnedKey:
    """A pinned key file: the hex key, the verifier key, or the JSON GET /v1/audit/public-key answers."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"the public key file {path} cannot be read ({e})") from None
    try:
        return PinnedKey.parse(text)
    except InvalidInput as e:
        raise InvalidInput(f"{path} must hold the ledger's key (see `claims audit-key`): {e}") from None


def kept_text(checkpoint: Mapping[str, Any], pinned: PinnedKey) -> str:
    """The checkpoint as it is kept: with the key it was checked with, as a verifier key."""
    kept = {name: checkpoint[name] for name in ("origin", "tree_size", "root_hash", "note")}
    kept["verifier_key"] = str(pinned.verifier(checkpoint["origin"]))
    return json.dumps(kept, indent=2, ensure_ascii=False) + "\n"


def save_checkpoint(path: Path, checkpoint: Mapping[str, Any], pinned: PinnedKey) -> None:
    """Write the checkpoint (with the key it was checked with, as a verifier key) whole or not at all."""
    write_private(path, kept_text(checkpoint, pinned).encode())


# -- The remote ledger --------------------------------------------------------------------------


class Remote:
    """The ledger's HTTP API as the auditor uses it: the ledger's client (client/), each of
    its errors an AuditAbort naming the request and what came back."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.api = LedgerClient(self.url, token, timeout=TIMEOUT)

    def close(self) -> None:
        self.api.close()

    def get(self, path: str, **params: Any) -> Json:
        try:
            return self.api.get(path, params)
        except client.LedgerError as e:
            raise AuditAbort(_failure(path, e)) from None

    def get_or_none(self, path: str, **params: Any) -> Json | None:
        """Like `get`, but None for a 404."""
        try:
            return self.api.get(path, params)
        except client.NotFound:
            return None
        except client.LedgerError as e:
            raise AuditAbort(_failure(path, e)) from None

    def feed(self, after: int) -> Iterator[Json]:
        """Every feed item after `after`, in log order, streamed one a line."""
        try:
            yield from self.api.iter_events(after)
        except client.LedgerError as e:
            raise AuditAbort(_failure("/v1/events", e)) from None


def _failure(path: str, error: client.LedgerError) -> str:
    """What went wrong with a request: no answer, an answer not I-JSON, or an error answer."""
    if error.status is None or isinstance(error, client.InvalidResponse):
        return error.detail
    return f"GET {path} answered {error.status}: {error.detail}"


# -- The audit ----------------------------------------------------------------------------------


Sink = Callable[[int, Json], None]  # (the item's leaf index, the item) for each item taken


@dataclass
class _Replay:
    """The feed as the auditor rebuilds it: hashes, chains, tree and every claim's fold.

    A mirror (audit/mirror.py) resumes one: its chains and tree go on from the mirror's, the
    items go to `sink` rather than into folds (`fold=False`: the claims are folded from the
    mirror afterwards), and the feed is read up to the checkpoint's tree size only.
    """

    tree_size: int
    chains: ChainCheck = field(default_factory=ChainCheck)
    hasher: TreeHasher = field(default_factory=TreeHasher)
    root_at_size: bytes | None = None
    last_position: int = 0
    folds: dict[str, ClaimFold] = field(default_factory=dict)
    events: int = 0
    fold: bool = True
    sink: Sink | None = None
    touched: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.hasher.size == self.tree_size:
            self.root_at_size = self.hasher.root()

    @property
    def complete(self) -> bool:
        """Whether the tree has reached the checkpoint's size (a mirror reads no further)."""
        return self.hasher.size >= self.tree_size

    def take(self, item: object, report: AuditReport) -> None:
        if not isinstance(item, dict) or set(item) != {"position", "hash", "body"}:
            raise AuditAbort(f"a feed item after position {self.last_position} is not {{position, hash, body}}")
        position, stated, body = item["position"], item["hash"], item["body"]
        try:
            safe_integer(position, "position", minimum=1)
        except InvalidInput as e:
            raise AuditAbort(f"a feed item after position {self.last_position}: {e}") from None
        if position <= self.last_position:
            raise AuditAbort(f"the feed's positions do not increase: {position!r} after {self.last_position}")
        if not isinstance(body, dict) or set(body) != BODY_FIELDS or not isinstance(body["data"], dict):
            raise AuditAbort(f"the body at position {position} does not have the fields {sorted(BODY_FIELDS)}")
        claim_id, version, kind = body["claim_id"], body["version"], body["type"]
        if not (isinstance(claim_id, str) and isinstance(kind, str)):
            raise AuditAbort(f"the body at position {position} does not have a text claim_id and type")
        try:
            safe_integer(version, "body.version", minimum=1)
        except InvalidInput as e:
            raise AuditAbort(f"the body at position {position}: {e}") from None
        self.last_position = position
        self.events += 1
        where = f"position {position} (claim {claim_id} version {version})"
        try:
            digest = hashlib.sha256(canonical_bytes(body)).hexdigest()
        except Exception as e:  # rfc8785 refuses values JSON allows (huge integers, NaN)
            raise AuditAbort(f"{where}: the body has no RFC 8785 encoding: {e}") from None
        for broken in self.chains.take(claim_id, version, kind, body["prev_hash"], stated, digest):
            report.problem(f"{where}: {broken.detail}")
        if self.sink is not None:
            self.sink(self.hasher.size, item)
        self.touched.add(claim_id)
        if self.hasher.size < self.tree_size:
            try:
                self.hasher.append(event_leaf_hash(stated))
            except InvalidInput:
                raise AuditAbort(f"{where}: the feed's hash {stated!r:.80} is not 64 hex digits") from None
            if self.hasher.size == self.tree_size:
                self.root_at_size = self.hasher.root()
        if not self.fold:
            return
        fold = self.folds.get(claim_id)
        if fold is None:
            fold = self.folds[claim_id] = ClaimFold()
        try:
            fold.apply({**body, "hash": stated})
        except (LedgerError, LookupError, TypeError, ValueError, AttributeError) as e:
            report.problem(f"{where}: the body is not an event the ledger's fold can apply ({e})")


@dataclass(frozen=True)
class WitnessPolicy:
    """The witnesses an auditor trusts (C2SP tlog-cosignature keys) and how many of them must
    have cosigned a checkpoint before it is believed: the defence against a split view, a
    ledger showing one auditor a tree it shows no one else."""

    witnesses: tuple[Verifier, ...]
    quorum: int

    @classmethod
    def parse(cls, keys: Sequence[str], quorum: int | None) -> WitnessPolicy | None:
        """From `--witness VKEY...` and `--quorum K` (default: all of them); None without witnesses."""
        if not keys:
            if quorum:
                raise InvalidInput("--quorum needs the witnesses' keys: give each with --witness VKEY")
            return None
        witnesses: list[Verifier] = []
        for text in keys:
            try:
                verifier = Verifier.parse(text.strip())
            except NoteError as e:
                raise InvalidInput(f"--witness {text!r:.120}: {e}") from None
            if verifier.alg != COSIGNATURE_V1:
                raise InvalidInput(
                    f"--witness {text!r:.120} is a key of algorithm 0x{verifier.alg:02x}, not a witness's "
                    "cosignature key (0x04, as `claims witness key` prints it)"
                )
            if verifier not in witnesses:
                witnesses.append(verifier)
        wanted = len(witnesses) if quorum is None else quorum
        if not 1 <= wanted <= len(witnesses):
            raise InvalidInput(
                f"--quorum {wanted} cannot be met by {len(witnesses)} distinct witness key(s): give 1 to "
                f"{len(witnesses)}, or more --witness keys"
            )
        return cls(tuple(witnesses), wanted)

    def check(self, note: Note, report: AuditReport) -> None:
        """A problem in `report` unless `quorum` of the witnesses validly cosigned `note`."""
        valid = note.verified_by(self.witnesses)
        missing = [w for w in self.witnesses if w not in valid]
        report.witnessed = (
            f"witnesses: {len(valid)} of {len(self.witnesses)} cosigned this checkpoint"
            + (f" ({', '.join(w.name for w in valid)})" if valid else "") + f", {self.quorum} required"
        )
        if len(valid) >= self.quorum:
            return
        why = [
            f"{w.name} ({'its cosignature does not verify' if note.signatures_by(w) else 'no cosignature'})"
            for w in missing
        ]
        report.problem(
            f"the checkpoint carries valid cosignatures of {len(valid)} of the witnesses given, fewer than the "
            f"quorum of {self.quorum}; missing: {'; '.join(why)}. No quorum of witnesses has seen this tree: the "
            "ledger may be showing it to you alone (a split view), or its witnesses refuse it or are down "
            "(its /healthz names them)"
        )


def audit_ledger(
    url: str, checkpoint_file: Path, *, public_key_file: Path | None = None, token: str | None = None,
    progress: Progress | None = None, witnesses: WitnessPolicy | None = None,
) -> AuditReport:
    """Audit the ledger at `url` against the checkpoint kept in `checkpoint_file`.

    Bad local files raise InvalidInput (nothing is fetched); everything found remotely is
    in the report. The new checkpoint is saved only when the report is ok.
    """
    kept = read_kept(checkpoint_file)
    pinned = pin(kept, checkpoint_file, public_key_file)
    report = AuditReport(url=url, kept=kept)
    remote = Remote(url, token)
    try:
        _audit(remote, report, kept, pinned, progress, witnesses)
    except AuditAbort as e:
        report.problem(str(e))
    finally:
        remote.close()
    if report.ok and report.checkpoint is not None and report.pinned is not None:
        save_checkpoint(checkpoint_file, report.checkpoint, report.pinned)
        report.saved = True
    return report


def pin(kept: Kept | None, where: Path | str, public_key_file: Path | None) -> PinnedKey | None:
    """The key to check with: `--public-key`'s, or the one saved with the kept checkpoint (in `where`)."""
    saved_key = kept.pinned if kept is not None else None
    pinned = read_public_key(public_key_file) if public_key_file is not None else None
    if pinned is not None and saved_key is not None and pinned.public_key != saved_key.public_key:
        raise InvalidInput(
            f"the key in {public_key_file} differs from the key {where} was saved with; "
            "find out which one the ledger published before going on"
        )
    pinned = saved_key if pinned is None or (saved_key is not None and pinned.name is None) else pinned
    if kept is not None and pinned is None:
        raise InvalidInput(
            f"{where} holds a checkpoint but no public key to check it with; pin the ledger's key "
            "with --public-key FILE"
        )
    return pinned


def _audit(remote: Remote, report: AuditReport, kept: Kept | None, pinned: PinnedKey | None,
           progress: Progress | None, witnesses: WitnessPolicy | None = None) -> None:
    new = new_checkpoint(remote, report, kept, pinned, witnesses)
    replay = _Replay(tree_size=new["tree_size"])
    _pull(remote, replay, report, progress)
    check_root(replay, new, report)
    _compare_claims(remote, replay, report, progress)
    report.events = replay.events
    report.claims = len(replay.folds)


def new_checkpoint(remote: Remote, report: AuditReport, kept: Kept | None, pinned: PinnedKey | None,
                   witnesses: WitnessPolicy | None) -> Json:
    """The server's checkpoint, checked: the pinned key (or trust on first use), the kept one's
    signature, the witnesses' quorum and the consistency proof from the kept one."""
    announced = _announced_key(remote.get("/v1/audit/public-key"))
    if pinned is None:
        pinned = PinnedKey.of(announced)
        report.notes.append(
            f"no checkpoint kept yet: trusting the server's public key on first use ({announced.public_key.hex()}, "
            f"verifier key {announced}); compare it with the key the ledger publishes elsewhere"
        )
    report.pinned = pinned
    if kept is not None:
        _check_kept(kept, pinned, report)
    new = _checked_checkpoint(remote.get("/v1/audit/checkpoint"), kept, pinned, announced, report)
    report.checkpoint = new
    if witnesses is not None:
        witnesses.check(Note.parse(new["note"]), report)
    if kept is not None:
        _check_consistency(remote, kept, new)
    return new


def check_root(replay: _Replay, new: Json, report: AuditReport) -> None:
    """The feed's Merkle root at the checkpoint's size is the checkpoint's."""
    if replay.root_at_size is None:
        report.problem(f"the feed has {replay.events} events, fewer than the checkpoint's {replay.tree_size}")
    elif replay.root_at_size is not None and replay.root_at_size.hex() != new["root_hash"]:
        report.problem(
            f"the Merkle root of the feed's first {replay.tree_size} events is {replay.root_at_size.hex()}, "
            f"not the checkpoint's {new['root_hash']}: the feed is not the tree the ledger signed"
        )


def _announced_key(answer: Json) -> Verifier:
    """The key GET /v1/audit/public-key announces, as a verifier key."""
    try:
        announced = Verifier.parse(answer.get("verifier_key"))  # type: ignore[arg-type]
    except NoteError as e:
        raise AuditAbort(f"the server's verifier key {answer.get('verifier_key')!r:.120} is not one: {e}") from None
    if str(answer.get("public_key", "")).lower() != announced.public_key.hex():
        raise AuditAbort("the server's public_key and verifier_key are not the same key")
    return announced


def _check_kept(kept: Kept, pinned: PinnedKey, report: AuditReport) -> None:
    """The kept checkpoint is the one the pinned key signed: a note, or once the former JSON one."""
    altered = "the kept checkpoint's signature does not verify with the pinned key: the file was altered"
    if kept.note is not None and kept.origin is not None:
        try:
            kept.note.open([pinned.verifier(kept.origin)])
        except NoteError:
            raise AuditAbort(altered) from None
        said = {"origin": kept.origin, "tree_size": kept.tree_size, "root_hash": kept.root_hash}
        if kept.fields != said:
            raise AuditAbort(
                f"the kept checkpoint file says {kept.fields} beside a signed note that says {said}: the file was altered"
            )
        return
    if kept.former is None or not verify_json_checkpoint(kept.former, pinned.public_key.hex()):
        raise AuditAbort(altered)
    report.notes.append(
        f"the kept checkpoint ({kept.tree_size} events) is in the former JSON format: its signature holds under "
        "the pinned key, and it is replaced by the new checkpoint, a signed note, when all checks hold"
    )


def _checked_checkpoint(
    answer: Json, kept: Kept | None, pinned: PinnedKey, announced: Verifier, report: AuditReport
) -> Json:
    """The server's checkpoint, its note verified with the pinned key; following a key rotation
    when the note is signed by both the pinned key and the key the server now announces."""
    try:
        note, tree = read_checkpoint_note(answer.get("note"))  # type: ignore[arg-type]
    except NoteError as e:
        raise AuditAbort(f"the server's checkpoint is not a signed checkpoint note: {e}") from None
    if kept is not None and kept.origin is not None and tree.origin != kept.origin:
        raise AuditAbort(
            f"the server's checkpoint is of the log {tree.origin!r}, the kept one of {kept.origin!r}: another log"
        )
    verifier = pinned.verifier(tree.origin)
    rotated = announced.public_key != pinned.public_key
    try:
        note.open([verifier])
    except NoteError:
        if rotated:
            report.problem(f"the server presents the public key {announced.public_key.hex()}, not the pinned "
                           f"{pinned.public_key.hex()}")
        raise AuditAbort(
            f"the server's checkpoint (tree_size {tree.size}) is not signed by the pinned key; nothing it serves "
            "can be trusted" + (
                f". It announces the key {announced}: if the ledger rotated its key, the overlap in which its "
                "checkpoints carried the old key and the new is over; check the new key with the ledger's "
                "operator by other means, then pin it with --public-key" if rotated else ""
            )
        ) from None
    if rotated:
        if announced not in note.verified_by([announced]):
            report.problem(f"the server presents the public key {announced.public_key.hex()}, not the pinned "
                           f"{pinned.public_key.hex()}, and that key did not sign its checkpoint")
        else:
            report.pinned = PinnedKey.of(announced)
            report.notes.append(
                f"the ledger rotated its signing key: this checkpoint is signed by the pinned key {verifier} and "
                f"by the key the ledger now announces, {announced}; the pin moves to the new key, saved with the "
                "checkpoint"
            )
    said = {"origin": answer.get("origin"), "tree_size": answer.get("tree_size"), "root_hash": answer.get("root_hash")}
    new = {"origin": tree.origin, "tree_size": tree.size, "root_hash": tree.root_hash.hex(), "note": str(note)}
    if said != {k: new[k] for k in said}:
        report.problem(f"the server's checkpoint says {said} beside a signed note that says "
                       f"{ {k: new[k] for k in said} }")
    return new


def _check_consistency(remote: Remote, kept: Kept, new: Json) -> None:
    old_size, new_size = kept.tree_size, new["tree_size"]
    if old_size > new_size:
        raise AuditAbort(
            f"the ledger shrank: the kept checkpoint covers {old_size} events, the server's now {new_size}; "
            "events were removed"
        )
    if old_size == new_size:
        if kept.root_hash != new["root_hash"]:
            raise AuditAbort(
                f"the tree of {old_size} events has the root {new['root_hash']} now but had {kept.root_hash}: "
                "events were changed or reordered"
            )
        return
    if old_size == 0:
        return
    answer = remote.get("/v1/audit/proofs/consistency", from_size=old_size, to_size=new_size)
    proof = answer.get("proof")
    try:
        path = [bytes.fromhex(h) for h in proof] if isinstance(proof, list) else None
    except (TypeError, ValueError):
        path = None
    if path is None or not verify_consistency(
        old_size, new_size, bytes.fromhex(kept.root_hash), bytes.fromhex(new["root_hash"]), path
    ):
        raise AuditAbort(
            f"the consistency proof from {old_size} to {new_size} events does not verify: the ledger's first "
            f"{old_size} events are not the ones the kept checkpoint signed (changed, removed or reordered)"
        )


def _pull(remote: Remote, replay: _Replay, report: AuditReport, progress: Progress | None) -> None:
    for item in remote.feed(replay.last_position):
        if not replay.fold and replay.complete:
            break  # a mirror keeps what the checkpoint signed, no more
        replay.take(item, report)
        if progress is not None and replay.events % 1000 == 0:
            progress("feed", replay.events, replay.tree_size)
    if progress is not None:
        progress("feed", replay.events, replay.tree_size)


def _served_ids(remote: Remote) -> set[str]:
    ids: set[str] = set()
    cursor: str | None = None
    while True:
        params: Json = {"limit": LIST_PAGE}
        if cursor:
            params["cursor"] = cursor
        page = remote.get("/v1/claims", **params)
        ids.update(str(item.get("id")) for item in page.get("items", []) if isinstance(item, dict))
        cursor = page.get("next_cursor")
        if not cursor:
            return ids


def _compare_claims(remote: Remote, replay: _Replay, report: AuditReport, progress: Progress | None) -> None:
    served = _served_ids(remote)
    if served - replay.folds.keys():  # perhaps registered since the feed was read: read its tail
        _pull(remote, replay, report, progress)
    for claim_id in sorted(served - replay.folds.keys()):
        report.problem(f"claim {claim_id} is served but the feed holds no event of it")
    compare_views(remote, sorted(replay.folds), lambda claim_id: replay.folds[claim_id].view(), report, progress)


def compare_views(
    remote: Remote, claim_ids: Sequence[str], view_of: Callable[[str], Json], report: AuditReport,
    progress: Progress | None, listed: Mapping[str, Json] | None = None,
) -> None:
    """Each claim's view as the auditor folds it (`view_of`) against the one the server serves,
    at the version folded; each difference a problem naming the claim and the field. A view the
    server listed (GET /v1/claims, `listed`) at that version is the one it serves: no GET then."""
    done = 0

    def check(claim_id: str) -> list[str]:
        local = view_of(claim_id)
        view = listed.get(claim_id) if listed is not None else None
        if view is None or view.get("version") != local["version"]:
            view = remote.get_or_none(f"/v1/claims/{claim_id}")
        if view is not None and isinstance(view.get("version"), int) and view["version"] > local["version"]:
            # The claim moved on after the feed was read: compare at the version audited.
            view = remote.get_or_none(f"/v1/claims/{claim_id}", version=local["version"])
        if view is None:
            return [f"claim {claim_id} ({local['key']}) has events in the feed but the server does not serve it"]
        return [
            f"claim {claim_id} ({local['key']}): the server serves {name} = {_short(view.get(name))}, "
            f"the feed folds to {_short(local.get(name))}"
            for name in VIEW_FIELDS if view.get(name) != local.get(name)
        ]

    with ThreadPoolExecutor(CLAIM_READERS) as pool:
        for found in pool.map(check, claim_ids):
            for text in found:
                report.problem(text)
            done += 1
            if progress is not None and (done % 200 == 0 or done == len(claim_ids)):
                progress("claims", done, len(claim_ids))


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 160 else text[:157] + "..."
