"""
The converged MNEMOS host, as a user would check it, whatever provisioned it: packages, Docker
Engine and Compose v2, the docker group, the tree with its owners and modes, each rendered config
(byte for byte what the templates give for this host's settings and secrets), secrets kept out
of git, and, when the stack is launched, every enabled service healthy.
"""

from __future__ import annotations

import json

import pytest

from mnemos_provision import dotenv, render, secret_store
from mnemos_provision.settings import _version_tuple

pytestmark = pytest.mark.host


def version(text: str):
    return _version_tuple(text.strip().lstrip("v").split("-")[0].split("+")[0])


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


def test_daemon_json_has_the_log_rotation(host, settings):
    daemon = host.file("/etc/docker/daemon.json")
    if not daemon.exists:
        pytest.skip("no /etc/docker/daemon.json: Docker Desktop manages its own engine")
    assert json.loads(daemon.content_string) == settings.docker_daemon_config


def test_buildkit_is_enabled_in_the_profile(host, settings, account):
    if not settings.docker_buildkit_profile:
        pytest.skip("docker_buildkit_profile is false")
    assert host.file(f"{account['home']}/.profile").contains("^export DOCKER_BUILDKIT=1$")


@pytest.fixture(scope="module")
def secrets(host, paths):
    state = host.file(paths["secrets"])
    assert state.exists, f"{paths['secrets']} is missing"
    return secret_store.parse(state.content)


@pytest.fixture(scope="module")
def expected_tree(settings, account, secrets):
    return render.render_tree(settings, account["home"], secrets)


def test_secret_state_file_is_private(host, paths, account):
    state = host.file(paths["secrets"])
    assert state.mode == 0o600 and state.user == account["name"]


def test_every_directory_of_the_tree(host, paths, account, expected_tree):
    for entry in (e for e in expected_tree if e.kind == "directory"):
        d = host.file(f"{paths['root']}/{entry.path}")
        assert d.is_directory, f"{entry.path}/ is missing"
        assert d.user == account["name"], f"{entry.path}/ is owned by {d.user}"
    assert host.file(f"{paths['root']}/.git").is_directory, "the tree is not a git repository"


def test_every_rendered_file_with_its_mode(host, paths, account, expected_tree):
    import hashlib
    for entry in (e for e in expected_tree if e.kind == "file"):
        f = host.file(f"{paths['root']}/{entry.path}")
        assert f.is_file, f"{entry.path} is missing"
        assert f.mode == int(entry.mode, 8), f"{entry.path} has mode {oct(f.mode)}"
        assert f.user == account["name"], f"{entry.path} is owned by {f.user}"
        assert f.sha256sum == hashlib.sha256(entry.content).hexdigest(), \
            f"{entry.path} differs from what the templates render"


def test_env_is_private_and_complete(host, paths):
    env = host.file(f"{paths['root']}/.env")
    assert env.mode == 0o600
    values = dict(line.split("=", 1) for line in env.content_string.splitlines()
                  if line and not line.startswith("#"))
    assert list(values) == dotenv.NAMES
    for name in dotenv.SECRET_VARS:
        assert len(values[name]) >= 16, f"{name} is missing or short"


def test_compose_file_binds_every_port_to_bind_address(host, settings, paths):
    result = host.run(f"cd {paths['root']} && docker compose config --format json")
    assert result.rc == 0, result.stderr
    model = json.loads(result.stdout)
    assert "version" not in model
    for name, service in model["services"].items():
        for port in service.get("ports", []):
            assert port["host_ip"] == settings.bind_address, f"{name} publishes on {port['host_ip']}"


def test_no_secret_reaches_git(host, paths, secrets):
    root = paths["root"]
    git = f"git -c safe.directory='*' -C {root}"  # the suite may run as another user than the owner
    assert host.run(f"{git} check-ignore -q .env").rc == 0, ".env is not ignored by git"
    would_add = host.run(f"{git} add -A --dry-run")
    assert would_add.rc == 0, would_add.stderr
    assert "'.env'" not in would_add.stdout
    for value in secrets.values():
        found = host.run(f"{git} grep --cached -l -F -e {value} -- .")
        assert found.stdout.strip() == "", f"a secret is in the git index: {found.stdout}"


def test_every_enabled_service_is_healthy(host, settings, paths):
    if not settings.launch_stack:
        pytest.skip("launch_stack is false")
    for service in settings.enabled_services:
        state = host.run(f"cd {paths['root']} && docker compose ps --format "
                         f"'{{{{.State}}}} {{{{.Health}}}}' {service}")
        assert state.stdout.split()[:1] == ["running"], f"{service}: {state.stdout or state.stderr}"
        if service != "otel-collector":
            assert "healthy" in state.stdout.split(), f"{service}: {state.stdout}"
    check = host.run(f"cd {paths['root']} && sh scripts/health-check.sh")
    assert check.rc == 0, check.stdout


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
