"""
Root writes nothing through a link or a race in a directory another account can write
(docs/security.md). The attacker is real: a temporary account that owns the tree and the
state directory, racing the real `pyinfra @local deploys/tree.py` (run as root, mnemos_user = that
account) from its own process. Its weapon is a root-owned file; the assertion is that the file
keeps its owner, mode and content, whatever the deploy's outcome.

Root on this machine is needed (useradd, setpriv, a deploy as root): skipped otherwise, as the
other unit tests that need what the machine may lack (Docker, a tmpfs). The account and its
directory are removed at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run

pytestmark = pytest.mark.unit

PYINFRA = str(REPO / ".venv/bin/pyinfra") if (REPO / ".venv/bin/pyinfra").exists() else "pyinfra"
SYSTEM_PYTHON = "/usr/bin/python3"  # the attacker's interpreter: one every account can run

# The attacker, as the account: for `seconds`, every new name with ".mnemos-" in `directories`
# (a staged file of the deploy) is renamed away and a symlink to the root-owned target put in
# its place (to the target's directory for a staged directory); prints a line for each.
ATTACKER = r"""
import os, sys, time
target, seconds, *directories = sys.argv[1:]
end, taken = time.monotonic() + float(seconds), set()
while time.monotonic() < end:
    for d in directories:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            p = os.path.join(d, n)
            if ".mnemos-" in n and not n.endswith(".taken") and p not in taken:
                try:
                    is_dir = os.path.isdir(p)
                    os.rename(p, p + ".taken")
                    os.symlink(os.path.dirname(target) if is_dir else target, p)
                    taken.add(p)
                    print("took", p, flush=True)
                except OSError:
                    pass
"""


@pytest.fixture
def account():
    """A temporary account, its home 0755 under a 0755 directory of root, and a file of root's
    (0644) in that directory: what the attacker aims at."""
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("setpriv"):
        pytest.skip("needs root, useradd and setpriv on this machine")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"no {SYSTEM_PYTHON} for the attacker's process")
    base = Path(tempfile.mkdtemp(prefix="mnemos-race-", dir="/tmp"))
    base.chmod(0o755)
    name = "mnr" + secrets.token_hex(4)
    home = base / "home"
    created = run(["useradd", "-M", "-d", str(home), "-s", "/usr/sbin/nologin", "-U", name])
    if created.returncode:
        shutil.rmtree(base)
        pytest.skip(f"cannot create an account: {created.stderr.strip()}")
    try:
        home.mkdir(mode=0o755)
        shutil.chown(home, name, name)
        target = base / "root-owned.conf"
        target.write_text("root's own file\n")
        target.chmod(0o644)
        yield name, home, target
    finally:
        run(["userdel", name])
        shutil.rmtree(base, ignore_errors=True)


def deploy(name: str, home: Path) -> subprocess.CompletedProcess:
    return run([PYINFRA, "@local", "deploys/tree.py", "-y",
                "--data", f"mnemos_user={name}", "--data", f"mnemos_root={home}/mnemos",
                "--data", f"secrets_state_path={home}/state/secrets.json",
                "--data", f"compose_project=mnr{name[3:]}"], cwd=REPO)


def as_account(name: str, *argv: str) -> subprocess.Popen:
    return subprocess.Popen(["setpriv", f"--reuid={name}", f"--regid={name}", "--init-groups",
                             "--reset-env", *argv], stdout=subprocess.PIPE, text=True,
                            cwd="/")


def untouched(target: Path) -> None:
    assert os.path.lexists(target), f"the deploy moved root's file {target} away"
    st = target.lstat()
    assert stat.S_ISREG(st.st_mode), f"the deploy replaced root's file {target}"
    assert (st.st_uid, st.st_gid, oct(st.st_mode & 0o7777)) == (0, 0, "0o644"), \
        f"the deploy changed root's file: uid {st.st_uid}, gid {st.st_gid}, {oct(st.st_mode)}"
    assert target.read_text() == "root's own file\n", "the deploy wrote into root's file"


def test_staged_files_swapped_for_a_symlink_never_reach_a_file_of_root(account):
    """The account renames each staged file of the deploy the moment it appears and puts a
    symlink to root's file in its place, while the deploy rewrites drifted files of the tree."""
    name, home, target = account
    first = deploy(name, home)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    root = home / "mnemos"
    taken = 0
    for attempt in range(3):
        for drifted in ("docker-compose.yml", "Makefile"):
            path = root / drifted
            if path.is_symlink() or not path.exists():
                path.unlink(missing_ok=True)
            else:
                subprocess.run(["setpriv", f"--reuid={name}", f"--regid={name}", "--init-groups",
                                "sh", "-c", f'echo "# drifted" >> "{path}"'], check=True)
        attacker = as_account(name, SYSTEM_PYTHON, "-c", ATTACKER, str(target), "20",
                              str(root), str(home / "state"))
        time.sleep(0.3)  # the attacker is watching before the deploy starts
        deploy(name, home)  # may fail when it notices: what matters is root's file
        attacker.kill()
        out, _ = attacker.communicate()
        untouched(target)
        taken += out.count("took ")
        if taken:
            break
    assert taken, "the attacker never caught a staged file: the test proved nothing"
    untouched(target)


def test_a_symlink_planted_at_the_state_lock_never_reaches_a_file_of_root(account):
    """The account plants `<state>.lock` as a symlink to root's file, then makes the deploy
    write the state again (the state file removed: it is recovered from .env)."""
    name, home, target = account
    first = deploy(name, home)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    state = home / "state" / "secrets.json"
    lock = Path(f"{state}.lock")
    lock.unlink(missing_ok=True)
    state.unlink()
    planted = subprocess.run(["setpriv", f"--reuid={name}", f"--regid={name}", "--init-groups",
                              "ln", "-s", str(target), str(lock)], capture_output=True, text=True)
    assert planted.returncode == 0, planted.stderr
    deploy(name, home)  # refused or not: root's file must be as it was
    untouched(target)
    # the tree never holds a path of root's: everything in it is the account's
    owners = {p.lstat().st_uid for p in [home, *home.rglob("*")]}
    assert owners == {int(run(["id", "-u", name]).stdout)}, f"owners in the home: {owners}"


def test_the_vault_keys_file_written_for_the_account_never_reaches_a_file_of_root(account):
    """HostKeyStore.save as root (the keys file of the account, in its state directory) while
    the account swaps every staged name for a symlink to root's file (a staged directory for a
    symlink to the directory of root's file, named like the keys file)."""
    from mnemos_provision.host_http import LocalRunner
    from mnemos_provision.operations.vault import HostKeyStore
    name, home, _ = account
    target = home.parent / "vault-keys.json"  # in root's directory: what a staged directory
    target.write_text("root's own file\n")   # turned into a symlink to it would lead to
    target.chmod(0o644)
    keys = home / "state" / "vault-keys.json"
    store = HostKeyStore(str(keys), name, name, runner=LocalRunner())
    store.save({"keys_base64": ["a2V5"], "root_token": "hvs.first"})  # the folder, as the account
    attacker = as_account(name, SYSTEM_PYTHON, "-c", ATTACKER, str(target), "20",
                          str(keys.parent))
    time.sleep(0.3)
    try:
        for attempt in range(20):
            try:
                store.save({"keys_base64": ["a2V5"], "root_token": f"hvs.{attempt}"})
            except Exception:  # refused when it notices: what matters is root's file
                pass
            untouched(target)
    finally:
        attacker.kill()
    out, _ = attacker.communicate()
    assert "took " in out, "the attacker never caught a staged name: the test proved nothing"
    untouched(target)


@pytest.mark.parametrize("setting, directory, key_name, uid", [
    ("vault_tls", "config/vault/tls", "vault.key", 100),
    # Traefik's key is made the same way, for the uid Traefik runs as (TRAEFIK_UID)
    ("traefik_tls", "config/traefik/certs", "mnemos.key", 65532),
])
def test_tls_directory_swapped_for_a_symlink_never_reaches_a_directory_of_root(
        account, setting, directory, key_name, uid):
    """The account plants the TLS directory (config/vault/tls, config/traefik/certs) as a symlink
    to a directory of root (the one holding root's file); the deploy with vault_tls (traefik_tls)
    makes the key: nothing lands in root's directory, which keeps its owner and mode, and the key
    is the container's uid's (the image's vault uid, Traefik's), 0400."""
    name, home, target = account
    first = deploy(name, home)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    tls = home / "mnemos" / directory
    planted = subprocess.run(["setpriv", f"--reuid={name}", f"--regid={name}", "--init-groups",
                              "ln", "-s", str(target.parent), str(tls)],
                             capture_output=True, text=True)
    assert planted.returncode == 0, planted.stderr
    before = sorted(p.name for p in target.parent.iterdir())
    second = run([PYINFRA, "@local", "deploys/tree.py", "-y",
                  "--data", f"mnemos_user={name}", "--data", f"mnemos_root={home}/mnemos",
                  "--data", f"secrets_state_path={home}/state/secrets.json",
                  "--data", f"compose_project=mnr{name[3:]}", "--data", f"{setting}=true"],
                 cwd=REPO)
    st = target.parent.stat()
    assert (st.st_uid, oct(st.st_mode & 0o777)) == (0, "0o755"), "root's directory was changed"
    assert sorted(p.name for p in target.parent.iterdir()) == before, "written into root's dir"
    untouched(target)
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    key = (tls / key_name).lstat()
    assert not tls.is_symlink() and (key.st_uid, oct(key.st_mode & 0o777)) == (uid, "0o400")
