"""
scripts/bench times no-op runs; a run timed as a no-op that changed something would make the
figures lie, so the bench stops. Checked here on real pyinfra runs (@local, a temporary directory):
pyinfra prints its result table on stderr, and the phase is the child's environment.
"""

from __future__ import annotations

import os

import pytest

from tests import bench

pytestmark = pytest.mark.unit


def _deploy(tmp_path, path):
    deploy = tmp_path / "one_op.py"
    deploy.write_text("from pyinfra.operations import files\n"
                      f"files.directory(name='a directory', path={str(path)!r})\n")
    return [bench.PYINFRA, "@local", str(deploy), "-y"]


def test_a_run_timed_as_a_no_op_that_changes_something_stops_the_bench(tmp_path):
    args = _deploy(tmp_path, tmp_path / "new")
    with pytest.raises(SystemExit) as stopped:
        bench.timed(args, dict(os.environ, BENCH_PHASE="noop"))
    assert "a no-op run changed ['a directory']" in str(stopped.value)


def test_a_real_no_op_is_timed(tmp_path):
    args = _deploy(tmp_path, tmp_path)
    assert bench.timed(args, dict(os.environ, BENCH_PHASE="noop")) > 0


def test_outside_the_no_op_phase_a_change_is_expected(tmp_path):
    args = _deploy(tmp_path, tmp_path / "new")
    assert bench.timed(args, dict(os.environ)) > 0
