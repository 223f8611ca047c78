"""
The WSL way: a developer's own account with sudo runs the README's command on the machine itself.

A fresh Debian 12 machine (the converge tier's image) with what a WSL distribution brings (python3,
sudo, the user `dev` with sudo rights), this repository copied into `~dev/mnemos-provision`, then,
as `dev`: `scripts/bootstrap @local deploys/bootstrap.py` with the test settings of
`group_data/fleet.py` given as `--data` (no container registry here). scripts/bootstrap adds
`--sudo` for a non-root account; mnemos_user is left to its default (the account that ran sudo).
The run converges, the host suite passes, a second run changes nothing, and `dev` owns its tree,
its state and everything the deploy made in its home.
"""

from __future__ import annotations

import json
import os
import runpy
import shlex
import subprocess

import pytest

from tests import harness
from tests.conftest import need
from tests.fleet import PROBE_ANSWERS

pytestmark = pytest.mark.fleet

NAME = "mnemos-local-sudo"
REPO_COPY = "/home/dev/mnemos-provision"
WSL_DOCKERFILE = """FROM {base}
RUN apt-get update -q \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 sudo \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \\
 && echo 'dev ALL=(ALL:ALL) NOPASSWD: ALL' > /etc/sudoers.d/dev && chmod 440 /etc/sudoers.d/dev
"""
# The machine's HTTPS goes through this workplace's proxy: pip in the machine trusts the CA the
# controller trusts (a user's machine has its own).
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"


def settings_as_data() -> list[str]:
    data = {k: v for k, v in runpy.run_path(str(harness.REPO / "group_data/fleet.py")).items()
            if not k.startswith("__") and not hasattr(v, "__spec__") and not callable(v)}
    data["compose_plugin_binary"] = "/home/dev/docker-compose"
    data["image_archives"] = ["/home/dev/standins.tar"]
    data.pop("mnemos_user")  # the default: the account that ran sudo
    args = []
    for key, value in data.items():
        args += ["--data", f"{key}={json.dumps(value)}"]  # JSON: "20.10" stays a string
    return args


@pytest.fixture(scope="module")
def machine():
    need("docker")
    harness.ensure_host_image()
    dockerfile = WSL_DOCKERFILE.format(base=harness.HOST_IMAGE)
    image = "mnemos-test/wsl-like:" + harness.recipe_tag(harness.HOST_IMAGE, dockerfile)
    if not harness.image_exists(image):
        harness.sh(["docker", "build", "-q", "-t", image, "-"], input=dockerfile)
    host = harness.FreshHost(NAME)
    # an apt cache of its own: scripts/test runs this tier beside the converge tier's machines
    host.start(image=image, apt_cache=harness.own_apt_cache(NAME),
               extra=("-v", f"{HOST_CA}:/etc/ssl/certs/controller-ca.crt:ro"))
    try:
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"],
                               cwd=harness.REPO, capture_output=True, check=True).stdout
        tar = subprocess.run(["tar", "-c", "--null", "-T", "-"], cwd=harness.REPO, input=files,
                             capture_output=True, check=True).stdout
        host.exec(f"mkdir -p {REPO_COPY}")
        subprocess.run(["docker", "exec", "-i", NAME, "tar", "-x", "-C", REPO_COPY], input=tar,
                       check=True)
        harness.sh(["docker", "cp", harness.compose_binary(), f"{NAME}:/home/dev/docker-compose"])
        harness.sh(["docker", "cp", str(harness.ensure_standin_archive(("redis",))),
                    f"{NAME}:/home/dev/standins.tar"])
        host.exec("chown -R dev:dev /home/dev")
        yield host
    finally:
        if not os.environ.get("MNEMOS_KEEP_TEST_HOST"):
            host.remove()
            harness.remove_apt_cache(NAME)


def bootstrap(machine) -> harness.RunResult:
    command = (f"cd {REPO_COPY} && PIP_CERT=/etc/ssl/certs/controller-ca.crt "
               f"scripts/bootstrap @local deploys/bootstrap.py -y "
               + " ".join(shlex.quote(a) for a in settings_as_data()))
    result = machine.exec(command, check=False, user="dev")
    output = result.stdout + result.stderr
    return harness.RunResult(result.returncode, output, harness.parse_results(output))


@pytest.fixture(scope="module")
def first(machine):
    return bootstrap(machine)


def test_scripts_bootstrap_as_a_sudoer_converges_the_machine(machine, first):
    assert first.returncode == 0, first.output[-4000:]
    assert "operations run with sudo (--sudo)" in first.output
    assert "MNEMOS stack | Converge the compose stack (redis)" in first.changed, first.rows


def test_the_host_suite_passes(machine, first):
    suite = machine.host_suite("--mnemos-group=fleet")
    assert suite.returncode == 0, suite.stdout[-4000:]


def test_a_second_run_changes_nothing(machine, first):
    second = bootstrap(machine)
    harness.assert_no_change(second)


def test_the_account_owns_its_tree_state_and_home(machine, first):
    owners = machine.exec("stat -c '%U %a %n' /home/dev/mnemos /home/dev/mnemos/.env "
                          "/home/dev/.config /home/dev/.config/mnemos "
                          "/home/dev/.config/mnemos/secrets.json").stdout.splitlines()
    assert all(line.startswith("dev ") for line in owners), owners
    assert any(line.startswith("dev 600 ") and line.endswith("secrets.json") for line in owners)
    found = machine.exec("find /home/dev -xdev -user root", check=False).stdout
    owned = harness.unexpected_root_owned(found, "/home/dev/mnemos")
    assert owned == [], "owned by root in dev's home:\n" + "\n".join(owned)


def test_vault_and_minio_requests_travel_through_sudo_on_local(machine, first):
    """The transport of Vault's and MinIO's requests (mnemos_provision/host_http.py) as
    `scripts/bootstrap` runs it for a WSL user: @local, --sudo added for `dev`. A command's
    standard input arrives whole under sudo, as root, and a batch of two requests comes back as
    two answers in one command (tests/fleet/stdin_probe.py)."""
    result = machine.exec(f"cd {REPO_COPY} && PIP_CERT=/etc/ssl/certs/controller-ca.crt "
                          "scripts/bootstrap @local tests/fleet/stdin_probe.py -y",
                          check=False, user="dev")
    output = result.stdout + result.stderr
    assert f"PROBE @local {PROBE_ANSWERS}\n" in result.stdout, output[-3000:]
