"""
The import graph keeps its layers: deploys -> roles -> operations -> facts. A role only composes
operations (it imports no other role); operations import no role and no deploy; facts import
neither operations nor roles. Imports are read from the code (ast), lazy ones included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def files(folder: str) -> list[Path]:
    return sorted((REPO / folder).glob("*.py"))


def test_no_role_imports_a_role():
    for path in files("roles"):
        others = {i for i in imports(path) if i == "roles" or i.startswith("roles.")}
        assert not others, f"{path.name} imports {sorted(others)}: a role composes operations"


@pytest.mark.parametrize("folder,forbidden", [
    ("mnemos_provision/operations", ("roles", "deploys")),
    ("mnemos_provision/facts", ("roles", "deploys", "mnemos_provision.operations")),
])
def test_lower_layers_import_no_upper_one(folder, forbidden):
    for path in files(folder):
        upper = {i for i in imports(path) for f in forbidden if i == f or i.startswith(f + ".")}
        assert not upper, f"{folder}/{path.name} imports {sorted(upper)}"
