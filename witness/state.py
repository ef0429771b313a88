"""What a witness remembers: for each log (by origin), the size and root hash it last cosigned.

One SQLite file, one row per origin. A checkpoint is cosigned only after the row holding it
is committed, and the row moves by compare-and-set on the size it was read at: two requests
racing from the same old size cannot both win, and a kill at any instant leaves either the
old row or the new one. Since every later request must start from the stored size, a
witness never cosigns two different trees of one size, whenever it is killed.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS witnessed (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL CHECK (size >= 0),
    root_hash BLOB NOT NULL CHECK (length(root_hash) = 32),
    updated_at REAL NOT NULL
)
"""
LOCK_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Witnessed:
    """The latest tree a witness cosigned for one log."""

    size: int
    root_hash: bytes


class WitnessState:
    """The witness's state file. Safe to share between threads and processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=LOCK_TIMEOUT_SECONDS, isolation_level=None)
            # Durable before the cosignature leaves: a commit reaches the disk before it returns.
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
        return conn

    def latest(self, origin: str) -> Witnessed | None:
        """The tree last cosigned for `origin`; None when never."""
        row = self._connect().execute(
            "SELECT size, root_hash FROM witnessed WHERE origin = ?", (origin,)
        ).fetchone()
        return None if row is None else Witnessed(int(row[0]), bytes(row[1]))

    def advance(self, origin: str, expected: Witnessed | None, new: Witnessed) -> Witnessed | None:
        """Record `new` as the latest tree of `origin` if the stored one is still `expected`.

        Returns None once `new` is committed (or was already the stored tree), else the tree
        stored now, which another request recorded since `expected` was read.
        """
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = self.latest(origin)
            if current != expected:
                conn.execute("ROLLBACK")
                return current
            if current != new:
                if current is None:
                    conn.execute(
                        "INSERT INTO witnessed (origin, size, root_hash, updated_at) VALUES (?, ?, ?, ?)",
                        (origin, new.size, new.root_hash, time.time()),
                    )
                else:
                    conn.execute(
                        "UPDATE witnessed SET size = ?, root_hash = ?, updated_at = ? WHERE origin = ? AND size = ?",
                        (new.size, new.root_hash, time.time(), origin, current.size),
                    )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return None

    def close(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
