"""
The converged MNEMOS host beyond the design's checklist (test_checklist.py), as a user would
check it, whatever provisioned it: supported OS, packages, Docker Engine and Compose v2, the docker
group, daemon.json, BuildKit, the secret state private, each rendered file byte for byte what the
templates give for this host's settings and secrets (with its mode and owner), every published
port on bind_address, and the backup schedule.
"""

from __future__ import annotations

import json

import pytest

from mnemos_provision.settings import version_tuple

pytestmark = pytest.mark.host


def version(text: str):
    return version_tuple(text.strip().lstrip("v").split("-")[0].split("+")[0])


def test_supported_os(host, settings):
    info = host.system_info
    assert info.distribution in settings.supported_os, info.distribution
    assert info.release in settings.supported_os[info.distribution]


def test_design_packages_are_installed(host, settings):
    missing = [p for p in settings.apt_packages if not host.package(p).is_installed]
    assert not missing, f"not installed: {missing}"


def test_docker_engine_answers_with_compose_v2(host, settings):
    server = host.run("docker version --format '{{.Server.Version}}'")
    assert server.rc == 0, server.stderr
    assert version(server.stdout) >= version(settings.docker_min_version)
    compose = host.run("docker compose version --short")
    assert compose.rc == 0, compose.stderr
    assert version(compose.stdout) >= version(settings.compose_min_version)


def test_user_is_in_the_docker_group(host, account):
    assert "docker" in host.user(account["name"]).groups


def docker_desktop(host, settings) -> str | None:
    """Why the engine is Docker Desktop's (which the deploy leaves alone), or None. The deploy's
    own signals (roles/docker_engine.py, the host snapshot): docker_source = desktop, or auto with
    Desktop's engine (`docker version`'s platform) or its WSL integration (/mnt/wsl/docker-desktop)
    found."""
    if settings.docker_source == "desktop":
        return "docker_source = 'desktop'"
    if settings.docker_source != "auto":
        return None
    platform = host.run("docker version --format '{{.Server.Platform.Name}}'").stdout.strip()
    if "docker desktop" in platform.lower():
        return f"the engine is {platform}"
    if host.file("/mnt/wsl/docker-desktop").is_directory:
        return "Docker Desktop's WSL integration (/mnt/wsl/docker-desktop)"
    return None


def test_daemon_json_is_the_settings(host, settings):
    """docker_daemon_config (log rotation, icc, live-restore, userland-proxy), and
    no-new-privileges when docker_no_new_privileges is on. The deploy writes it wherever the
    engine is not Docker Desktop's: a missing file is a failure there."""
    desktop = docker_desktop(host, settings)
    if desktop:
        pytest.skip(f"{desktop}: Docker Desktop manages its own engine and daemon.json")
    daemon = host.file("/etc/docker/daemon.json")
    assert daemon.exists, (f"/etc/docker/daemon.json is missing (docker_source = "
                           f"{settings.docker_source!r}, not Docker Desktop: the deploy writes it)")
    expected = dict(settings.docker_daemon_config)
    if settings.docker_no_new_privileges:
        expected["no-new-privileges"] = True
    assert json.loads(daemon.content_string) == expected


def test_buildkit_is_enabled_in_the_profile(host, settings, account):
    if not settings.docker_buildkit_profile:
        pytest.skip("docker_buildkit_profile is false")
    assert host.file(f"{account['home']}/.profile").contains("^export DOCKER_BUILDKIT=1$")


def test_secret_state_file_is_private(host, paths, account):
    state = host.file(paths["secrets"])
    assert state.mode == 0o600 and state.user == account["name"]


def test_every_rendered_file_with_its_mode(host, paths, account, expected_tree):
    import hashlib
    for entry in (e for e in expected_tree if e.kind == "file"):
        f = host.file(f"{paths['root']}/{entry.path}")
        assert f.is_file, f"{entry.path} is missing"
        assert f.mode == int(entry.mode, 8), f"{entry.path} has mode {oct(f.mode)}"
        assert f.user == account["name"], f"{entry.path} is owned by {f.user}"
        assert f.sha256sum == hashlib.sha256(entry.content).hexdigest(), \
            f"{entry.path} differs from what the templates render"


def test_compose_file_binds_every_port_to_bind_address(host, settings, paths):
    result = host.run(f"cd {paths['root']} && docker compose config --format json")
    assert result.rc == 0, result.stderr
    model = json.loads(result.stdout)
    assert "version" not in model
    for name, service in model["services"].items():
        for port in service.get("ports", []):
            assert port["host_ip"] == settings.bind_address, \
                f"{name} publishes on {port['host_ip']}"


def test_backups_are_scheduled(host, settings, paths, account):
    cron = host.file("/etc/cron.d/mnemos-backup")
    if not settings.backup_enabled:
        assert not cron.exists
        return
    assert cron.exists and cron.mode == 0o644 and cron.user == "root"
    assert cron.contains(f"^{settings.backup_schedule.replace('*', '[*]')} {account['name']} "
                         f"/bin/sh {paths['root']}/scripts/backup/backup-all.sh")
    running = host.run("for c in /proc/[0-9]*/comm; do cat $c; done 2>/dev/null | grep -qx cron")
    assert running.rc == 0, "the cron daemon is not running: backups would never run"
