"""The ledger's identity: a random id made once in its database, and carried by every copy
of it (a backup, a restore, a standby), never by another ledger.

What a process keeps about a ledger outside its database (audit/rollback.py: the largest
tree it signed) is keyed by this id, so one signing key may serve several ledgers (tests do)
and a restored backup is known for the ledger it is.
"""

from __future__ import annotations

import uuid

from store.db import ReadStore

TABLE = "ledger_identity"


def ensure_identity(store: ReadStore) -> str:
    """The ledger's id, made on first use (processes racing to make it agree on one)."""
    with store.transaction() as cur:
        cur.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (name TEXT PRIMARY KEY, id TEXT NOT NULL)")
        cur.execute(f"INSERT INTO {TABLE} (name, id) VALUES ('ledger', ?) ON CONFLICT (name) DO NOTHING",
                    (str(uuid.uuid4()),))
    return ledger_identity(store)


def ledger_identity(store: ReadStore) -> str:
    with store.reading() as cur:
        row = cur.execute(f"SELECT id FROM {TABLE} WHERE name = 'ledger'").fetchone()
    if row is None:
        raise LookupError("the ledger has no identity yet: open it with Runtime.open first")
    return str(row[0])
