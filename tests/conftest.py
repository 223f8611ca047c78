"""Shared helpers: the repo on sys.path, a fake pyinfra host for operation decisions, tools."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.harness import compose_binary  # noqa: E402,F401  (the unit tests import it from here)

# Each tier's folder and its mark: `-m <tier>` runs a tier alone (docs/testing.md), so a test of the
# folder without the mark would be left out of it without a word.
TIERS = ("unit", "converge", "stack", "fleet")


@pytest.hookimpl(tryfirst=True)  # before -m deselects what lacks the mark
def pytest_collection_modifyitems(config, items):
    unmarked = [item.nodeid for item in items
                if (tier := Path(str(item.fspath)).parent.name) in TIERS
                and Path(str(item.fspath)).parent.parent == REPO / "tests"
                and item.get_closest_marker(tier) is None]
    if unmarked:
        raise pytest.UsageError("not marked with their tier (pytestmark = pytest.mark.<tier>), "
                                "so `-m <tier>` leaves them out: " + ", ".join(unmarked[:10]))


class FakeHost:
    """Stands in for pyinfra's `host` inside an operation: facts from a table, noops recorded."""

    def __init__(self, facts: dict, diff: bool = False):
        from types import SimpleNamespace
        self.facts = facts
        self.noops: list[str] = []
        self.name = "fake"
        # executing: the operations decide as in a run (-y), not while pyinfra plans (--dry)
        self.state = SimpleNamespace(config=SimpleNamespace(DIFF=diff), is_executing=True)

    def get_fact(self, cls, **kwargs):
        value = self.facts[cls.__name__]
        return value(**kwargs) if callable(value) else value

    def noop(self, text):
        self.noops.append(text)


def run_op(module, op, facts: dict, **kwargs):
    """Run operation `op` of `module` with `facts`; return (command strings, noop messages)."""
    from mnemos_provision import fact_batch
    fake = FakeHost(facts)
    original, original_batch = module.host, fact_batch.host
    module.host = fact_batch.host = fake  # declared facts are read through fact_batch
    try:
        commands = []
        for command in op._inner(**kwargs):
            if hasattr(command, "get_raw_value"):
                commands.append(command.get_raw_value())
            elif type(command).__name__ == "FileUploadCommand":
                commands.append(f"UPLOAD {command.dest}")
            else:
                commands.append(str(command))
        return commands, fake.noops
    finally:
        module.host, fact_batch.host = original, original_batch


def need(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        pytest.fail(f"{tool} is not installed: scripts/test installs it (run the README's test "
                    "command)")
    return path


def data_cases(root: Path) -> list:
    """The cases of a tests-as-data folder (tests/operations, tests/facts): each
    <root>/<module>.<name>/<case>.json as pytest parameters (folder name, path), with the id
    "<folder>/<case>"."""
    return [pytest.param(directory.name, case, id=f"{directory.name}/{case.stem}")
            for directory in sorted(p for p in root.iterdir() if p.is_dir())
            for case in sorted(directory.glob("*.json"))]


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run(cmd, **kwargs)


# ------------------------------------------------------------------ the provisioned machine

@pytest.fixture(scope="session")
def provisioned():
    """
    A fresh Debian 12 machine (container) provisioned by the whole deploys/bootstrap.py, Docker
    Engine and the stack included. Shared by the converge and stack tiers; removed at the end.
    Yields (machine, result of the first run).
    """
    from tests import harness
    need("docker")
    machine = harness.FreshHost("mnemos-converge")
    machine.archive = harness.ensure_standin_archive()
    machine.start()
    try:
        first = machine.deploy()
        yield machine, first
    finally:
        if not os.environ.get("MNEMOS_KEEP_TEST_HOST"):
            machine.remove()
