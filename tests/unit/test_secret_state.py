"""
The secret state is never lost, rotated or leaked by accident (docs/secrets.md). Each case runs
the real `pyinfra @local deploys/tree.py` into a temporary tree, every run at its most verbose
(`-vvv --debug --diff`), and every output is searched for every secret value at the end.

"A live install" is what the deploy looks for on a real host: a volume of the compose project
(created here on the machine's Docker Engine, labelled as Compose labels it), backup archives.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, need, run

pytestmark = pytest.mark.unit

PYINFRA = str(REPO / ".venv/bin/pyinfra") if (REPO / ".venv/bin/pyinfra").exists() else "pyinfra"
VERBOSE = ("-vvv", "--debug", "--diff")
OUTPUTS: list[str] = []  # every run's output, searched for every secret value at the end
SECRETS_SEEN: set[str] = set()
SECRET_FILES_B64: set[str] = set()


class Site:
    """A tree and its state directory under a private temporary directory."""

    def __init__(self, base: Path, project: str):
        self.base = base
        self.root = base / "mnemos"
        self.state_dir = base / "state"
        self.state = self.state_dir / "secrets.json"
        self.env = self.root / ".env"
        self.project = project

    def args(self, *data: str, verbose=True) -> list[str]:
        args = [PYINFRA, "@local", "deploys/tree.py", "-y", *(VERBOSE if verbose else ()),
                "--data", f"mnemos_root={self.root}", "--data", f"secrets_state_path={self.state}",
                "--data", f"compose_project={self.project}"]
        for item in data:
            args += ["--data", item]
        return args

    def deploy(self, *data: str) -> subprocess.CompletedProcess:
        result = run(self.args(*data), cwd=REPO)
        OUTPUTS.append(result.stdout + result.stderr)
        self.remember()
        return result

    def remember(self) -> None:
        for path in (self.state, self.env):
            try:  # a file's text as the deploy reads it (base64): its first line of 76 characters
                SECRET_FILES_B64.add(base64.b64encode(path.read_bytes()[:57]).decode())
            except OSError:
                pass
        for path in (self.state, *self.state_dir.glob("secrets.json.damaged-*")):
            try:
                SECRETS_SEEN.update(v for v in json.loads(path.read_text()).values()
                                    if isinstance(v, str) and len(v) >= 16)
            except (OSError, ValueError, AttributeError):
                pass

    def secrets(self) -> dict:
        return json.loads(self.state.read_text())

    def env_values(self) -> dict:
        return dict(line.split("=", 1) for line in self.env.read_text().splitlines()
                    if "=" in line and not line.startswith("#"))


def ok(result) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    return output


def refused(result, *fragments: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    for fragment in fragments:
        assert fragment in output, f"{fragment!r} not in:\n{output[-3000:]}"
    return output


@pytest.fixture
def site(tmp_path, request):
    project = "mnemost" + str(abs(hash(request.node.name)) % 10**6)
    yield Site(tmp_path, project)
    subprocess.run(f"docker volume ls -q --filter label=com.docker.compose.project={project} "
                   "| xargs -r docker volume rm", shell=True, capture_output=True)


@pytest.fixture
def installed(site):
    """A converged tree whose PostgreSQL volume holds data (a live install)."""
    need("docker")
    ok(site.deploy())
    subprocess.run(["docker", "volume", "create", "--label",
                    f"com.docker.compose.project={site.project}", f"{site.project}_postgres-data"],
                   check=True, capture_output=True)
    return site, site.state.read_bytes(), site.env.read_bytes()


# ---------------------------------------------------------------- damaged or lost state

@pytest.mark.parametrize("damage", ["deleted", "empty", "not JSON", "missing one secret"])
def test_a_lost_or_damaged_state_is_recovered_from_env_and_nothing_rotates(installed, damage):
    site, state, env = installed
    if damage == "deleted":
        site.state.unlink()
    elif damage == "empty":
        site.state.write_bytes(b"")
    elif damage == "not JSON":
        site.state.write_bytes(state[:40])
    else:
        site.state.write_text(json.dumps({k: v for k, v in json.loads(state).items()
                                          if k != "POSTGRES_PASSWORD"}))
    output = ok(site.deploy())
    assert "recovered" in output and str(site.state) in output
    assert json.loads(site.state.read_bytes()) == json.loads(state), "a secret changed"
    assert site.env.read_bytes() == env, ".env changed"
    assert oct(site.state.stat().st_mode & 0o777) == "0o600"
    if damage == "not JSON":
        kept = list(site.state_dir.glob("secrets.json.damaged-*"))
        assert len(kept) == 1 and kept[0].read_bytes() == state[:40], "the damaged file was lost"


def test_state_and_env_both_lost_with_data_stops_before_any_change(installed):
    site, _, _ = installed
    site.state.unlink()
    site.env.unlink()
    refused(site.deploy(), "POSTGRES_PASSWORD is in neither", str(site.state),
            f"{site.project}_postgres-data", "Restore", "nothing on the host was changed")
    assert not site.state.exists() and not site.env.exists(), "something was written"


def test_state_and_env_both_lost_with_archives_where_backup_storage_path_points_stops(site,
                                                                                      tmp_path):
    """Issue 22: the archives counted were only data/backups'; elsewhere, the key was
    regenerated (exit 0) and the archives could no longer be opened."""
    need("docker")
    elsewhere = tmp_path / "backups elsewhere"
    storage = f'dotenv_overrides={{"BACKUP_STORAGE_PATH": "{elsewhere}"}}'
    ok(site.deploy(storage))
    key = site.secrets()["BACKUP_ENCRYPTION_KEY"]
    elsewhere.mkdir()
    (elsewhere / "mnemos-backup-20260101T030000Z.tar.gz.gpg").write_bytes(b"encrypted")
    site.state.unlink()
    site.env.unlink()
    refused(site.deploy(storage), "BACKUP_ENCRYPTION_KEY is in neither", str(site.state),
            f"1 encrypted backup archive(s) in {elsewhere}", "nothing on the host was changed")
    assert not site.state.exists() and not site.env.exists(), "something was written"
    SECRETS_SEEN.add(key)


def test_a_new_install_without_data_generates_every_secret(site):
    output = ok(site.deploy())
    assert "recovered" not in output
    assert len(site.secrets()) == 8
    assert site.env_values()["POSTGRES_PASSWORD"] == site.secrets()["POSTGRES_PASSWORD"]


@pytest.mark.parametrize("value", [None, 12345, {"a": "b"}, ""])
def test_a_state_value_of_the_wrong_type_is_an_error_never_coerced(installed, value):
    site, state, env = installed
    data = json.loads(state)
    data["REDIS_PASSWORD"] = value
    site.state.write_text(json.dumps(data))
    refused(site.deploy(), "REDIS_PASSWORD is not a non-empty string", str(site.state))
    assert site.env.read_bytes() == env


@pytest.mark.parametrize("kind", ["directory", "symlink"])
def test_a_state_path_of_another_kind_is_refused(installed, kind, tmp_path):
    site, _, env = installed
    site.state.unlink()
    if kind == "directory":
        site.state.mkdir()
    else:
        (tmp_path / "elsewhere").write_text("{}")
        site.state.symlink_to(tmp_path / "elsewhere")
    refused(site.deploy(), f"{site.state} is a {kind}")
    assert site.env.read_bytes() == env
    if kind == "symlink":
        assert (tmp_path / "elsewhere").read_text() == "{}"


def test_a_supplied_secret_that_data_would_not_accept_is_refused(installed):
    site, state, env = installed
    refused(site.deploy('secrets={"POSTGRES_PASSWORD": "Zq9xW2vB7nM4kL8pR3tYa"}'),
            "the supplied POSTGRES_PASSWORD differs", "rotation is never implicit")
    assert site.state.read_bytes() == state and site.env.read_bytes() == env


# ---------------------------------------------------------------- two runs at once

def test_two_runs_at_once_always_leave_env_and_state_agreeing(tmp_path):
    """Two runs on a fresh root, started 0 to 1 s apart; repeated. The one that loses the race
    for the state stops before writing .env, saying so; the next run converges."""
    outcomes = []
    for trial, delay in enumerate([0, 0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]):
        site = Site(tmp_path / f"trial{trial}", "mnemosrace")
        site.base.mkdir()
        first = subprocess.Popen(site.args(verbose=False), cwd=REPO, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(delay)
        second = subprocess.Popen(site.args(verbose=False), cwd=REPO, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        results = [(p.wait(timeout=120), p.stdout.read()) for p in (first, second)]
        OUTPUTS.extend(output for _, output in results)
        site.remember()
        secrets, env = site.secrets(), site.env_values()
        for name in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "JWT_SECRET_KEY", "VAULT_TOKEN"):
            assert env[name] == secrets[name], \
                f"trial {trial}: .env and the state disagree on {name}"
        for code, output in results:
            assert "Traceback" not in output
            if code:
                assert "was written by another run after this run read it" in output, output[-2000:]
        outcomes.append(sorted(code for code, _ in results))
        before = site.state.read_bytes()
        again = run(site.args(verbose=False), cwd=REPO)
        assert again.returncode == 0 and site.state.read_bytes() == before
    assert all(o[0] == 0 for o in outcomes), "a trial where neither run succeeded"


# ---------------------------------------------------------------- safe writes

@pytest.mark.parametrize("how", ["world-writable", "another account's"])
def test_a_state_directory_others_can_write_is_refused_and_left_as_it_is(site, how):
    site.state_dir.mkdir(parents=True)
    if how == "world-writable":
        site.state_dir.chmod(0o1777)
    else:
        site.state_dir.chmod(0o700)
        shutil.chown(site.state_dir, "nobody")
    before = site.state_dir.stat()
    output = refused(site.deploy(), "nothing on the host was changed", str(site.state_dir))
    assert ("other accounts can write into it" in output if how == "world-writable"
            else "belongs to nobody" in output)
    after = site.state_dir.stat()
    assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid), "the directory changed"
    assert list(site.state_dir.iterdir()) == [] and not site.root.exists()


def test_missing_directories_of_the_state_are_made_for_the_user_only(site):
    ok(site.deploy())
    assert oct(site.state_dir.stat().st_mode & 0o777) == "0o700"
    assert oct(site.state.stat().st_mode & 0o777) == "0o600"
    assert oct((site.state_dir / "secrets.json.lock").stat().st_mode & 0o777) == "0o600"


def test_a_symlink_planted_at_the_old_predictable_staging_name_is_never_written(site, tmp_path):
    """The staging name was `.upload-<sha256(dest)[:16]>`; now it is random (128 bits) in a
    directory only the user can write, and nothing is written through a planted link."""
    import hashlib
    site.state_dir.mkdir(parents=True, mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    for dest in (site.state, site.env):
        name = ".upload-" + hashlib.sha256(str(dest).encode()).hexdigest()[:16]
        (site.state_dir / name).symlink_to(victim)
    ok(site.deploy())
    assert victim.read_text() == "untouched\n"


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_a_tree_file_that_is_a_link_is_a_clean_error_and_nothing_is_written_through_it(
        site, tmp_path, kind):
    ok(site.deploy())
    target = tmp_path / "target"
    target.write_text("outside the tree\n")
    makefile = site.root / "Makefile"
    makefile.unlink()
    if kind == "symlink":
        makefile.symlink_to(target)
        fragment = f"{makefile} is a symbolic link"
    else:
        os.link(target, makefile)
        fragment = f"{makefile} is a hard link (2 names for one file)"
    refused(site.deploy(), fragment, "Nothing was written")
    assert target.read_text() == "outside the tree\n"


def test_a_full_disk_leaves_no_half_file(site, tmp_path):
    """The tree on a small tmpfs filled to the last byte: the run fails, every file it had keeps
    its whole old content, and no staged file is left in its place."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)])
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        small = Site(mount_point, site.project)
        small.state_dir = tmp_path / "state"
        small.state = small.state_dir / "secrets.json"
        ok(small.deploy())
        before = {p: p.read_bytes() for p in small.root.rglob("*")
                  if p.is_file() and ".git/" not in str(p)}
        (small.root / "docker-compose.yml").write_text("# drifted\n")
        (small.root / ".env").write_text("# drifted\n")
        before[small.root / "docker-compose.yml"] = b"# drifted\n"
        before[small.root / ".env"] = b"# drifted\n"
        run(["dd", "if=/dev/zero", f"of={mount_point}/filler", "bs=4k"])
        result = small.deploy()
        assert result.returncode != 0, "the run succeeded on a full disk"
        for path, content in before.items():
            assert path.read_bytes() == content, f"{path} was left half written"
        (mount_point / "filler").unlink()
        ok(small.deploy())
        assert small.env_values()["POSTGRES_PASSWORD"] == small.secrets()["POSTGRES_PASSWORD"]
    finally:
        run(["umount", str(mount_point)])


# ---------------------------------------------------------------- no secret in any output

def test_zz_no_secret_value_appears_in_any_output_of_this_file():
    """Runs last (module order): every output above, at -vvv --debug --diff."""
    assert SECRETS_SEEN, "no secret was collected: the check would prove nothing"
    assert OUTPUTS
    for output in OUTPUTS:
        for value in SECRETS_SEEN:
            assert value not in output, "a secret value was printed"
        for encoded in SECRET_FILES_B64:
            assert encoded not in output, "a secret file was printed as the deploy reads it"
