"""The ledger's Merkle log, hashed as RFC 9162 §2.1: pure tree functions and verifiers, and
the stored log that answers roots and proofs for any past tree size from O(log n) nodes.

Leaf ``i`` is the event at the i-th position of the log; its leaf hash is
SHA-256(0x00 ‖ the 32 bytes of the event's hash). The stored log keeps every leaf hash and
the hash of every complete subtree (2^level leaves starting at ``idx * 2^level``) as soon as
it completes, so any range the RFC's recursion asks for is a handful of stored nodes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import NamedTuple

from domain.errors import InvalidInput, LedgerError
from store.db import Cursor

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_EVENT_HASH = re.compile(r"[0-9a-f]{64}")
_PREFIX = re.compile(r"(?:[a-z_][a-z0-9_]*)?")
_ROWS_PER_INSERT = 300

# A run of leaves [start, end) whose RFC 9162 hash a proof carries.
Span = tuple[int, int]
# A complete subtree: (level, idx) covers leaves [idx * 2^level, (idx + 1) * 2^level).
NodeKey = tuple[int, int]


class MerkleLogDamaged(LedgerError):
    """A stored leaf or subtree hash the log needs is missing: its tables were altered."""

    code = "merkle-log-damaged"
    title = "Merkle log damaged"


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def event_leaf_hash(event_hash: str) -> bytes:
    """The leaf hash of an event: over the 32 raw bytes of its lowercase hex hash."""
    if not isinstance(event_hash, str) or not _EVENT_HASH.fullmatch(event_hash):
        raise InvalidInput(f"an event hash is 64 lowercase hex digits (got {event_hash!r:.80})")
    return leaf_hash(bytes.fromhex(event_hash))


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2): where RFC 9162 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


# -- Reference implementations: the RFC 9162 §2.1 definitions, recursion and all. ----------


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf hashes already computed (RFC 9162 §2.1.1)."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return node_hash(root_of(leaf_hashes[:k]), root_of(leaf_hashes[k:]))


def inclusion_path(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(m, D[n]) (RFC 9162 §2.1.3.1): sibling hashes from the leaf up to the root."""
    n = len(leaf_hashes)
    if not 0 <= index < n:
        raise InvalidInput(f"leaf index {index} is outside a tree of {n} leaves (0..{n - 1})")

    def path(m: int, d: Sequence[bytes]) -> list[bytes]:
        if len(d) == 1:
            return []
        k = _split(len(d))
        if m < k:
            return [*path(m, d[:k]), root_of(d[k:])]
        return [*path(m - k, d[k:]), root_of(d[:k])]

    return path(index, leaf_hashes)


def consistency_path(leaf_hashes: Sequence[bytes], m: int) -> list[bytes]:
    """PROOF(m, D[n]) (RFC 9162 §2.1.4.1) that the first m leaves are a prefix of all n.

    The RFC defines it for 0 < m < n; m == n gives the empty proof.
    """
    n = len(leaf_hashes)
    if not 0 < m <= n:
        raise InvalidInput(f"a consistency proof starts from a tree size in 1..{n} (got {m})")

    def subproof(m: int, d: Sequence[bytes], complete: bool) -> list[bytes]:
        if m == len(d):
            return [] if complete else [root_of(d)]
        k = _split(len(d))
        if m <= k:
            return [*subproof(m, d[:k], complete), root_of(d[k:])]
        return [*subproof(m - k, d[k:], False), root_of(d[:k])]

    return subproof(m, leaf_hashes, True)


class TreeHasher:
    """The root of a log read leaf by leaf, in O(log n) memory.

    It keeps the roots of the complete subtrees that tile the leaves so far, largest
    first (the log's "compact range"); RFC 9162's tree of n leaves is those roots
    hashed together from the right.
    """

    def __init__(self) -> None:
        self.size = 0
        self._subtrees: list[bytes] = []

    def append(self, leaf: bytes) -> None:
        """Add the next leaf hash (see :func:`leaf_hash`)."""
        h, index = leaf, self.size
        while index & 1:
            h = node_hash(self._subtrees.pop(), h)
            index >>= 1
        self._subtrees.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self._subtrees:
            return EMPTY_ROOT
        h = self._subtrees[-1]
        for left in reversed(self._subtrees[:-1]):
            h = node_hash(left, h)
        return h


# -- Verifiers: RFC 9162 §2.1.3.2 and §2.1.4.2 step by step. -------------------------------


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_path(value: object) -> bool:
    return (isinstance(value, Sequence) and not isinstance(value, bytes | str)
            and all(_is_hash(p) for p in value))


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """True when ``path`` proves the leaf at ``index`` is in the tree of ``tree_size`` with ``root``."""
    if not (_is_hash(leaf_hash) and _is_hash(root) and _is_size(index) and _is_size(tree_size)
            and _is_path(path)):
        return False
    if index >= tree_size:
        return False
    fn, sn = index, tree_size - 1
    r = leaf_hash
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    first_size: int, second_size: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]
) -> bool:
    """True when ``path`` proves the tree (first_size, first_root) is a prefix of (second_size, second_root).

    RFC 9162 defines the proof for 0 < first_size < second_size; equal sizes are consistent
    when the roots are equal and the proof is empty. A first size of 0 has no proof.
    """
    if not (_is_size(first_size) and _is_size(second_size) and _is_hash(first_root)
            and _is_hash(second_root) and _is_path(path)):
        return False
    if first_size == second_size:
        return len(path) == 0 and first_root == second_root
    if not 0 < first_size < second_size or len(path) == 0:
        return False
    nodes = list(path)
    if first_size & (first_size - 1) == 0:
        nodes.insert(0, first_root)
    fn, sn = first_size - 1, second_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = nodes[0]
    for c in nodes[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


# -- The same proofs as spans of leaves, so a stored log can answer them from its nodes. ----


def _inclusion_spans(index: int, tree_size: int) -> list[Span]:
    """The spans whose hashes make PATH(index, D[tree_size]), bottom-up."""
    spans: list[Span] = []
    lo, hi = 0, tree_size
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            spans.append((mid, hi))
            hi = mid
        else:
            spans.append((lo, mid))
            lo = mid
    spans.reverse()
    return spans


def _consistency_spans(first_size: int, second_size: int) -> list[Span]:
    """The spans whose hashes make PROOF(first_size, D[second_size]), bottom-up."""
    spans: list[Span] = []
    lo, hi, complete = 0, second_size, True
    while first_size != hi:
        mid = lo + _split(hi - lo)
        if first_size <= mid:
            spans.append((mid, hi))
            hi = mid
        else:
            spans.append((lo, mid))
            lo, complete = mid, False
    if not complete:
        spans.append((lo, hi))
    spans.reverse()
    return spans


def _subtrees(span: Span) -> list[NodeKey]:
    """The complete subtrees that tile a span, largest first.

    Every span RFC 9162's recursion makes starts at a multiple of a power of two at least
    its length, so the binary digits of its length are the subtrees it splits into.
    """
    lo, hi = span
    keys: list[NodeKey] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        keys.append((level, lo >> level))
        lo += 1 << level
    return keys


def _insert(cur: Cursor, table: str, columns: tuple[str, str, str], rows: Sequence[tuple[int, int, bytes]]) -> None:
    """Insert rows of three values: `Cursor.copy_rows` on PostgreSQL, hundreds a statement on SQLite."""
    if cur.backend == "postgres":
        cur.copy_rows(table, columns, rows, ("bigint", "bigint", "bytea"))
        return
    into = f"{table} ({', '.join(columns)})"
    per = _ROWS_PER_INSERT
    full = len(rows) - len(rows) % per
    if full:
        sql = f"INSERT INTO {into} VALUES " + ", ".join(["(?, ?, ?)"] * per)
        cur.executemany(sql, [[v for row in rows[i:i + per] for v in row] for i in range(0, full, per)])
    if full < len(rows):
        rest = rows[full:]
        sql = f"INSERT INTO {into} VALUES " + ", ".join(["(?, ?, ?)"] * len(rest))
        cur.execute(sql, [v for row in rest for v in row])


class MerkleTip(NamedTuple):
    """Where the log ends: its size, the position of its last leaf (-1: none), and the roots of
    the complete subtrees that tile it (its "compact range"), largest first: the only stored
    hashes new leaves combine with."""

    size: int
    last_position: int
    frontier: tuple[bytes, ...]


class MerkleLog:
    """The Merkle log of the event feed, stored beside the read models.

    ``{prefix}merkle_leaves`` holds each leaf's hash and the log position of its event;
    ``{prefix}merkle_nodes`` the hash of every complete subtree of 2^level leaves
    (level >= 1). Every method takes the caller's cursor, so appending commits in the
    same transaction as the projection's tracking position.
    """

    def __init__(self, prefix: str = "") -> None:
        if not _PREFIX.fullmatch(prefix):
            raise InvalidInput(f"a table prefix is lowercase letters, digits and '_' (got {prefix!r})")
        self.leaves = f"{prefix}merkle_leaves"
        self.nodes = f"{prefix}merkle_nodes"

    def create_tables(self, cur: Cursor) -> None:
        if cur.backend == "postgres":
            index, blob, level, suffix = "BIGINT PRIMARY KEY", "BYTEA", "SMALLINT", ""
        else:
            index, blob, level, suffix = "INTEGER PRIMARY KEY", "BLOB", "INTEGER", " WITHOUT ROWID"
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {self.leaves} (leaf_index {index}, "
            f"position BIGINT NOT NULL UNIQUE, hash {blob} NOT NULL CHECK (length(hash) = 32))"
        )
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {self.nodes} (level {level} NOT NULL, idx BIGINT NOT NULL, "
            f"hash {blob} NOT NULL CHECK (length(hash) = 32), PRIMARY KEY (level, idx)){suffix}"
        )

    def size(self, cur: Cursor) -> int:
        row = cur.execute(f"SELECT MAX(leaf_index) FROM {self.leaves}").fetchone()
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    def tip(self, cur: Cursor) -> MerkleTip:
        """The log's size, last position and compact range, as stored."""
        last = cur.execute(
            f"SELECT leaf_index, position FROM {self.leaves} ORDER BY leaf_index DESC LIMIT 1"
        ).fetchone()
        size = 0 if last is None else int(last[0]) + 1
        frontier_keys = _subtrees((0, size))
        found = self._fetch(cur, frontier_keys)
        return MerkleTip(size, -1 if last is None else int(last[1]), tuple(found[key] for key in frontier_keys))

    def append(self, cur: Cursor, items: Sequence[tuple[int, str]], tip: MerkleTip | None = None) -> MerkleTip:
        """Add events as the next leaves: (position, event hash hex), in log order.

        `tip` is the stored log's tip when the caller knows it (it holds the lock under which
        the log is appended to, and appended last): it spares reading it. Returns the new tip.
        """
        if tip is None:
            tip = self.tip(cur)
        if not items:
            return tip
        size, previous = tip.size, tip.last_position
        frontier = list(tip.frontier)
        leaf_rows: list[tuple[int, int, bytes]] = []
        node_rows: list[tuple[int, int, bytes]] = []
        sha256, fromhex = hashlib.sha256, bytes.fromhex  # the loop below runs once per event
        for index, (position, event_hash) in enumerate(items, start=size):
            if not isinstance(position, int) or isinstance(position, bool) or position <= previous:
                raise InvalidInput(
                    f"Merkle log positions must increase: {position!r} follows {previous}"
                )
            previous = position
            try:
                raw = fromhex(event_hash)
            except (TypeError, ValueError):
                raw = b""
            if len(raw) != HASH_SIZE or raw.hex() != event_hash:  # 64 lowercase hex digits
                event_leaf_hash(event_hash)  # raises, saying what is wrong
            h = sha256(b"\x00" + raw).digest()
            leaf_rows.append((index, position, h))
            level = 0
            while (index >> level) & 1:
                h = sha256(b"\x01" + frontier.pop() + h).digest()
                level += 1
                node_rows.append((level, index >> level, h))
            frontier.append(h)
        _insert(cur, self.leaves, ("leaf_index", "position", "hash"), leaf_rows)
        _insert(cur, self.nodes, ("level", "idx", "hash"), node_rows)
        return MerkleTip(size + len(items), previous, tuple(frontier))

    def leaf_index_of(self, cur: Cursor, position: int) -> int | None:
        row = cur.execute(
            f"SELECT leaf_index FROM {self.leaves} WHERE position = ?", (position,)
        ).fetchone()
        return None if row is None else int(row[0])

    def root(self, cur: Cursor, tree_size: int) -> bytes:
        """The root hash of the tree of the first ``tree_size`` leaves (0 gives the empty root)."""
        self._check_size(cur, tree_size, "tree_size", minimum=0)
        if tree_size == 0:
            return EMPTY_ROOT
        return self._span_hashes(cur, [(0, tree_size)])[0]

    def inclusion(self, cur: Cursor, leaf_index: int, tree_size: int) -> list[bytes]:
        """The RFC 9162 inclusion path of leaf ``leaf_index`` in the tree of ``tree_size``."""
        self._check_size(cur, tree_size, "tree_size", minimum=1)
        if not _is_size(leaf_index) or leaf_index >= tree_size:
            raise InvalidInput(
                f"leaf_index must be in 0..{tree_size - 1} for a tree of {tree_size} leaves "
                f"(got {leaf_index!r})", "leaf_index",
            )
        return self._span_hashes(cur, _inclusion_spans(leaf_index, tree_size))

    def consistency(self, cur: Cursor, first_size: int, second_size: int) -> list[bytes]:
        """The RFC 9162 consistency proof from the tree of ``first_size`` to that of ``second_size``."""
        self._check_size(cur, second_size, "second_size", minimum=1)
        if not _is_size(first_size) or not 0 < first_size <= second_size:
            raise InvalidInput(
                f"first_size must be in 1..{second_size} (at most the second size, and an empty "
                f"tree has no consistency proof); got {first_size!r}", "first_size",
            )
        return self._span_hashes(cur, _consistency_spans(first_size, second_size))

    def _check_size(self, cur: Cursor, tree_size: int, field: str, *, minimum: int) -> None:
        if not _is_size(tree_size) or tree_size < minimum:
            raise InvalidInput(f"{field} must be an integer of at least {minimum} (got {tree_size!r})", field)
        size = self.size(cur)
        if tree_size > size:
            raise InvalidInput(
                f"{field} {tree_size} is beyond the log, which holds {size} leaves; ask for at most {size}",
                field,
            )

    def _span_hashes(self, cur: Cursor, spans: Sequence[Span]) -> list[bytes]:
        tilings = [_subtrees(span) for span in spans]
        found = self._fetch(cur, [key for keys in tilings for key in keys])
        hashes = []
        for keys in tilings:
            h = found[keys[-1]]
            for key in reversed(keys[:-1]):
                h = node_hash(found[key], h)
            hashes.append(h)
        return hashes

    def _fetch(self, cur: Cursor, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        """The stored hashes of these subtrees, in one query."""
        wanted = set(keys)
        if not wanted:
            return {}
        leaves = sorted(idx for level, idx in wanted if level == 0)
        nodes = sorted(key for key in wanted if key[0] > 0)
        parts: list[str] = []
        params: list[int] = []
        if leaves:
            parts.append(
                f"SELECT 0, leaf_index, hash FROM {self.leaves} "
                f"WHERE leaf_index IN ({', '.join('?' * len(leaves))})"
            )
            params.extend(leaves)
        if nodes:
            parts.append(
                f"SELECT level, idx, hash FROM {self.nodes} WHERE "
                + " OR ".join(["(level = ? AND idx = ?)"] * len(nodes))
            )
            params.extend(n for key in nodes for n in key)
        rows = cur.execute(" UNION ALL ".join(parts), params).fetchall()
        found = {(int(level), int(idx)): bytes(h) for level, idx, h in rows}
        missing = wanted - found.keys()
        if missing:
            raise MerkleLogDamaged(
                f"the Merkle log lacks the stored hashes of subtrees {sorted(missing)[:5]} "
                f"(level, index); its tables {self.leaves}/{self.nodes} were altered — "
                "rebuild the log from the event feed"
            )
        return found
