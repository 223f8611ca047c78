"""
Docker Engine and Compose v2: from Docker Desktop (checked only), Docker's apt repository
(docker-ce), or the distribution (distro); optionally a given Compose v2 binary; daemon.json, the
user's docker group membership, DOCKER_BUILDKIT in the profile, and a running engine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyinfra.operations.server
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File

from mnemos_provision.context import HostContext
from mnemos_provision.fact_batch import later
from mnemos_provision.facts.docker import DockerAnswers
from mnemos_provision.operations import apt, docker, files, server
from mnemos_provision.operations.util import changes
from mnemos_provision.settings import Settings

KEYRING = "/etc/apt/keyrings/docker.asc"
SOURCE_LIST = "/etc/apt/sources.list.d/docker.list"
CLI_PLUGIN = "/usr/local/lib/docker/cli-plugins/docker-compose"


def resolve_source(ctx: HostContext) -> str:
    """What docker_source means on this host: auto picks desktop when detected, else docker-ce."""
    source = ctx.settings.docker_source
    if source == "auto":
        return "desktop" if ctx.snap.docker_desktop else "docker-ce"
    return source


def docker_ce_source_line(ctx: HostContext) -> str:
    s, snap = ctx.settings, ctx.snap
    return (f"deb [arch={snap.arch} signed-by={KEYRING}] {s.docker_apt_repo_url}/{snap.os_id} "
            f"{snap.os_codename} stable\n")


def daemon_config(settings: Settings) -> dict:
    """/etc/docker/daemon.json: docker_daemon_config, plus no-new-privileges for every container
    when docker_no_new_privileges is on."""
    config = dict(settings.docker_daemon_config)
    if settings.docker_no_new_privileges:
        config["no-new-privileges"] = True
    return config


@deploy("Docker Engine")
def docker_engine(ctx: HostContext):
    s = ctx.settings
    source = resolve_source(ctx)

    if source == "desktop":
        host.noop("Docker Desktop's WSL integration provides the engine and Compose "
                  "(versions checked by the preflight)")
    elif source == "docker-ce":
        apt.packages(name="Remove packages that conflict with docker-ce",
                     packages=s.docker_conflicting_packages, present=False)
        apt.packages(name="Install the keyring tools",
                     packages=["ca-certificates", "curl", "gnupg"])
        fingerprint = s.docker_apt_key_fingerprint.replace(" ", "")
        keyring = later(File, path=KEYRING)
        pyinfra.operations.server.shell(
            name="Install Docker's apt key (fingerprint verified)",
            commands=[
                f"install -m 0755 -d /etc/apt/keyrings && "
                f"curl -fsSL {s.docker_apt_repo_url}/{ctx.snap.os_id}/gpg -o {KEYRING}.new && "
                f"gpg --show-keys --with-colons {KEYRING}.new | grep -q '^fpr:*{fingerprint}:' && "
                f"chmod a+r {KEYRING}.new && mv {KEYRING}.new {KEYRING} || "
                f"{{ rm -f {KEYRING}.new; echo 'Docker apt key: download failed or fingerprint "
                f"is not {fingerprint} (docker_apt_key_fingerprint)' >&2; exit 1; }}",
            ],
            _if=lambda: not keyring(),
        )
        source_list = files.system_files(
            name="Add Docker's apt repository",
            files=[(SOURCE_LIST, docker_ce_source_line(ctx).encode(), "644")])
        apt.update(name="Refresh the apt cache for Docker's repository",
                   cache_time=s.apt_cache_valid_time, force=changes(source_list))
        apt.packages(name="Install docker-ce", packages=s.docker_ce_packages)
    else:  # distro; a given Compose plugin binary replaces the distribution's Compose package
        apt.packages(name="Install the distribution's Docker Engine",
                    packages=s.docker_distro_packages,
                    optional=[] if s.compose_plugin_binary else [s.docker_distro_compose_package])

    if source != "desktop":
        daemon = files.system_files(name="Write /etc/docker/daemon.json", files=[(
            "/etc/docker/daemon.json",
            (json.dumps(daemon_config(s), indent=2, sort_keys=True) + "\n").encode(), "644")])
        if s.compose_plugin_binary:
            files.system_files(name="Install the given Compose v2 CLI plugin",
                         files=[(CLI_PLUGIN, Path(s.compose_plugin_binary), "755")])
        pyinfra.operations.server.shell(
            name="Restart Docker Engine for the new daemon.json",
            commands=["systemctl restart docker" if ctx.snap.systemd else
                      "pkill -x dockerd; i=0; while pgrep -x dockerd >/dev/null && [ $i -lt 30 ]; "
                      "do sleep 1; i=$((i+1)); done; true"],
            _if=lambda: daemon.did_change() and host.get_fact(DockerAnswers),
        )
        docker.daemon(name="Start Docker Engine", systemd=ctx.snap.systemd,
                              timeout=s.docker_start_timeout)

    server.group_member(name=f"Add {ctx.user} to the docker group", user=ctx.user, group="docker")
    if s.docker_buildkit_profile:
        files.line(name="DOCKER_BUILDKIT=1 in the user's profile", path=f"{ctx.home}/.profile",
                     line="export DOCKER_BUILDKIT=1", user=ctx.user, group=ctx.group)
