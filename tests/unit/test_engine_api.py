"""
The Docker facts on every run's path read the Engine API with curl when the docker CLI would talk
to the engine's default socket, and the CLI otherwise (facts/docker.py, engine_api): HostSnapshot,
ComposeStatus, DockerAnswers, DockerImagesPresent, ServiceImages. These run the facts' real
commands on this machine, whose engine (scripts/start-dockerd) answers on /var/run/docker.sock,
against containers of a made-up compose project, and compare each answer with the CLI's.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from dataclasses import asdict
from pathlib import Path

import pytest

from mnemos_provision.facts.docker import ComposeStatus, DockerAnswers, DockerImagesPresent
from mnemos_provision.facts.server import HostSnapshot
from mnemos_provision.facts.upgrade import PG_MOUNT, PG_VERSION_IN_VOLUME, ServiceImages

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


def run(fact, args: dict, **env: str) -> tuple[object, list[str]]:
    """The fact's answer on this machine, and the docker CLI calls its command made."""
    log = Path(f"/tmp/mnemos-engine-api-{uuid.uuid4().hex}")
    fake = log.with_suffix(".bin")
    fake.mkdir()
    real = shutil.which("docker")
    (fake / "docker").write_text(f'#!/bin/sh\necho "$1" >> {log}\nexec {real} "$@"\n')
    (fake / "docker").chmod(0o755)
    base = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    try:
        result = subprocess.run(["sh", "-c", fact.command(**args)], capture_output=True,
                                text=True, env={**base, **env, "PATH": f"{fake}:{base['PATH']}"})
        calls = log.read_text().split() if log.exists() else []
    finally:
        log.unlink(missing_ok=True)
        (fake / "docker").unlink()
        fake.rmdir()
    return fact.process(result.stdout.splitlines()), calls


@pytest.fixture(scope="module")
def project(engine):
    """Two containers (created, never started) of a made-up compose project, from an image made
    here (`docker import` of a tar holding only PostgreSQL's PG_VERSION): no registry needed."""
    name = f"mnemos-engine-api-{uuid.uuid4().hex[:8]}"
    image = f"mnemos-test/{name}:1"
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo(f"{PG_MOUNT}/{PG_VERSION_IN_VOLUME}".lstrip("/"))
        info.size = 3
        tar.addfile(info, io.BytesIO(b"15\n"))
    subprocess.run(["docker", "import", "-", image], input=data.getvalue(), check=True,
                   capture_output=True)
    containers = []
    try:
        for service in ("postgres", "redis"):
            containers.append(f"{name}-{service}")
            subprocess.run(["docker", "create", "--name", containers[-1],
                            "--label", f"com.docker.compose.project={name}",
                            "--label", f"com.docker.compose.service={service}",
                            "--label", f"com.docker.compose.config-hash={service}-hash",
                            "-e", "SECRET=never-read", image, "/none"],
                           check=True, capture_output=True)
        yield name, image
    finally:
        subprocess.run(["docker", "rm", "-f", *containers], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True)


def answers(fact, args: dict) -> tuple[object, list[str]]:
    """The fact's answer through the Engine API, checked against the CLI's; the API path's CLI
    calls."""
    api, api_calls = run(fact, args)
    cli, cli_calls = run(fact, args, DOCKER_CONTEXT="default")
    assert api == cli
    assert cli_calls, "the CLI path made no docker call: the comparison compared nothing"
    return api, api_calls


def test_compose_status_lists_the_projects_containers_as_the_cli_does(project, tmp_path):
    name, _ = project
    status, calls = answers(ComposeStatus(), {"root": str(tmp_path), "project": name})
    assert status["running"] == {
        "postgres": {"hash": "postgres-hash", "state": "created", "health": "none"},
        "redis": {"hash": "redis-hash", "state": "created", "health": "none"}}
    assert calls == []


def test_service_images_reads_pg_version_and_the_images_as_the_cli_does(project):
    name, image = project
    state, calls = answers(ServiceImages(), {"project": name, "pg_container": f"{name}-postgres",
                                             "pg_volume": f"{name}-none"})
    assert state["pg_version"] == "15"
    assert {s: c["image"] for s, c in state["containers"].items()} == {
        "postgres": image, "redis": image}
    assert calls == ["inspect"]  # Config.Image, without the rest of the config (its env)


def test_docker_answers_as_the_cli_does(engine):
    answer, calls = answers(DockerAnswers(), {})
    assert answer is True and calls == []


def test_images_present_as_the_cli_says(project):
    _, image = project
    present, calls = answers(DockerImagesPresent(), {"images": [image]})
    assert present == {image} and calls == []
    missing, _ = answers(DockerImagesPresent(), {"images": [image, f"{image}-missing"]})
    assert missing == {image}
