"""
scripts/bootstrap as a newcomer types it: options alone run on this machine's deploy
(`@local deploys/bootstrap.py` goes in front), an inventory or deploy file given passes every
argument through unchanged. The real script runs in a copy of the repository whose
`.venv/bin/pyinfra` only prints the arguments it gets: nothing is deployed, the real `.venv` is
never touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess

import click
import pytest
from pyinfra_cli.main import cli

from tests.conftest import REPO, need

pytestmark = pytest.mark.unit

SCRIPT = REPO / "scripts/bootstrap"
FAKE_PYINFRA = """#!/usr/bin/env python3
import json, sys
print(json.dumps(sys.argv[1:]))
"""


@pytest.fixture
def repo_copy(tmp_path):
    """scripts/bootstrap in a tree of its own, with a .venv it takes as up to date."""
    (tmp_path / "scripts").mkdir()
    shutil.copy2(SCRIPT, tmp_path / "scripts/bootstrap")
    requirements = b"pyinfra==3.10.0\n"
    (tmp_path / "requirements.txt").write_bytes(requirements)
    venv_bin = tmp_path / ".venv/bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "pyinfra").write_text(FAKE_PYINFRA)
    (venv_bin / "pyinfra").chmod(0o755)
    (tmp_path / ".venv/.requirements.sha256").write_text(
        hashlib.sha256(requirements).hexdigest() + "\n")
    return tmp_path


def bootstrap(repo, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(repo / "scripts/bootstrap"), *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=60)


def argv_of(repo, *args: str, env: dict | None = None) -> list[str]:
    """The arguments pyinfra gets from `scripts/bootstrap *args`."""
    result = bootstrap(repo, *args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


LOCAL = ["@local", "deploys/bootstrap.py"]


@pytest.mark.parametrize("args, expected", [
    ([], LOCAL),
    (["--dry"], [*LOCAL, "--dry"]),
    (["-y"], [*LOCAL, "-y"]),
    (["--diff"], [*LOCAL, "--diff"]),
    (["--data", "preflight_strict=false", "-y"],
     [*LOCAL, "--data", "preflight_strict=false", "-y"]),
    (["--data=preflight_strict=false"], [*LOCAL, "--data=preflight_strict=false"]),
    # an option's value is not a positional argument, even when it looks like a host or a file
    (["--limit", "mnemos-staging-1", "--dry"], [*LOCAL, "--limit", "mnemos-staging-1", "--dry"]),
    (["--data", "mnemos_root=/srv/x.py", "--user", "dev"],
     [*LOCAL, "--data", "mnemos_root=/srv/x.py", "--user", "dev"]),
    # an inventory or a deploy given: passed through unchanged
    (["inventories/staging.py", "deploys/bootstrap.py", "--dry"],
     ["inventories/staging.py", "deploys/bootstrap.py", "--dry"]),
    (["@local", "deploys/tree.py"], ["@local", "deploys/tree.py"]),
    (["--data", "launch_stack=false", "@local", "deploys/tree.py"],
     ["--data", "launch_stack=false", "@local", "deploys/tree.py"]),
    (["-y", "my-host", "exec", "--", "uptime"], ["-y", "my-host", "exec", "--", "uptime"]),
])
def test_pyinfra_gets_these_arguments(repo_copy, args, expected):
    if os.geteuid() != 0 and "@local" in expected:
        pytest.skip("as root only: the own-account case (--sudo added) is the test below")
    assert argv_of(repo_copy, *args) == expected


@pytest.fixture
def as_dev(tmp_path):
    """PATH with an `id` that answers as the account `dev` (uid 1000) and a `sudo` that needs no
    password, as on a WSL distribution."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "id").write_text('#!/bin/sh\ncase "$1" in -u) echo 1000 ;; -un) echo dev ;; '
                             '*) exec /usr/bin/id "$@" ;; esac\n')
    (fake / "sudo").write_text("#!/bin/sh\nexit 0\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    return {"PATH": f"{fake}:{os.environ['PATH']}"}


@pytest.mark.parametrize("args, expected", [
    ([], [*LOCAL, "--sudo"]),
    (["--data", "preflight_strict=false", "-y"],
     [*LOCAL, "--data", "preflight_strict=false", "-y", "--sudo"]),
    (["--sudo", "--dry"], [*LOCAL, "--sudo", "--dry"]),
    (["--data", "x=1", "@local", "deploys/tree.py"],
     ["--data", "x=1", "@local", "deploys/tree.py", "--sudo"]),
    (["@local", "exec", "--", "id"], ["--sudo", "@local", "exec", "--", "id"]),
    (["inventories/staging.py", "deploys/bootstrap.py"],
     ["inventories/staging.py", "deploys/bootstrap.py"]),
])
def test_own_account_on_this_machine_gets_sudo(repo_copy, as_dev, args, expected):
    result = bootstrap(repo_copy, *args, env=as_dev)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected
    assert ("operations run with sudo (--sudo)" in result.stderr) == ("--sudo" not in args
                                                                      and "--sudo" in expected)


def test_echo_prints_the_command_and_runs_nothing(repo_copy):
    (repo_copy / ".venv/bin/pyinfra").write_text("#!/bin/sh\necho ran; exit 3\n")
    result = bootstrap(repo_copy, "--dry", env={"MNEMOS_BOOTSTRAP_ECHO": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [".venv/bin/pyinfra", *LOCAL, "--dry"]


def test_value_options_are_pyinfras():
    """The script's list of options that take a value is exactly pyinfra's (a pyinfra upgrade
    that adds one fails here, not in a newcomer's hands)."""
    text = SCRIPT.read_text()
    listed = re.search(r'VALUE_OPTIONS="(.*?)"', text, re.S)
    assert listed, "no VALUE_OPTIONS in scripts/bootstrap"
    ours = set(listed.group(1).split())
    theirs = {opt for p in cli.params
              if isinstance(p, click.Option) and not p.is_flag and not p.count
              for opt in p.opts + p.secondary_opts}
    assert ours == theirs


def test_shellcheck_accepts_the_script():
    result = subprocess.run([need("shellcheck"), str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
