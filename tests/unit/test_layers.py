"""
The import graph keeps its layers: deploys -> roles -> operations -> facts. A role only composes
operations (it imports no other role); operations import no role and no deploy; facts import
neither operations nor roles. Imports are read from the code (ast), lazy and relative ones
included (a relative import is resolved against the importing module's package).

One import convention (docs/contributing.md): the plain names apt, docker, files,
server... are the project's own operation modules (mnemos_provision.operations.*), imported
unaliased; pyinfra's operation and fact modules are never bound to a name of their own (`import
pyinfra.operations.server`, then `pyinfra.operations.server.shell(...)`), so `server.` means the
same module in every file. No private name (`_x`) is imported from another module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def absolute(node: ast.ImportFrom, path: Path) -> str:
    """The module an ImportFrom names, a relative one resolved against `path`'s package."""
    if not node.level:
        return node.module or ""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]  # a module's package is its parent
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_nodes(path: Path):
    return [node for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.Import, ast.ImportFrom))]


def imports(path: Path) -> set[str]:
    found = set()
    for node in import_nodes(path):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        else:
            module = absolute(node, path)
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


def files(folder: str) -> list[Path]:
    return sorted((REPO / folder).glob("*.py"))


def project_files() -> list[Path]:
    return sorted(p for folder in ("mnemos_provision", "roles", "deploys")
                  for p in (REPO / folder).rglob("*.py"))


def test_relative_imports_are_resolved(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    (tmp_path / "roles").mkdir()
    role = tmp_path / "roles" / "backup.py"
    role.write_text("from .tree import tree\nfrom . import stack\n")
    assert {"roles.tree", "roles.tree.tree", "roles", "roles.stack"} <= imports(role)
    package = tmp_path / "roles" / "__init__.py"
    package.write_text("from .tree import tree\n")
    assert "roles.tree.tree" in imports(package)


def test_no_role_imports_a_role():
    for path in files("roles"):
        others = {i for i in imports(path) if i == "roles" or i.startswith("roles.")}
        assert not others, f"{path.name} imports {sorted(others)}: a role composes operations"


def test_the_checks_refuse_relative_imports(tmp_path, monkeypatch):
    """The checks themselves, on a tree of fixture files: a role that imports a role with a
    relative import, and an operation that reaches the settings with one, are both refused."""
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    (tmp_path / "roles").mkdir()
    (tmp_path / "roles" / "tree.py").write_text("def tree():\n    pass\n")
    (tmp_path / "roles" / "backup.py").write_text("from .tree import tree\n")
    with pytest.raises(AssertionError, match=r"backup.py imports \['roles.tree', "
                                             r"'roles.tree.tree'\]"):
        test_no_role_imports_a_role()
    operations = tmp_path / "mnemos_provision" / "operations"
    operations.mkdir(parents=True)
    (operations / "cron.py").write_text("from ..settings import Settings\n")
    with pytest.raises(AssertionError, match=r"mnemos_provision.operations.cron \(layer 0\) "
                                             r"imports \['mnemos_provision.settings'"):
        test_no_import_runs_up_the_layers(operations / "cron.py")


@pytest.mark.parametrize("folder,forbidden", [
    ("mnemos_provision/operations", ("roles", "deploys")),
    ("mnemos_provision/facts", ("roles", "deploys", "mnemos_provision.operations")),
])
def test_lower_layers_import_no_upper_one(folder, forbidden):
    for path in files(folder):
        upper = {i for i in imports(path) for f in forbidden if i == f or i.startswith(f + ".")}
        assert not upper, f"{folder}/{path.name} imports {sorted(upper)}"


PYINFRA_MODULE_PACKAGES = ("pyinfra.operations", "pyinfra.facts")
OWN_MODULE_PACKAGES = ("mnemos_provision.operations", "mnemos_provision.facts")


@pytest.mark.parametrize("path", project_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_one_import_convention(path):
    wrong = []
    for node in import_nodes(path):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name.startswith(PYINFRA_MODULE_PACKAGES):
                    wrong.append(f"import {alias.name} as {alias.asname}: call it by its full name")
            continue
        module = absolute(node, path)
        for alias in node.names:
            if module in PYINFRA_MODULE_PACKAGES:
                wrong.append(f"from {module} import {alias.name}: pyinfra's modules are used "
                             f"by their full name (import {module}.{alias.name})")
            elif module in OWN_MODULE_PACKAGES and alias.asname:
                wrong.append(f"from {module} import {alias.name} as {alias.asname}: the project's "
                             "modules keep their plain names")
            if alias.name.startswith("_") and module != "__future__":
                wrong.append(f"from {module} import {alias.name}: a private name of another "
                             "module (make it public or move it)")
    assert not wrong, f"{path.relative_to(REPO)}: " + "; ".join(wrong)


# The project's own modules by layer, lowest first. A module imports only modules of its own
# layer or a lower one. The plumbing (rank 0) reads no settings: operations, facts and the host's
# HTTP transport reach pyinfra through mnemos_provision.connection; the settings context
# (HostContext, host_context: rank 3) is built at the entry points, the deploy files.
LAYER_RANKS = (
    ("mnemos_provision.stack", "mnemos_provision.secret_values", "mnemos_provision.dotenv",
     "mnemos_provision.connection", "mnemos_provision.fact_batch", "mnemos_provision.facts",
     "mnemos_provision.tree_entry", "mnemos_provision.vault_setup",
     "mnemos_provision.minio_setup", "mnemos_provision.host_http",
     "mnemos_provision.operations"),
    ("mnemos_provision.settings", "mnemos_provision.settings_doc"),
    ("mnemos_provision.render", "mnemos_provision.where", "mnemos_provision.secret_store.state",
     "mnemos_provision.secret_store"),
    ("mnemos_provision.context", "mnemos_provision.secret_store.load"),
    ("roles",),
    ("deploys",),
)


def rank(module: str) -> int | None:
    """The layer of a project module (the longest prefix listed wins); None: not the project's."""
    best = None
    for number, prefixes in enumerate(LAYER_RANKS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                    best is None or len(prefix) > best[1]):
                best = (number, len(prefix))
    return None if best is None else best[0]


@pytest.mark.parametrize("path", project_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_import_runs_up_the_layers(path):
    if path.name == "__init__.py" and not any(rank(i) is not None for i in imports(path)):
        return  # a package marker that imports nothing of the project (mnemos_provision's: os, sys)
    own = rank(module_name(path))
    assert own is not None, f"{path.relative_to(REPO)} has no layer in LAYER_RANKS"
    upward = sorted(i for i in imports(path) if (r := rank(i)) is not None and r > own)
    assert not upward, f"{module_name(path)} (layer {own}) imports {upward} from a higher layer"


# The one lazy boundary (start-up time): hvac, the minio SDK and requests load only when Vault or
# MinIO is set up, through the role's one import of its operation and set-up modules. Every other
# import sits at the top of its module.
LAZY_BOUNDARY = {("roles/vault.py", "vault_init"), ("roles/vault.py", "vault_token_rotation"),
                 ("roles/minio.py", "minio_init")}
CLIENT_MODULES = ("hvac", "minio", "requests")


def test_imports_sit_at_the_top_but_behind_the_lazy_boundary():
    inside = set()
    for path in project_files():
        for function in ast.walk(ast.parse(path.read_text())):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                    isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(function)):
                inside.add((str(path.relative_to(REPO)), function.name))
    assert inside <= LAZY_BOUNDARY, f"imports inside functions: {sorted(inside - LAZY_BOUNDARY)}"


def test_the_deploy_loads_no_client_before_the_boundary():
    modules = sorted(module_name(p) for p in project_files()
                     if p.parts[-2] == "roles" or p.name in ("context.py", "where.py"))
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            f"print(sorted(m for m in {CLIENT_MODULES!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"loaded before the boundary: {result.stdout}"
