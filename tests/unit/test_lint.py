"""
The habits the repository keeps, checked in the unit tier: ruff (ruff.toml: 100 columns, import
order, pyflakes) over the whole repository, mypy (mypy.ini) over the deploy code, and every
operation documented as pyinfra documents its own (each argument, and an example).
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from importlib import import_module

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

OPERATION_MODULES = ("files", "apt", "docker", "compose", "server", "vault", "minio",
                     "rotation")


def tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True)


def test_ruff_finds_nothing():
    result = tool("ruff", "check", ".")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_mypy_finds_nothing():
    result = tool("mypy", "mnemos_provision", "roles", "deploys")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def operations():
    for name in OPERATION_MODULES:
        module = import_module(f"mnemos_provision.operations.{name}")
        for attr, value in vars(module).items():
            if callable(value) and hasattr(value, "_inner") and value.__module__ == module.__name__:
                yield pytest.param(f"{name}.{attr}", value, id=f"{name}.{attr}")


@pytest.mark.parametrize("name,op", list(operations()))
def test_every_operation_documents_its_arguments_and_an_example(name, op):
    doc = inspect.getdoc(op) or ""
    parameters = [p for p in inspect.signature(op._inner).parameters if p != "facts"]
    documented = " ".join(line for line in doc.splitlines() if line.startswith("+ "))
    missing = [p for p in parameters if p not in documented]
    assert not missing, f"{name}: arguments without a '+ <argument>:' line: {missing}"
    assert "**Example:**" in doc and f"{name}(" in doc, f"{name}: no example calling {name}(...)"
