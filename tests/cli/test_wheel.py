"""The wheel on its own: built from this checkout, installed in a fresh virtualenv, its
`claims demo` and `claims serve` work from a directory outside the checkout.

The editable install the other tests run cannot show this: it reads every module and
data file where the checkout keeps them. Here a package missing from the wheel's list, a
fixture story left out of its package data, or a file found by the checkout's layout fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import httpx
import pytest

from tests.cli.test_serve import serving

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "store", "projections", "audit", "service", "api", "cli", "fixtures")
KEY = "putin-phoned-elton-john"


def build_wheel(tmp_path: Path) -> Path:
    # From a copy: setuptools writes build/ and *.egg-info beside the sources it builds, and
    # the checkout is shared with whoever else is working in it.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".*", "build", "dist", "var", "*.egg-info", "__pycache__", "tests", "*.db", "*.db-*",
    ))
    out = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=180,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = out.glob("claims_ledger-*.whl")
    return wheel


def install(wheel: Path, target: Path) -> Path:
    """A virtualenv at `target` with the wheel's own copy of the project; its dependencies are
    the project virtualenv's, already installed. Returns the virtualenv's bin/ folder."""
    venv.EnvBuilder(with_pip=False).create(target)
    python = target / "bin" / "python"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
         "--disable-pip-version-check", str(wheel)],
        capture_output=True, text=True, timeout=120,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    # Written after the install: before, pip would find the checkout's editable claims-ledger
    # of the same version and keep it. A folder named in a .pth joins sys.path, but the .pth
    # files inside it are not run, so the checkout's editable finder stays out.
    (Path(site) / "project-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return target / "bin"


@pytest.mark.slow
def test_the_installed_wheel_runs_claims_demo_and_claims_serve_outside_the_checkout(tmp_path: Path) -> None:
    bin_dir = install(build_wheel(tmp_path), tmp_path / "venv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environ = {name: value for name, value in os.environ.items()
               if name not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not name.startswith("LEDGER_")}
    url = f"sqlite:///{elsewhere / 'ledger.db'}"
    venv_root = (tmp_path / "venv").resolve()

    where = subprocess.run(
        [bin_dir / "python", "-c",
         f"import json, sys, {', '.join(PACKAGES)}; print(json.dumps({{m: sys.modules[m].__file__ for m in {PACKAGES!r}}}))"],
        cwd=elsewhere, env=environ, capture_output=True, text=True, timeout=60,
    )
    assert where.returncode == 0, where.stderr
    for package, file in json.loads(where.stdout).items():
        assert Path(file).resolve().is_relative_to(venv_root), f"{package} imported from {file}"

    demo = subprocess.run([bin_dir / "claims", "demo"], cwd=elsewhere, env={**environ, "LEDGER_DATABASE_URL": url},
                          capture_output=True, text=True, timeout=60)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    imported = re.search(r"imported 3 acts from (.+?): 3 new events", demo.stderr)
    assert imported, demo.stderr
    assert Path(imported.group(1)).is_relative_to(venv_root), imported.group(1)

    with serving(url, claims=[str(bin_dir / "claims")], environ=environ, cwd=elsewhere) as (process, base, _):
        # The seed is 3 events: the read waits until the projections have them.
        claim = httpx.get(f"{base}/v1/claims/{KEY}", params={"min_position": 3}, timeout=10)
        assert claim.status_code == 200, claim.text
        assert claim.json()["status"] == "disputed"
        # The web pages come from the wheel too: templates, and static files at their versioned URLs.
        home = httpx.get(f"{base}/", timeout=10)
        assert home.status_code == 200 and "text/html" in home.headers["content-type"], home.text[:500]
        assert "Vladimir Putin telephoned Elton John" in home.text
        stylesheet = re.search(r'href="(/static/[0-9a-f]+/style\.css)"', home.text)
        assert stylesheet and httpx.get(base + stylesheet.group(1), timeout=10).status_code == 200
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 0
