"""Leases (store/lease.py): one holder per job and ledger, the next one takes over when the
holder's session ends, ledgers in other schemas do not collide, SQLite always holds."""

from __future__ import annotations

from pathlib import Path

import psycopg

from store.lease import LEADER, SOLE, STANDBY, Lease, lease_key
from store.settings import Database
from tests.conftest import POSTGRES_URL, new_database_url
from tests.reliability.server import wait_until


def test_one_process_holds_a_lease_and_the_next_takes_it_when_its_session_ends(tmp_path: Path) -> None:
    database = Database.from_url(new_database_url("postgres", tmp_path))
    first, second = Lease(database, "projections live"), Lease(database, "projections live")
    try:
        assert first.keep() and first.role == LEADER
        assert not second.keep() and second.role == STANDBY
        assert first.keep()  # checked again, still held
        # The holder's session ends without a word (as when its process is killed).
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s"
                " AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND ((classid::bigint << 32) | objid::bigint) = (%s::bigint & x'ffffffffffffffff'::bigint))",
                ("claims-ledger projections live lease", first.key),
            )
        # The server ends the session (and releases its locks) a moment after it is asked to.
        wait_until(second.keep, 5, "the second process takes the lease")
        assert second.acquired == 1
        first._checked = 0.0  # its next check looks at once: the session is gone, so is the lease
        assert not first.keep() and first.role == STANDBY
        second.release()
        assert first.keep()
    finally:
        first.release()
        second.release()


def test_ledgers_in_other_schemas_and_other_jobs_have_leases_of_their_own(tmp_path: Path) -> None:
    one = Database.from_url(new_database_url("postgres", tmp_path))
    other = Database.from_url(new_database_url("postgres", tmp_path))
    assert len({lease_key(one, "projections live"), lease_key(other, "projections live"),
                lease_key(one, "witnessing")}) == 3
    leases = [Lease(one, "projections live"), Lease(other, "projections live"), Lease(one, "witnessing")]
    try:
        assert all(lease.keep() for lease in leases)
    finally:
        for lease in leases:
            lease.release()


def test_on_sqlite_the_one_process_always_holds_the_lease(tmp_path: Path) -> None:
    lease = Lease(Database.from_url(f"sqlite:///{tmp_path / 'ledger.db'}"), "projections live")
    assert lease.keep() and lease.held and lease.role == SOLE
    lease.release()
    assert lease.keep()
