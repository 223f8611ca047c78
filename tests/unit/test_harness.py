"""
tests/harness.py's reading of pyinfra's runs, on real `pyinfra @local` runs: the zero-change
assertion of the converge and fleet tiers (assert_no_change) holds for a run that changed nothing,
and fails for a run that changed something and for a run that failed before pyinfra printed its
result table (where "no operation changed" would be read from an empty table).
"""

from __future__ import annotations

import pytest

from tests.conftest import REPO, run
from tests.harness import RunResult, assert_no_change, parse_results

pytestmark = pytest.mark.unit


def pyinfra_run(tmp_path, body: str) -> RunResult:
    deploy = tmp_path / "deploy.py"
    deploy.write_text("import pyinfra.operations.files\nimport pyinfra.operations.server\n" + body)
    pyinfra = str(REPO / ".venv/bin/pyinfra")
    result = run([pyinfra, "@local", str(deploy), "-y"], cwd=tmp_path)
    output = result.stdout + result.stderr
    return RunResult(result.returncode, output, parse_results(output))


def test_a_run_that_changed_nothing_passes(tmp_path):
    done = pyinfra_run(tmp_path, f"pyinfra.operations.files.directory(name='Here', "
                                 f"path={str(tmp_path)!r})\n")
    assert list(done.rows) == ["Here"], done.output[-2000:]
    assert_no_change(done)


def test_a_run_that_changed_something_fails(tmp_path):
    done = pyinfra_run(tmp_path, f"pyinfra.operations.files.directory(name='New', "
                                 f"path={str(tmp_path / 'new')!r})\n")
    with pytest.raises(AssertionError, match=r"a converged host changed: \['New'\]"):
        assert_no_change(done)


def test_a_run_that_failed_before_its_table_fails(tmp_path):
    done = pyinfra_run(tmp_path, "raise SystemExit('the deploy stopped before any operation')\n")
    assert done.rows == {} and done.changed == [], done.output[-2000:]  # what used to pass
    with pytest.raises(AssertionError, match="the run failed"):
        assert_no_change(done)
    with pytest.raises(AssertionError, match="no result table in the output"):
        assert_no_change(RunResult(0, done.output, done.rows))
