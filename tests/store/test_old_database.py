"""A ledger written by release 0.1.0 still verifies and still serves what it served.

data/ledger-0.1.0.db was made by 0.1.0, the layout before the modules moved into store/,
audit/, service/, cli/ and fixtures/: the seed story and the retraction and voids-and-time
fixtures, 20 events, projections rebuilt. Beside it, the JSON that release served for the
seed claim, its history and the list of claims.

Stored events name their classes by topic (``domain.claim:Claim.Asserted``), and the hash
chain covers them as stored: a class that moves, or a field that changes its name, leaves
old events that no longer load or no longer hash the same. Old databases must keep opening
without a migration, so a move must leave the topics resolving as they did.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.test_serve import CLAIMS, serving

DATA = Path(__file__).parent / "data"
KEY = "putin-phoned-elton-john"
# What 0.1.0 served, by the request that served it.
SERVED = {
    f"/v1/claims/{KEY}": DATA / f"claim-{KEY}.json",
    f"/v1/claims/{KEY}/history": DATA / f"history-{KEY}.json",
    "/v1/claims?limit=50": DATA / "claims-list.json",
}


@pytest.fixture
def old_database_url(tmp_path: Path) -> str:
    """A copy: serving and verifying write (projection tracking, a signing key) beside it."""
    copy = tmp_path / "ledger-0.1.0.db"
    shutil.copyfile(DATA / "ledger-0.1.0.db", copy)
    return f"sqlite:///{copy}"


@pytest.mark.slow
def test_claims_verify_finds_every_check_holding_on_a_0_1_0_database(old_database_url: str, tmp_path: Path) -> None:
    verified = subprocess.run(
        [*CLAIMS, "verify"], env={**os.environ, "LEDGER_DATABASE_URL": old_database_url}, cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "hash chains: 20 events of 4 claims" in verified.stdout
    assert "all checks hold" in verified.stdout


@pytest.mark.slow
def test_claims_serve_on_a_0_1_0_database_serves_what_0_1_0_served(old_database_url: str, tmp_path: Path) -> None:
    with serving(old_database_url, cwd=tmp_path) as (_, base, _), httpx.Client(base_url=base, timeout=10) as http:
        for path, stored in SERVED.items():
            response = http.get(path)
            assert response.status_code == 200, f"{path}: {response.text}"
            assert response.json() == with_reviews(json.loads(stored.read_text())), path


def with_reviews(served: dict[str, Any]) -> dict[str, Any]:
    """What 0.1.0 served, with what reviews added to claim views since: no review (its
    ledgers hold none), and a count of none."""
    views = served.get("items", [served] if "counts" in served else [])
    for view in views:
        view["reviews"] = []
        view["counts"]["reviews"] = 0
    return served
