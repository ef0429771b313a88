"""The Merkle log of the event feed, stored beside the read models by the projection engine.

It keeps every leaf hash and the hash of every complete subtree (2^level leaves starting at
``idx * 2^level``) as soon as it completes, so a root or proof for any past tree size is a
handful of stored nodes: O(log n) of them. The tree itself is ``domain.merkle``'s.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import NamedTuple

from domain.errors import InvalidInput, LedgerError
from domain.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    NodeKey,
    Span,
    consistency_spans,
    event_leaf_hash,
    inclusion_spans,
    is_size,
    node_hash,
    subtrees,
)
from store.db import Cursor

MERKLE_TABLES = ("merkle_leaves", "merkle_nodes")
_PREFIX = re.compile(r"(?:[a-z_][a-z0-9_]*)?")
_ROWS_PER_INSERT = 300


class MerkleLogDamaged(LedgerError):
    """A stored leaf or subtree hash the log needs is missing: its tables were altered."""

    code = "merkle-log-damaged"
    title = "Merkle log damaged"


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
        self.leaves, self.nodes = (f"{prefix}{name}" for name in MERKLE_TABLES)

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

    def drop_tables(self, cur: Cursor) -> None:
        for name in (self.leaves, self.nodes):
            cur.execute(f"DROP TABLE IF EXISTS {name}")

    def size(self, cur: Cursor) -> int:
        row = cur.execute(f"SELECT MAX(leaf_index) FROM {self.leaves}").fetchone()
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    def tip(self, cur: Cursor) -> MerkleTip:
        """The log's size, last position and compact range, as stored."""
        last = cur.execute(
            f"SELECT leaf_index, position FROM {self.leaves} ORDER BY leaf_index DESC LIMIT 1"
        ).fetchone()
        size = 0 if last is None else int(last[0]) + 1
        frontier_keys = subtrees((0, size))
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
        if not is_size(leaf_index) or leaf_index >= tree_size:
            raise InvalidInput(
                f"leaf_index must be in 0..{tree_size - 1} for a tree of {tree_size} leaves "
                f"(got {leaf_index!r})", "leaf_index",
            )
        return self._span_hashes(cur, inclusion_spans(leaf_index, tree_size))

    def consistency(self, cur: Cursor, first_size: int, second_size: int) -> list[bytes]:
        """The RFC 9162 consistency proof from the tree of ``first_size`` to that of ``second_size``."""
        self._check_size(cur, second_size, "second_size", minimum=1)
        if not is_size(first_size) or not 0 < first_size <= second_size:
            raise InvalidInput(
                f"first_size must be in 1..{second_size} (at most the second size, and an empty "
                f"tree has no consistency proof); got {first_size!r}", "first_size",
            )
        return self._span_hashes(cur, consistency_spans(first_size, second_size))

    def _check_size(self, cur: Cursor, tree_size: int, field: str, *, minimum: int) -> None:
        if not is_size(tree_size) or tree_size < minimum:
            raise InvalidInput(f"{field} must be an integer of at least {minimum} (got {tree_size!r})", field)
        size = self.size(cur)
        if tree_size > size:
            raise InvalidInput(
                f"{field} {tree_size} is beyond the log, which holds {size} leaves; ask for at most {size}",
                field,
            )

    def _span_hashes(self, cur: Cursor, spans: Sequence[Span]) -> list[bytes]:
        tilings = [subtrees(span) for span in spans]
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
