"""The Merkle log of the event feed, stored beside the read models by the projection engine.

It keeps every leaf hash and the hash of every complete subtree (2^level leaves starting at
``idx * 2^level``) as soon as it completes, so a root or proof for any past tree size is a
handful of stored nodes: O(log n) of them. The tree itself is ``domain.merkle``'s.

It also serves the log as C2SP tlog-tiles (``tile``, ``entries``). A tile of level L holds 256
hashes of tree level 8·L (the leaves for L = 0); it is stored whole, as one row, the moment
its 256th hash is appended, so a full tile is one indexed read. A partial tile, or a full one
that a log made by an earlier version completed before it kept tiles, is one range read of
the stored leaves or nodes; an entry bundle (256 events' hashes) one range read of the leaves
joined with the history. Nothing is recomputed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

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
from projections.tables import Tables
from store.db import Cursor

MERKLE_TABLES = ("merkle_leaves", "merkle_nodes", "merkle_tiles")
_PREFIX = re.compile(r"(?:[a-z_][a-z0-9_]*)?")
_ROWS_PER_INSERT = 300

# C2SP tlog-tiles: a tile is 2^8 = 256 hashes of one level, its level L the tree level 8·L.
TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_TILE_LEVEL = 63
MAX_LEAVES = 2**63 - 1  # leaf indexes are BIGINTs: no stored log reaches past this
ENTRY_FRAME = HASH_SIZE.to_bytes(2, "big")  # an entry bundle's length prefix: every entry is 32 bytes


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


class OpenTile(NamedTuple):
    """The hashes appended to a level's rightmost tile since it started (`whole`), or since the
    process began following the log (its start is stored)."""

    whole: bool
    hashes: tuple[bytes, ...]


class MerkleTip(NamedTuple):
    """Where the log ends: its size, the position of its last leaf (-1: none), and the roots of
    the complete subtrees that tile it (its "compact range"), largest first: the only stored
    hashes new leaves combine with. `open_tiles` holds, for tile levels 0, 1, ..., what has been
    appended to the rightmost, incomplete tile in this process, and whether that is all of it:
    a tile completes with one write, reading back at most the start it had when the process
    (or a rebuild's page) began."""

    size: int
    last_position: int
    frontier: tuple[bytes, ...]
    open_tiles: tuple[OpenTile, ...] = ()


class MerkleLog:
    """The Merkle log of the event feed, stored beside the read models.

    ``{prefix}merkle_leaves`` holds each leaf's hash and the log position of its event;
    ``{prefix}merkle_nodes`` the hash of every complete subtree of 2^level leaves
    (level >= 1); ``{prefix}merkle_tiles`` every full tlog hash tile (8,192 bytes). Every
    method takes the caller's cursor, so appending commits in the same transaction as the
    projection's tracking position.
    """

    def __init__(self, prefix: str = "") -> None:
        if not _PREFIX.fullmatch(prefix):
            raise InvalidInput(f"a table prefix is lowercase letters, digits and '_' (got {prefix!r})")
        self.leaves, self.nodes, self.tiles = (f"{prefix}{name}" for name in MERKLE_TABLES)
        self.history = Tables(prefix).history  # each leaf's event hash, for entry bundles

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
        # New in the version that serves tlog tiles: a log made before it gets the tiles it
        # completed then, made from its stored leaves and nodes, when it is first opened.
        upgrading = not _table_exists(cur, self.tiles)
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {self.tiles} (level {level} NOT NULL "
            f"CHECK (level BETWEEN 0 AND {MAX_TILE_LEVEL}), idx BIGINT NOT NULL, "
            f"data {blob} NOT NULL CHECK (length(data) = {TILE_WIDTH * HASH_SIZE}), PRIMARY KEY (level, idx)){suffix}"
        )
        if upgrading:
            self._store_completed_tiles(cur)

    def _store_completed_tiles(self, cur: Cursor) -> None:
        """Store every full tile of the log, read a page of tiles at a time (its first opening
        by a version that keeps tiles: one pass over the leaves, 1/256 of that over the nodes)."""
        size, level, page = self.size(cur), 0, 64
        while (count := size >> (level * TILE_HEIGHT)) >= TILE_WIDTH:
            for first in range(0, count // TILE_WIDTH, page):
                last = min(first + page, count // TILE_WIDTH)
                rows = cur.execute(*self._range(level, first * TILE_WIDTH, last * TILE_WIDTH)).fetchall()
                if len(rows) != (last - first) * TILE_WIDTH:
                    raise MerkleLogDamaged(
                        f"the Merkle log of {size} leaves lacks stored hashes of level-{level} tiles "
                        f"{first}..{last - 1} in {self.leaves}/{self.nodes} — rebuild the log from the event feed"
                    )
                data = b"".join([bytes(h) for (h,) in rows])
                _insert(cur, self.tiles, ("level", "idx", "data"), [
                    (level, first + i, data[i * TILE_WIDTH * HASH_SIZE:(i + 1) * TILE_WIDTH * HASH_SIZE])
                    for i in range(last - first)
                ])
            level += 1

    def drop_tables(self, cur: Cursor) -> None:
        for name in (self.leaves, self.nodes, self.tiles):
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
        # The open tiles of levels 0, 1, ...: whether whole, and their hashes.
        whole = [t.whole for t in tip.open_tiles]
        opened = [list(t.hashes) for t in tip.open_tiles]
        leaf_rows: list[tuple[int, int, bytes]] = []
        node_rows: list[tuple[int, int, bytes]] = []
        tile_rows: list[tuple[int, int, bytes]] = []
        last = TILE_WIDTH - 1
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
            while True:
                if not level % TILE_HEIGHT:  # a hash of tile level level / 8: it joins that level's open tile
                    idx, at = index >> level, level // TILE_HEIGHT
                    if at == len(opened):
                        whole.append(False)
                        opened.append([])
                    if not idx & last:  # a new tile starts: it is whole from here
                        whole[at], opened[at] = True, []
                    opened[at].append(h)
                    if idx & last == last:  # the tile completes: stored whole
                        tile_rows.append((at, idx >> TILE_HEIGHT,
                                          self._whole(cur, at, idx >> TILE_HEIGHT, whole[at], opened[at])))
                        whole[at], opened[at] = True, []
                if not (index >> level) & 1:
                    break
                h = sha256(b"\x01" + frontier.pop() + h).digest()
                level += 1
                node_rows.append((level, index >> level, h))
            frontier.append(h)
        _insert(cur, self.leaves, ("leaf_index", "position", "hash"), leaf_rows)
        _insert(cur, self.nodes, ("level", "idx", "hash"), node_rows)
        if tile_rows:
            _insert(cur, self.tiles, ("level", "idx", "data"), tile_rows)
        return MerkleTip(size + len(items), previous, tuple(frontier),
                         tuple(OpenTile(w, tuple(t)) for w, t in zip(whole, opened, strict=True)))

    def _whole(self, cur: Cursor, level: int, index: int, whole: bool, hashes: list[bytes]) -> bytes:
        """A tile that just completed, its start read back from the stored leaves or nodes
        when this process did not see it appended."""
        if not whole:
            read = self.tile_reads(level, index, TILE_WIDTH - len(hashes))[-1]
            before = tile_data(read, cur.execute(read.sql, read.params).fetchall())
            if before is None:
                raise MerkleLogDamaged(
                    f"the Merkle log lacks stored hashes of tile {level}/{index} in {self.leaves}/{self.nodes}"
                    " — rebuild the log from the event feed"
                )
            return before + b"".join(hashes)
        return b"".join(hashes)

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

    def tile(self, cur: Cursor, level: int, index: int, width: int = TILE_WIDTH) -> bytes | None:
        """The C2SP tlog-tiles hash tile ``level``/``index`` of ``width`` hashes (256: full), or
        None while the log does not hold all of them.

        Hash ``i`` is the subtree of 2^(8·level) leaves starting at leaf
        ``(index * 256 + i) * 2^(8·level)``: a stored leaf hash for level 0, a stored node of
        tree level 8·level above. A partial tile is the first ``width`` of them, so every width
        the log has reached is served, each always the same bytes.
        """
        return self._read(cur, self.tile_reads(level, index, width), level, f"tile {level}/{index} of width {width}")

    def entries(self, cur: Cursor, index: int, width: int = TILE_WIDTH) -> bytes | None:
        """The C2SP tlog-tiles entry bundle ``index`` of ``width`` entries (256: full), or None
        while the log does not hold them all (see `tile_data`)."""
        return self._read(cur, self.entry_reads(index, width), 0, f"entry bundle {index} of width {width}")

    def tile_reads(self, level: int, index: int, width: int = TILE_WIDTH) -> list[TileRead]:
        """The ways to read a hash tile, each one statement, to try in turn (`tile_data` makes
        the bytes of its rows): a full tile's stored row, then a range of leaves or nodes.
        None at all (an empty list) for a tile past what any log can hold."""
        _check_tile(level, index, width)
        first = index * TILE_WIDTH
        if (first + width) << (level * TILE_HEIGHT) > MAX_LEAVES:
            return []
        ranged = TileRead(*self._range(level, first, first + width), width)
        return [self._stored(level, index), ranged] if width == TILE_WIDTH else [ranged]

    def _range(self, level: int, lo: int, hi: int) -> tuple[str, tuple[int, ...]]:
        """The statement reading the stored hashes lo..hi-1 of tree level 8·level, in order."""
        if level == 0:
            return (f"SELECT hash FROM {self.leaves} WHERE leaf_index >= ? AND leaf_index < ? ORDER BY leaf_index",
                    (lo, hi))
        return (f"SELECT hash FROM {self.nodes} WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx",
                (level * TILE_HEIGHT, lo, hi))

    def entry_reads(self, index: int, width: int = TILE_WIDTH) -> list[TileRead]:
        """As `tile_reads`, for an entry bundle: the leaves joined with the history table
        beside them, which holds each event's hash by position (appending to the log needs
        only the log's own tables, so bundles are not stored whole)."""
        _check_tile(0, index, width)
        first = index * TILE_WIDTH
        if first + width > MAX_LEAVES:
            return []
        ranged = TileRead(
            # A lookup by position per leaf, whatever statistics the planner has (a join may
            # hash the whole history); a leaf without its history row reads as NULL.
            f"SELECT (SELECT h.hash FROM {self.history} h WHERE h.position = m.position) FROM {self.leaves} m "
            "WHERE m.leaf_index >= ? AND m.leaf_index < ? ORDER BY m.leaf_index", (first, first + width), width,
            entries=True,
        )
        return [ranged]

    def _stored(self, level: int, index: int) -> TileRead:
        return TileRead(f"SELECT data FROM {self.tiles} WHERE level = ? AND idx = ?", (level, index), TILE_WIDTH,
                        stored=True)

    def _read(self, cur: Cursor, reads: Sequence[TileRead], level: int, what: str) -> bytes | None:
        for read in reads:
            data = tile_data(read, cur.execute(read.sql, read.params).fetchall())
            if data is not None:
                return data
        if reads:
            self._missing(cur, level, reads[-1].params[-1], what)
        return None

    def _missing(self, cur: Cursor, level: int, needed: int, what: str) -> None:
        """Rows of a tile were not found: fine when the log has not reached them yet (the
        caller answers None), damage when it has."""
        size = self.size(cur)
        if size >> (level * TILE_HEIGHT) >= needed:
            raise MerkleLogDamaged(
                f"the Merkle log holds {size} leaves, so it should hold the {what}, but rows of "
                f"{self.leaves}/{self.nodes}/{self.history} are missing — rebuild the log from the event feed"
            )

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


def _table_exists(cur: Cursor, table: str) -> bool:
    if cur.backend == "postgres":
        row = cur.execute("SELECT to_regclass(?) IS NOT NULL", (table,)).fetchone()
        return bool(row and row[0])
    return cur.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is not None


def _check_tile(level: int, index: int, width: int) -> None:
    if not (is_size(level) and level <= MAX_TILE_LEVEL):
        raise InvalidInput(f"a tile level is 0..{MAX_TILE_LEVEL} (got {level!r})", "level")
    if not is_size(index):
        raise InvalidInput(f"a tile index is an integer of at least 0 (got {index!r})", "index")
    if not (is_size(width) and 1 <= width <= TILE_WIDTH):
        raise InvalidInput(f"a tile width is 1..{TILE_WIDTH} (got {width!r})", "width")


class TileRead(NamedTuple):
    """One statement that reads a tile or entry bundle (`MerkleLog.tile_reads`, `entry_reads`)."""

    sql: str
    params: tuple[int, ...]
    width: int
    stored: bool = False  # one row: the whole tile, as stored when it completed
    entries: bool = False  # rows of hex event hashes, for an entry bundle


def tile_data(read: TileRead, rows: Sequence[Sequence[Any]]) -> bytes | None:
    """The bytes of a tile from the rows of its `TileRead`; None unless they are all there.

    A hash tile is its hashes, concatenated. An entry bundle's entries are the events'
    32-byte hashes, whose leaf hashes are the log's (`domain.merkle.event_leaf_hash`), each
    framed as C2SP tlog-tiles asks: a big-endian uint16 length, then the bytes.
    """
    if read.stored:
        return bytes(rows[0][0]) if rows else None
    if len(rows) != read.width:
        return None
    if read.entries:
        if any(row[0] is None for row in rows):
            return None
        return b"".join([ENTRY_FRAME + bytes.fromhex(row[0]) for row in rows])
    return b"".join([bytes(row[0]) for row in rows])
