"""The ledger's Merkle tree of events, hashed as RFC 9162 §2.1: its definitions, proofs and verifiers.

Leaf ``i`` is the event at the i-th position of the log; its leaf hash is
SHA-256(0x00 ‖ the 32 bytes of the event's hash). The projections store the tree
(``projections.merkle``); auditors recompute and check it with these functions.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from domain.errors import InvalidInput

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_EVENT_HASH = re.compile(r"[0-9a-f]{64}")

# A run of leaves [start, end) whose RFC 9162 hash a proof carries.
Span = tuple[int, int]
# A complete subtree: (level, idx) covers leaves [idx * 2^level, (idx + 1) * 2^level).
NodeKey = tuple[int, int]


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

    @classmethod
    def resume(cls, size: int, subtrees: Sequence[bytes]) -> TreeHasher:
        """A hasher that goes on from `size` leaves whose compact range is `subtrees`."""
        if len(subtrees) != bin(size).count("1"):
            raise ValueError(f"a tree of {size} leaves has {bin(size).count('1')} complete subtrees, not {len(subtrees)}")
        hasher = cls()
        hasher.size, hasher._subtrees = size, list(subtrees)
        return hasher

    @property
    def subtrees(self) -> tuple[bytes, ...]:
        """The roots of the complete subtrees that tile the leaves so far, largest first."""
        return tuple(self._subtrees)

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


def is_size(value: object) -> bool:
    """Whether a value is a tree size or leaf index: an integer (not a bool) of at least 0."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_path(value: object) -> bool:
    return (isinstance(value, Sequence) and not isinstance(value, bytes | str)
            and all(_is_hash(p) for p in value))


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """True when ``path`` proves the leaf at ``index`` is in the tree of ``tree_size`` with ``root``."""
    if not (_is_hash(leaf_hash) and _is_hash(root) and is_size(index) and is_size(tree_size)
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
    if not (is_size(first_size) and is_size(second_size) and _is_hash(first_root)
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


def inclusion_spans(index: int, tree_size: int) -> list[Span]:
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


def consistency_spans(first_size: int, second_size: int) -> list[Span]:
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


def subtrees(span: Span) -> list[NodeKey]:
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
