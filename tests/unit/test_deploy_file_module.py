"""
pyinfra orders operations by their call stack (inspect.stack() for each one); for a frame of the
deploy file it executes, inspect.getmodule searches all of sys.modules unless the file is a known
module's. for_each_host registers the deploy file as one (mnemos_provision/context.py), so that
search ends at getmodule's cache. This runs the real pyinfra CLI on a deploy file that asks.
"""

from __future__ import annotations

import subprocess

import pytest

from tests import bench

pytestmark = pytest.mark.unit

DEPLOY = """
import inspect, sys
from mnemos_provision.context import for_each_host
with for_each_host():
    module = inspect.getmodule(sys._getframe())
    print("MODULE", module.__name__ if module else None, module.__file__ if module else None)
"""


def test_the_deploy_files_frames_belong_to_a_module(tmp_path):
    deploy = tmp_path / "deploy.py"
    deploy.write_text(DEPLOY)
    result = subprocess.run([bench.PYINFRA, "@local", str(deploy), "-y"], cwd=bench.REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("MODULE"))
    assert line == f"MODULE mnemos-deploy-file:{deploy} {deploy}"
