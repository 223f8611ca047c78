"""
Many hosts in one run, as staging and production are reached: four fresh Debian 12 machines
(the converge tier's image, each running its own Docker Engine), each with openssh-server, sudo and
a deploy account that logs in with a key. Three have passwordless sudo; one asks for a password,
given as that host's `_sudo_password` data (pyinfra 3.10 has no --sudo-password option). Each SSH
port is published on 127.0.0.1 only and reached there.

The tests run in order on the same machines:
1. the first run, with one machine broken (its sshd stopped): it fails naming that host and the
   cause, the other three converge in the same run; meanwhile an unprivileged account on every
   machine reads every file it can in the upload and staging locations;
2. the broken machine repaired, the next run converges it;
3. the host suite (tests/host over ssh://) passes on each; a further run changes nothing; every
   host has secrets of its own; nothing of the user's home belongs to root; the watcher saw no
   secret.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from tests import harness
from tests.conftest import need
from tests.fleet import PROBE_ANSWERS

pytestmark = pytest.mark.fleet

NAMES = ["fleet-1", "fleet-2", "fleet-3", "fleet-4"]
BROKEN = "fleet-4"  # sshd stopped during the first run
PASSWORD_HOST = "fleet-3"  # sudo asks for a password
SUDO_PASSWORD = "fleet-sudo-" + os.urandom(8).hex()
USER = "dev"
STATE = f"/home/{USER}/.config/mnemos/secrets.json"
# The watcher (account `watcher`) reads every file it can under these, all run long, keeping each
# file's text once per (inode, size, mtime).
WATCHED = "/tmp /var/tmp /home"
WATCHER = textwrap.dedent(f"""\
    cd /home/watcher || exit 1
    : > seen; : > keys
    while [ ! -e /tmp/watcher-stop ]; do
      find {WATCHED} -xdev -path /home/watcher -prune -o -type f -readable -print 2>/dev/null |
      while read -r f; do
        k=$(stat -c '%i-%s-%Y' "$f" 2>/dev/null) || continue
        grep -qx "$k" keys && continue
        echo "$k" >> keys
        cat "$f" >> seen 2>/dev/null
      done
    done
""")


def errors_of(output: str) -> str:
    """Each host's error lines with the two lines before them (what failed, and why)."""
    lines = output.splitlines()
    return "\n".join("\n".join(lines[max(0, i - 2):i + 1]) for i, line in enumerate(lines)
                     if "Error" in line or "error:" in line.lower())[-6000:]


class Fleet:
    def __init__(self, work: Path, names: list[str] = NAMES, unreachable: str | None = BROKEN):
        self.work = work
        self.key = work / "id_ed25519"
        self.inventory = work / "fleet.py"  # group `fleet`: its name gives group_data/fleet.py
        self.machines = {name: harness.FreshHost(name) for name in names}
        self.unreachable = unreachable
        self.runs: list[str] = []

    def start(self) -> None:
        image = harness.ssh_host_image()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)],
                       check=True)
        pub = (self.work / "id_ed25519.pub").read_text().strip()
        for name, machine in self.machines.items():
            # an apt cache of its own (apt locks it), seeded with hard links to the shared one
            machine.start(image=image, apt_cache=harness.own_apt_cache(name),
                          extra=("-p", "127.0.0.1::22"))
            rule = ("deploy ALL=(ALL:ALL) ALL" if name == PASSWORD_HOST
                    else "deploy ALL=(ALL:ALL) NOPASSWD: ALL")
            for account in ("deploy", USER):  # dev: the host suite logs in as the user
                machine.exec(f"install -d -m 700 -o {account} -g {account} /home/{account}/.ssh && "
                             f"echo '{pub}' > /home/{account}/.ssh/authorized_keys && "
                             f"chown {account}: /home/{account}/.ssh/authorized_keys")
            machine.exec(f"echo '{rule}' > /etc/sudoers.d/deploy && chmod 440 /etc/sudoers.d/deploy"
                         f" && echo 'deploy:{SUDO_PASSWORD}' | chpasswd")
            if name != self.unreachable:  # its sshd is started by the repair
                machine.exec("/usr/sbin/sshd")
        (self.work / "known_hosts").touch()
        # for testinfra's ssh:// (10.2.2 does not hand --ssh-extra-args to its backend)
        (self.work / "ssh_config").write_text(
            f"Host 127.0.0.1\n  IdentityFile {self.key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.work / 'known_hosts'}\n"
            "  StrictHostKeyChecking accept-new\n  LogLevel ERROR\n"
            # one connection per host for the whole suite (testinfra sets no ControlPath)
            f"  ControlMaster auto\n  ControlPath {self.work}/cm-%r@%h:%p\n  ControlPersist 120\n")
        self.write_inventory()

    def write_inventory(self, extra: dict | None = None, names: list[str] | None = None,
                        path: Path | None = None) -> Path:
        """The inventory of `names` (all by default) at `path` (a file named fleet.py)."""
        hosts = []
        for name, machine in self.machines.items():
            if names is not None and name not in names:
                continue
            hosts.append((name, {
                **(extra or {}).get(name, {}),
                "ssh_hostname": "127.0.0.1", "ssh_port": machine.published_port(22),
                "ssh_user": "deploy", "ssh_key": str(self.key),
                "ssh_known_hosts_file": str(self.work / "known_hosts"),
                # the host whose sudo asks for a password gets it as pyinfra's host data
                **({"_sudo_password": SUDO_PASSWORD} if name == PASSWORD_HOST else {}),
            }))
        body = ",\n".join(f"    {h!r}" for h in hosts)
        path = path or self.inventory
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            '"""Generated by tests/fleet: test machines, as in inventories/staging.py."""\n\n'
            f"fleet = [\n{body},\n]\n")
        return path

    def env(self) -> dict:
        return dict(os.environ, MNEMOS_TEST_COMPOSE_BINARY=harness.compose_binary(),
                    MNEMOS_TEST_IMAGE_ARCHIVES=str(self.archive))

    def deploy_args(self, inventory: Path | None = None, *flags: str) -> list[str]:
        pyinfra = harness.REPO / ".venv/bin/pyinfra"
        return [str(pyinfra) if pyinfra.exists() else "pyinfra", str(inventory or self.inventory),
                "deploys/bootstrap.py", "-y", "--sudo", *flags]

    def deploy(self, *flags: str) -> harness.RunResult:
        result = subprocess.run(self.deploy_args(None, *flags), cwd=harness.REPO, env=self.env(),
                                capture_output=True, text=True, timeout=2400)
        output = result.stdout + result.stderr
        self.runs.append(output)
        return harness.RunResult(result.returncode, output, harness.parse_results(output))

    def host_suite(self, name: str) -> subprocess.CompletedProcess:
        port = self.machines[name].published_port(22)
        python = harness.REPO / ".venv/bin/python"
        return subprocess.run(
            [str(python) if python.exists() else "python3", "-m", "pytest", "tests/host", "-q",
             "-p", "no:cacheprovider", f"--hosts=ssh://{USER}@127.0.0.1:{port}",
             f"--ssh-config={self.work / 'ssh_config'}", "--mnemos-group=fleet"],
            cwd=harness.REPO, capture_output=True, text=True, timeout=600,
            env=dict(os.environ, MNEMOS_TEST_COMPOSE_BINARY=harness.compose_binary()))

    def secrets(self, name: str) -> dict:
        return json.loads(self.machines[name].exec(f"cat {STATE}").stdout)

    def remove(self) -> None:
        for name, machine in self.machines.items():
            machine.remove()
            harness.remove_apt_cache(name)


@pytest.fixture(scope="module")
def fleet():
    need("docker")
    need("ssh-keygen")
    work = Path(tempfile.mkdtemp(prefix="mnemos-fleet-"))
    fleet = Fleet(work)
    fleet.archive = harness.ensure_standin_archive(("redis",))
    try:
        fleet.start()
        yield fleet
    finally:
        if not os.environ.get("MNEMOS_KEEP_TEST_HOST"):
            fleet.remove()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def first_runs(fleet):
    """Run 1 with BROKEN's sshd stopped, then run 2 after starting it; watchers throughout."""
    for machine in fleet.machines.values():
        machine.exec("rm -f /tmp/watcher-stop")
        subprocess.run(["docker", "exec", "-d", "-u", "watcher", machine.name, "sh", "-c", WATCHER],
                       check=True)
    first = fleet.deploy()
    fleet.machines[BROKEN].exec("/usr/sbin/sshd")  # repaired
    second = fleet.deploy()
    for machine in fleet.machines.values():
        machine.exec("touch /tmp/watcher-stop")
    time.sleep(3)
    return first, second


def test_a_broken_host_fails_naming_itself_and_the_others_converge(fleet, first_runs):
    first, _ = first_runs
    assert first.returncode != 0, "the run succeeded although fleet-4 could not be reached"
    failed = [line for line in first.output.splitlines() if f"[{BROKEN}]" in line]
    assert failed and any(word in line.lower() for line in failed
                          for word in ("could not connect", "refused", "reset", "ssh error")), \
        first.output[-3000:]
    assert len(first.errors) == 0 or all(
        f"[{name}]" not in line for name in NAMES if name != BROKEN
        for line in first.output.splitlines() if "Error" in line), errors_of(first.output)
    for name in NAMES:
        if name != BROKEN:
            converged = fleet.machines[name].exec(f"test -f /home/{USER}/mnemos/.env", check=False)
            assert converged.returncode == 0, f"{name} did not converge"
    assert "MNEMOS stack | Converge the compose stack (redis)" in first.changed, first.rows


def test_the_next_run_converges_the_repaired_host(fleet, first_runs):
    _, second = first_runs
    assert second.returncode == 0, second.output[-4000:]
    assert fleet.machines[BROKEN].exec(f"test -f {STATE}", check=False).returncode == 0


def test_the_host_suite_passes_over_ssh_on_every_host(fleet, first_runs):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(len(NAMES)) as pool:  # the hosts in parallel, as pyinfra runs them
        suites = dict(zip(NAMES, pool.map(fleet.host_suite, NAMES)))
    for name, suite in suites.items():
        assert suite.returncode == 0, f"{name}:\n" + suite.stdout[-4000:] + suite.stderr[-2000:]
        # the design's checklist over SSH: the service that runs on these hosts does its job
        assert "[x] Redis container running and responding to PING\n" in suite.stdout, \
            suite.stdout[-4000:]


def test_a_commands_input_reaches_it_over_ssh_and_sudo_on_every_host(fleet, first_runs):
    """The transport of Vault's and MinIO's requests (mnemos_provision/host_http.py): a command's
    standard input through SSH and sudo (fleet-3's asks for a password), under root, and a batch
    of requests answered one by one in one command (tests/fleet/stdin_probe.py)."""
    args = fleet.deploy_args()
    args[2] = "tests/fleet/stdin_probe.py"
    result = subprocess.run(args, cwd=harness.REPO, env=fleet.env(), capture_output=True,
                            text=True, timeout=600)
    for name in NAMES:
        assert f"PROBE {name} {PROBE_ANSWERS}\n" in result.stdout, result.stdout[-3000:]


def test_a_further_run_changes_nothing_on_any_host(fleet, first_runs):
    third = fleet.deploy()
    harness.assert_no_change(third)


def test_every_host_has_secrets_of_its_own(fleet, first_runs):
    values = [fleet.secrets(name) for name in NAMES]
    for key in values[0]:
        assert len({v[key] for v in values}) == len(NAMES), f"two hosts share {key}"


def test_nothing_in_the_users_home_belongs_to_root(fleet, first_runs):
    for name, machine in fleet.machines.items():
        found = machine.exec(f"find /home/{USER} -xdev -user root", check=False).stdout
        owned = harness.unexpected_root_owned(found, f"/home/{USER}/mnemos")
        assert owned == [], f"{name}: owned by root under /home/{USER}:\n" + "\n".join(owned)


def test_the_watcher_never_read_a_secret_and_no_run_printed_one(fleet, first_runs):
    for name, machine in fleet.machines.items():
        seen = subprocess.run(["docker", "exec", name, "cat", "/home/watcher/seen"],
                              capture_output=True).stdout  # bytes: it read binary files too
        keys = machine.exec("wc -l < /home/watcher/keys", check=False).stdout.strip()
        assert int(keys or 0) > 0, f"{name}: the watcher read nothing (it would prove nothing)"
        for key, value in fleet.secrets(name).items():
            assert value.encode() not in seen, f"{name}: another account read {key}"
            for output in fleet.runs:
                assert value not in output, f"{name}: {key} was printed by pyinfra"
        assert SUDO_PASSWORD not in "".join(fleet.runs), "the sudo password was printed"


def test_a_host_stopped_by_its_settings_is_left_out_and_the_others_go_on(fleet, first_runs):
    """A problem found before any change (here a setting) stops that host only."""
    fleet.write_inventory({"fleet-2": {"mnemos_root": "/etc"}})
    try:
        run = fleet.deploy()
    finally:
        fleet.write_inventory()
    assert run.returncode != 0, run.output[-3000:]
    assert "[fleet-2] 1 problem(s) in the settings; nothing on the host was changed" in run.output
    assert "mnemos_root = '/etc'" in run.output
    assert run.rows and run.changed == [] and run.errors == [], run.rows
    hosts = {row["success"] + row["error"] + row["no_change"] for row in run.rows.values()}
    assert hosts == {3}, f"the other three hosts did not all run: {run.rows}"
