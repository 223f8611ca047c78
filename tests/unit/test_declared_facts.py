"""
Batched facts are declared once: an operation reads its facts only through the declaration of
`batched_operation` (mnemos_provision/fact_batch.py), which is also what the run's batch reads at
plan time. A fact read any other way (host.get_fact in the body) would silently miss the batch.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from mnemos_provision import fact_batch
from mnemos_provision.facts.apt import AptState
from mnemos_provision.facts.docker import DockerAnswers
from mnemos_provision.operations import apt, compose, docker, files, server, upgrade
from mnemos_provision.render import TreeEntry

pytestmark = pytest.mark.unit

# What a host that has nothing yet answers, per fact class
EMPTY = {"TreeState": {}, "AptPackages": AptState(), "AptListsAge": None, "DockerAnswers": False,
         "ComposeStatus": {"wanted": None, "running": None}, "DockerImagesPresent": None,
         "ProcessRunning": False, "UserGroups": [], "LineInFile": "missing",
         "ServiceImages": None}

CALLS = [
    (files, "secret", dict(path="/home/dev/.config/mnemos/secrets.json", content=b"{}",
                           user="dev", group="dev")),
    (files, "tree", dict(root="/r", entries=[TreeEntry("a", "file", "644", b"x")], user="dev",
                         group="dev")),
    (files, "system_files", dict(files=[("/etc/docker/daemon.json", b"{}\n", "644"),
                                        ("/usr/local/bin/x", Path(__file__), "755")])),
    (files, "line", dict(path="/home/dev/.profile", line="export A=1", user="dev", group="dev")),
    (apt, "packages", dict(packages=["git", "trivy=0.58.1"], optional=["python3.11"])),
    (apt, "packages", dict(packages=["docker.io"], present=False)),
    (apt, "update", dict(cache_time=3600)),
    (docker, "daemon", dict(systemd=False, timeout=60)),
    (docker, "image_archives", dict(archives=["/tmp/images.tar"], images=["redis:7"])),
    (compose, "stack", dict(root="/r", project="mnemos", images={"redis": "redis:7"},
                            services=["redis"], timeout=300)),
    (upgrade, "postgres_major", dict(root="/r", project="mnemos", user="dev", group="dev",
                                     image="postgres:17.2-alpine", timeout=300)),
    (server, "cron_daemon", dict(systemd=True)),
    (server, "group_member", dict(user="dev", group="docker")),
]


class RecordingHost:
    def __init__(self, reads: list):
        self.reads, self.noops, self.name = reads, [], "fake"
        self.state = SimpleNamespace(config=SimpleNamespace(DIFF=False), is_executing=True)

    def get_fact(self, cls, **kwargs):
        self.reads.append((cls, kwargs))
        return EMPTY[cls.__name__]

    def noop(self, text):
        self.noops.append(text)


def run(module, name, kwargs, monkeypatch) -> tuple[list, list]:
    """(facts read through the declaration, facts read any other way) while `name` runs."""
    declared_reads: list = []
    other_reads: list = []
    monkeypatch.setattr(fact_batch, "host", RecordingHost(declared_reads))
    monkeypatch.setattr(module, "host", RecordingHost(other_reads))
    list(getattr(module, name)._inner(**kwargs))
    return declared_reads, other_reads


def test_every_batched_operation_is_exercised():
    batched = {f"{m.__name__}.{n}" for m in (files, apt, docker, compose, server, upgrade)
               for n, v in vars(m).items() if callable(getattr(v, "facts", None))}
    assert batched == {f"{m.__name__}.{n}" for m, n, _ in CALLS}


@pytest.mark.parametrize("module,name,kwargs", CALLS, ids=[f"{m.__name__.rsplit('.', 1)[-1]}.{n}"
                                                           for m, n, _ in CALLS])
def test_an_operation_reads_only_the_facts_it_declared(module, name, kwargs, monkeypatch):
    declared = list(getattr(module, name).facts(**kwargs).values())
    declared_reads, other_reads = run(module, name, kwargs, monkeypatch)
    assert other_reads == [], f"{name} reads facts it did not declare: {other_reads}"
    assert declared_reads, f"{name} declares facts it never reads"
    for read in declared_reads:
        assert read in declared


def test_a_name_not_declared_is_refused():
    facts = fact_batch.DeclaredFacts("docker.daemon", {"answers": (DockerAnswers, {})})
    with pytest.raises(KeyError, match="docker.daemon reads the fact 'running' it did not declare"):
        facts["running"]
