"""`claims audit`: check a remote ledger trusting nothing but a kept checkpoint and the pinned key.

The auditor fetches a new signed checkpoint, checks that the kept one is a prefix of it
(an RFC 9162 consistency proof), pulls the whole feed, recomputes every event's hash, every
claim's chain and the Merkle root, folds every claim with the ledger's own fold and compares
it with what the server serves. The new checkpoint replaces the kept one only when all holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from audit.chain import ChainCheck
from audit.signing import CHECKPOINT_FIELDS, verify_checkpoint
from domain import ijson
from domain.canonical import canonical_bytes
from domain.errors import InvalidInput, InvalidJson, LedgerError
from domain.fold import ClaimFold
from domain.ijson import safe_integer
from domain.merkle import TreeHasher, event_leaf_hash, verify_consistency

Json = dict[str, Any]
Progress = Callable[[str, int, int], None]  # (stage, done, total; 0 when unknown)

NDJSON = "application/x-ndjson"
BODY_FIELDS = frozenset({"claim_id", "version", "type", "recorded_at", "prev_hash", "data"})
# The fields of GET /v1/claims/{id} that the fold alone determines: all of them.
VIEW_FIELDS = ("id", "key", "statement", "language", "subjects", "status", "stances", "counts", "version",
               "registered_at", "updated_at")
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
    public_key: str | None = None
    kept: Json | None = None
    checkpoint: Json | None = None
    events: int = 0
    claims: int = 0
    problems: list[str] = field(default_factory=list)
    omitted: int = 0
    notes: list[str] = field(default_factory=list)
    saved: bool = False

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
            lines.append(f"checkpoint: {self.checkpoint['tree_size']} events, root {self.checkpoint['root_hash']} "
                         f"signed at {self.checkpoint['timestamp']}")
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


def read_kept(path: Path) -> tuple[Json | None, str | None]:
    """The checkpoint kept in `path` and the public key saved with it (None, None when absent)."""
    try:
        kept = ijson.loads(path.read_bytes())
    except FileNotFoundError:
        return None, None
    except (OSError, InvalidJson) as e:
        raise InvalidInput(f"the checkpoint file {path} cannot be read as JSON ({e}); fix or remove it") from None
    if not isinstance(kept, dict) or not kept.keys() >= CHECKPOINT_FIELDS:
        raise InvalidInput(
            f"the checkpoint file {path} does not hold a checkpoint ({', '.join(sorted(CHECKPOINT_FIELDS))})"
        )
    key = kept.get("public_key")
    if key is not None and not _is_key(key):
        raise InvalidInput(f"the public_key in {path} is not 64 hex digits")
    return {name: kept[name] for name in CHECKPOINT_FIELDS}, key


def read_public_key(path: Path) -> str:
    """A pinned key file: the hex key alone, or the JSON GET /v1/audit/public-key answers."""
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"the public key file {path} cannot be read ({e})") from None
    if text.startswith("{"):
        try:
            text = str(ijson.loads(text).get("public_key", ""))
        except InvalidJson as e:
            raise InvalidInput(f"the public key file {path} cannot be read as JSON ({e})") from None
        except AttributeError:
            text = ""
    text = text.lower()
    if not _is_key(text):
        raise InvalidInput(f"{path} must hold the ledger's Ed25519 public key as 64 hex digits (see `claims audit-key`)")
    return text


def _is_key(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def save_checkpoint(path: Path, checkpoint: Mapping[str, Any], public_key: str) -> None:
    """Write the checkpoint (with the key it was checked with) whole or not at all."""
    kept = {**{name: checkpoint[name] for name in sorted(CHECKPOINT_FIELDS)}, "public_key": public_key}
    text = json.dumps(kept, indent=2) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


# -- The remote ledger --------------------------------------------------------------------------


class Remote:
    """The ledger's HTTP API as the auditor uses it."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(timeout=TIMEOUT, headers=headers)

    def close(self) -> None:
        self.client.close()

    def get(self, path: str, **params: Any) -> Json:
        try:
            response = self.client.get(self.url + path, params=params)
        except httpx.HTTPError as e:
            raise AuditAbort(f"GET {path} failed: {e or type(e).__name__}") from None
        if response.status_code != 200:
            raise AuditAbort(f"GET {path} answered {response.status_code}: {_detail(response)}")
        body = _json(path, response)
        if not isinstance(body, dict):
            raise AuditAbort(f"GET {path} did not answer a JSON object")
        return body

    def get_or_none(self, path: str, **params: Any) -> Json | None:
        """Like `get`, but None for a 404."""
        try:
            response = self.client.get(self.url + path, params=params)
        except httpx.HTTPError as e:
            raise AuditAbort(f"GET {path} failed: {e or type(e).__name__}") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise AuditAbort(f"GET {path} answered {response.status_code}: {_detail(response)}")
        body = _json(path, response)
        return body if isinstance(body, dict) else None

    def feed(self, after: int) -> Iterator[Json]:
        """Every feed item after `after`, in log order, streamed one a line."""
        try:
            with self.client.stream(
                "GET", self.url + "/v1/events", params={"after": after}, headers={"Accept": NDJSON}
            ) as response:
                if response.status_code != 200:
                    response.read()
                    raise AuditAbort(f"GET /v1/events answered {response.status_code}: {_detail(response)}")
                for line in _lines(response.iter_bytes()):
                    try:
                        item = ijson.loads(line)
                    except InvalidJson as e:
                        raise AuditAbort(
                            f"the feed's item after position {after} is not I-JSON, so its readers may differ on "
                            f"what it says: {e}"
                        ) from None
                    if isinstance(item, dict) and type(item.get("position")) is int:
                        after = item["position"]
                    yield item
        except httpx.HTTPError as e:
            raise AuditAbort(f"reading the feed failed: {e or type(e).__name__}") from None


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The non-blank lines of a byte stream, as bytes: the bytes the server sent, not a
    decoding of them that would mend what is not UTF-8."""
    rest = b""
    for chunk in chunks:
        *lines, rest = (rest + chunk).split(b"\n")
        yield from (line for line in lines if line.strip())
    if rest.strip():
        yield rest


def _json(path: str, response: httpx.Response) -> Any:
    try:
        return ijson.loads(response.content)
    except InvalidJson as e:
        raise AuditAbort(f"GET {path} did not answer I-JSON: {e}") from None


def _detail(response: httpx.Response) -> str:
    try:
        body = ijson.loads(response.content)
    except InvalidJson:
        return response.text[:200]
    return str(body.get("detail") or body) if isinstance(body, dict) else str(body)[:200]


# -- The audit ----------------------------------------------------------------------------------


@dataclass
class _Replay:
    """The feed as the auditor rebuilds it: hashes, chains, tree and every claim's fold."""

    tree_size: int
    chains: ChainCheck = field(default_factory=ChainCheck)
    hasher: TreeHasher = field(default_factory=TreeHasher)
    root_at_size: bytes | None = None
    last_position: int = 0
    folds: dict[str, ClaimFold] = field(default_factory=dict)
    events: int = 0

    def __post_init__(self) -> None:
        if self.tree_size == 0:
            self.root_at_size = self.hasher.root()

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
        if self.hasher.size < self.tree_size:
            try:
                self.hasher.append(event_leaf_hash(stated))
            except InvalidInput:
                raise AuditAbort(f"{where}: the feed's hash {stated!r:.80} is not 64 hex digits") from None
            if self.hasher.size == self.tree_size:
                self.root_at_size = self.hasher.root()
        fold = self.folds.get(claim_id)
        if fold is None:
            fold = self.folds[claim_id] = ClaimFold()
        try:
            fold.apply({**body, "hash": stated})
        except (LedgerError, LookupError, TypeError, ValueError, AttributeError) as e:
            report.problem(f"{where}: the body is not an event the ledger's fold can apply ({e})")


def audit_ledger(
    url: str, checkpoint_file: Path, *, public_key_file: Path | None = None, token: str | None = None,
    progress: Progress | None = None,
) -> AuditReport:
    """Audit the ledger at `url` against the checkpoint kept in `checkpoint_file`.

    Bad local files raise InvalidInput (nothing is fetched); everything found remotely is
    in the report. The new checkpoint is saved only when the report is ok.
    """
    kept, saved_key = read_kept(checkpoint_file)
    pinned = read_public_key(public_key_file) if public_key_file is not None else None
    if pinned is not None and saved_key is not None and pinned != saved_key:
        raise InvalidInput(
            f"the key in {public_key_file} differs from the key {checkpoint_file} was saved with; "
            "find out which one the ledger published before going on"
        )
    pinned = pinned or saved_key
    if kept is not None and pinned is None:
        raise InvalidInput(
            f"{checkpoint_file} holds a checkpoint but no public key to check it with; pin the ledger's key "
            "with --public-key FILE"
        )
    report = AuditReport(url=url, kept=kept)
    remote = Remote(url, token)
    try:
        _audit(remote, report, kept, pinned, progress)
    except AuditAbort as e:
        report.problem(str(e))
    finally:
        remote.close()
    if report.ok and report.checkpoint is not None and report.public_key is not None:
        save_checkpoint(checkpoint_file, report.checkpoint, report.public_key)
        report.saved = True
    return report


def _audit(remote: Remote, report: AuditReport, kept: Json | None, pinned: str | None,
           progress: Progress | None) -> None:
    served_key = str(remote.get("/v1/audit/public-key").get("public_key", "")).lower()
    if pinned is None:
        if not _is_key(served_key):
            raise AuditAbort(f"the server's public key {served_key!r:.80} is not 64 hex digits")
        pinned = served_key
        report.notes.append(
            f"no checkpoint kept yet: trusting the server's public key on first use ({served_key}); "
            "compare it with the key the ledger publishes elsewhere"
        )
    elif served_key != pinned:
        report.problem(f"the server presents the public key {served_key}, not the pinned {pinned}")
    report.public_key = pinned
    if kept is not None and not verify_checkpoint(kept, pinned):
        raise AuditAbort("the kept checkpoint's signature does not verify with the pinned key: the file was altered")

    new = remote.get("/v1/audit/checkpoint")
    if not verify_checkpoint(new, pinned):
        raise AuditAbort(
            f"the server's checkpoint (tree_size {new.get('tree_size')!r}) is not signed by the pinned key; "
            "nothing it serves can be trusted"
        )
    report.checkpoint = new
    if kept is not None:
        _check_consistency(remote, kept, new)

    replay = _Replay(tree_size=new["tree_size"])
    _pull(remote, replay, report, progress)
    if replay.root_at_size is None:
        report.problem(f"the feed has {replay.events} events, fewer than the checkpoint's {replay.tree_size}")
    elif replay.root_at_size is not None and replay.root_at_size.hex() != new["root_hash"]:
        report.problem(
            f"the Merkle root of the feed's first {replay.tree_size} events is {replay.root_at_size.hex()}, "
            f"not the checkpoint's {new['root_hash']}: the feed is not the tree the ledger signed"
        )
    _compare_claims(remote, replay, report, progress)
    report.events = replay.events
    report.claims = len(replay.folds)


def _check_consistency(remote: Remote, kept: Json, new: Json) -> None:
    old_size, new_size = kept["tree_size"], new["tree_size"]
    if old_size > new_size:
        raise AuditAbort(
            f"the ledger shrank: the kept checkpoint covers {old_size} events, the server's now {new_size}; "
            "events were removed"
        )
    if old_size == new_size:
        if kept["root_hash"] != new["root_hash"]:
            raise AuditAbort(
                f"the tree of {old_size} events has the root {new['root_hash']} now but had {kept['root_hash']}: "
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
        old_size, new_size, bytes.fromhex(kept["root_hash"]), bytes.fromhex(new["root_hash"]), path
    ):
        raise AuditAbort(
            f"the consistency proof from {old_size} to {new_size} events does not verify: the ledger's first "
            f"{old_size} events are not the ones the kept checkpoint signed (changed, removed or reordered)"
        )


def _pull(remote: Remote, replay: _Replay, report: AuditReport, progress: Progress | None) -> None:
    for item in remote.feed(replay.last_position):
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
    claim_ids = sorted(replay.folds)
    done = 0

    def check(claim_id: str) -> list[str]:
        local = replay.folds[claim_id].view()
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
