"""
ComposeStatus runs the Compose plugin directly (facts/docker.py, COMPOSE_PLUGIN_SH): the one the
docker CLI would run for `docker compose`, or, when that cannot be told for sure, `docker compose`
itself. These run the lookup in sh with a made-up config directory.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from mnemos_provision.facts.docker import COMPOSE_PLUGIN_SH

pytestmark = pytest.mark.unit

SYSTEM_DIRS = ("/usr/local/lib/docker/cli-plugins", "/usr/local/libexec/docker/cli-plugins",
               "/usr/lib/docker/cli-plugins", "/usr/libexec/docker/cli-plugins")


def lookup(env: dict) -> str:
    result = subprocess.run(["sh", "-c", COMPOSE_PLUGIN_SH + '; printf %s "$c"'],
                            env={"PATH": os.environ["PATH"], **env}, capture_output=True,
                            text=True, check=True)
    return result.stdout


def plugin(directory: Path, mode: int = 0o755) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "docker-compose"
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)
    return path


def first_system_plugin() -> str:
    """What the lookup finds below the config directory on this machine ("" for none)."""
    for directory in SYSTEM_DIRS:
        path = Path(directory) / "docker-compose"
        if os.path.lexists(path):
            ok = path.is_file() and os.access(path, os.X_OK)
            return str(path) if ok else ""
    return ""


def test_the_config_directorys_plugin_comes_first(tmp_path):
    home = tmp_path / "home"
    found = plugin(home / ".docker/cli-plugins")
    assert lookup({"HOME": str(home)}) == str(found)
    # DOCKER_CONFIG replaces ~/.docker, as for the docker CLI
    config = tmp_path / "config"
    other = plugin(config / "cli-plugins")
    assert lookup({"HOME": str(home), "DOCKER_CONFIG": str(config)}) == str(other)


def test_without_one_there_the_system_directories_are_searched(tmp_path):
    assert lookup({"HOME": str(tmp_path)}) == first_system_plugin()


@pytest.mark.parametrize("case", ["extra plugin directories", "not executable", "a dangling link"])
def test_left_to_docker_compose_when_the_cli_could_run_another(tmp_path, case):
    home = tmp_path / "home"
    plugins = home / ".docker/cli-plugins"
    if case == "extra plugin directories":
        plugin(plugins)
        (home / ".docker/config.json").write_text('{"cliPluginsExtraDirs": ["/opt/plugins"]}')
    elif case == "not executable":
        plugin(plugins, mode=0o644)
    else:
        plugins.mkdir(parents=True)
        (plugins / "docker-compose").symlink_to(tmp_path / "gone")
    assert lookup({"HOME": str(home)}) == ""


def test_a_link_to_an_executable_is_run(tmp_path):
    home = tmp_path / "home"
    target = plugin(tmp_path / "elsewhere")
    plugins = home / ".docker/cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").symlink_to(target)
    assert lookup({"HOME": str(home)}) == str(plugins / "docker-compose")
    assert stat.S_ISLNK(os.lstat(plugins / "docker-compose").st_mode)


def test_on_this_machine_it_answers_as_docker_compose_does(tmp_path):
    """The contract ComposeStatus relies on: the plugin found here, run directly, gives the config
    hashes `docker compose` gives for the same project."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode:
        pytest.skip("no `docker compose` on this machine")
    env = {key: os.environ[key] for key in ("HOME", "DOCKER_CONFIG") if key in os.environ}
    found = lookup(env)
    assert found, "the lookup found no plugin where `docker compose` runs one"
    (tmp_path / "docker-compose.yml").write_text(
        "services:\n  db:\n    image: postgres:16\n    environment:\n      A: ${A}\n"
        "  cache:\n    image: redis:7\n    ports: ['127.0.0.1:6379:6379']\n")
    (tmp_path / ".env").write_text("A=1\n")

    def hashes(command: list[str]) -> str:
        return subprocess.run([*command, "config", "--hash", "*"], cwd=tmp_path,
                              capture_output=True, text=True, check=True).stdout

    assert hashes([found]) == hashes(["docker", "compose"]) != ""
