"""
HostSnapshot reads the engine's version, networks and the project's published ports from the Engine
API with one curl when the docker CLI would talk to the engine's default socket, and through the
CLI otherwise (facts/server.py, _engine_api_sh). These run the snapshot's real command on this
machine, whose engine (scripts/start-dockerd) answers on /var/run/docker.sock.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest

from mnemos_provision.facts.server import HostSnapshot

pytestmark = pytest.mark.unit

PROJECT = "mnemos-snapshot-test"


def snapshot(**env: str) -> tuple[dict, bool]:
    """The processed snapshot of this machine, and whether the Engine API answered it."""
    fact = HostSnapshot()
    command = fact.command(user="root", path="/", compose_project=PROJECT, compose_version=False)
    base = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    result = subprocess.run(["sh", "-c", command], env={**base, **env}, capture_output=True,
                            text=True, check=True)
    lines = result.stdout.splitlines()
    snap = asdict(fact.process(lines))
    snap["docker_networks"] = sorted(snap["docker_networks"])
    return snap, any(line.startswith("docker_api_") for line in lines)


def docker_part(snap: dict) -> dict:
    keys = ("docker_server_version", "docker_operating_system", "docker_networks",
            "project_ports")
    return {key: snap[key] for key in keys}


@pytest.fixture(scope="module")
def engine():
    if not Path("/var/run/docker.sock").is_socket() or subprocess.run(
            ["docker", "version"], capture_output=True).returncode:
        pytest.skip("no Docker engine on /var/run/docker.sock")
    snap, api = snapshot()
    assert api, "the Engine API was not read, though the CLI would use its default socket"
    assert snap["docker_server_version"] and snap["docker_networks"]
    return snap


def test_the_engine_api_and_the_cli_give_the_same_snapshot(engine):
    # DOCKER_CONTEXT=default: the CLI's own engine, read by the CLI
    cli, api = snapshot(DOCKER_CONTEXT="default")
    assert not api
    assert docker_part(cli) == docker_part(engine)


@pytest.mark.parametrize("env", [
    {"DOCKER_HOST": "unix:///var/run/docker.sock"},
    {"DOCKER_CONTEXT": "default"},
    {"DOCKER_CONFIG": "<a config with a current context>"},
], ids=["DOCKER_HOST", "DOCKER_CONTEXT", "currentContext"])
def test_the_cli_reads_when_it_may_not_use_the_default_socket(engine, env, tmp_path):
    if "DOCKER_CONFIG" in env:
        (tmp_path / "config.json").write_text(json.dumps({"currentContext": "default"}))
        env = {"DOCKER_CONFIG": str(tmp_path)}
    snap, api = snapshot(**env)
    assert not api
    assert docker_part(snap) == docker_part(engine)


def test_the_cli_reads_when_curl_gets_no_answer(engine, tmp_path):
    fake = tmp_path / "curl"
    fake.write_text("#!/bin/sh\nexit 7\n")  # curl's "failed to connect"
    fake.chmod(0o755)
    snap, api = snapshot(PATH=f"{tmp_path}:{os.environ['PATH']}")
    assert not api
    assert docker_part(snap) == docker_part(engine)
