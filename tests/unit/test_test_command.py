"""
scripts/test, the README's test command, as CI runs it: with no argument, the unit tier alone,
then the fleet tier in a second pytest beside converge and stack; the command fails when any of
them fails, and prints the fleet's output after theirs. With arguments (`scripts/test -m unit`),
one pytest with exactly those arguments. The real script runs in a copy of the repository whose
`.venv/bin/python` only prints the pytest arguments it gets (and exits with the code a test asks
for), with stand-ins for `dpkg-query` (every package installed) and `scripts/start-dockerd`:
nothing is installed or started.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

FAKE_PYTHON = """#!/bin/sh
if [ "$1" = -c ]; then echo /nonexistent/docker-compose; exit 0; fi
shift 2
case "$*" in
  *fleet*) sleep 1; echo "fleet pytest: $*"; exit "${FLEET_RC:-0}";;
  *converge*) echo "converge/stack pytest: $*"; exit "${MAIN_RC:-0}";;
  -m\\ unit\\ tests/unit) echo "unit pytest: $*"; exit "${UNIT_RC:-0}";;
  *) echo "pytest: $*"; exit 0;;
esac
"""


@pytest.fixture
def repo_copy(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy2(REPO / "scripts/test", tmp_path / "scripts/test")
    (tmp_path / "scripts/start-dockerd").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "requirements.txt").write_text("pyinfra==3.10.0\n")
    (tmp_path / "requirements-dev.txt").write_text("pytest==9.0.3\n")
    venv_bin = tmp_path / ".venv/bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text(FAKE_PYTHON)
    (venv_bin / "pytest").write_text("")
    digest = hashlib.sha256(b"pyinfra==3.10.0\npytest==9.0.3\n").hexdigest()
    (tmp_path / ".venv/.requirements-dev.sha256").write_text(digest + "\n")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "dpkg-query").write_text("#!/bin/sh\nprintf 'install ok installed'\n")
    for f in (*venv_bin.iterdir(), *stubs.iterdir(), *(tmp_path / "scripts").iterdir()):
        f.chmod(0o755)
    return tmp_path


def run(repo, *args, **rcs):
    env = dict(os.environ, HOME=str(repo), PATH=f"{repo / 'stubs'}:{os.environ['PATH']}",
               **{k: str(v) for k, v in rcs.items()})
    env.pop("MNEMOS_TEST_SERIAL", None)
    return subprocess.run(["bash", "scripts/test", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_whole_run_is_unit_then_fleet_beside_converge_and_stack(repo_copy):
    result = run(repo_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    unit = out.index("unit pytest: -m unit tests/unit")
    main = out.index("converge/stack pytest: -m converge or stack tests/converge tests/stack")
    fleet = out.index("fleet pytest: -m fleet tests/fleet")
    # the fleet's output is printed whole after theirs, under a header naming it
    assert unit < main < out.index("fleet tier (ran beside converge and stack)") < fleet, out


@pytest.mark.parametrize("failing", ["UNIT_RC", "MAIN_RC", "FLEET_RC"])
def test_the_whole_run_fails_when_any_pytest_fails(repo_copy, failing):
    result = run(repo_copy, **{failing: 1})
    assert result.returncode != 0, f"{failing}=1 and scripts/test exited 0:\n{result.stdout}"
    # every tier still ran, and the fleet's output is printed
    assert "fleet pytest: -m fleet tests/fleet" in result.stdout, result.stdout


def test_arguments_go_to_one_pytest_unchanged(repo_copy):
    result = run(repo_copy, "-m", "unit", "-x", "tests/unit/test_docs.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["pytest: -m unit -x tests/unit/test_docs.py"]
