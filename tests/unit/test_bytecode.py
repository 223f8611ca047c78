"""
The project's modules are compiled once, not on every run: pyinfra's CLI turns Python's bytecode
cache off for its process, and mnemos_provision turns it back on (mnemos_provision/__init__.py)
unless the interpreter was told not to write bytecode or the checkout belongs to another account.
Each case runs the real pyinfra CLI on a copy of the package, with a deploy file that imports it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import bench

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def run(checkout: Path, **env: str) -> list[str]:
    """Run pyinfra in `checkout`; the bytecode files written there."""
    shutil.copytree(REPO / "mnemos_provision", checkout / "mnemos_provision",
                    ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    (checkout / "deploy.py").write_text("import mnemos_provision.where  # noqa: F401\n")
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    result = subprocess.run([bench.PYINFRA, "@local", "deploy.py", "-y"], cwd=checkout,
                            env={**base, **env}, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return sorted(p.name for p in checkout.rglob("*.pyc"))


def test_a_run_caches_the_packages_bytecode(tmp_path):
    written = run(tmp_path)
    assert any(name.startswith("where.") for name in written), written
    assert any(name.startswith("settings.") for name in written), written


def test_pythondontwritebytecode_is_respected(tmp_path):
    assert run(tmp_path, PYTHONDONTWRITEBYTECODE="1") == []


@pytest.mark.skipif(os.geteuid() != 0, reason="giving the checkout to another account needs root")
def test_a_checkout_of_another_account_gets_no_bytecode_from_root(tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    os.chown(checkout, 65534, 65534)  # nobody's checkout, run by root (as under sudo)
    assert run(checkout) == []
