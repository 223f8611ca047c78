"""
The first run as a user lives it: the `provisioned` machine (tests/conftest.py) pulls its images
from a registry (Debian 12's docker-registry, CNCF distribution 2.8, on the machine's own
127.0.0.1: tests/harness.py), set by one setting, `image_registry`. The images are the stand-ins
(tests/standins, labelled as such), pushed under group_data/ci.py's names.

- the pulls run in parallel: the registry's own log shows the requests of different images
  overlapping in time;
- progress lines reach the controller while the pull runs (the output read as it streams);
- a second run pulls nothing and prints no pull line;
- a tag the registry does not have fails naming the image, the registry's answer and the setting.
"""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from tests.harness import REGISTRY_PORT

pytestmark = pytest.mark.converge

STACK = "MNEMOS stack | Converge the compose stack (postgres, redis, prometheus, traefik)"
COMPLETED = re.compile(r'^time="(?P<time>[^"]+)" level=\w+ msg="response completed.*'
                       r"http\.request\.method=GET http\.request\.remoteaddr=\S+ "
                       r"http\.request\.uri=/v2/(?P<repo>.+)/(?:manifests|blobs)/\S+ .*"
                       r"http\.response\.duration=(?P<duration>[0-9.]+)(?P<unit>ms|µs|s)\b")
UNIT = {"s": 1.0, "ms": 1e-3, "µs": 1e-6}


def request_spans(log: str) -> dict[str, tuple[float, float]]:
    """Per repository: (start of its first GET, end of its last GET), from the registry's
    'response completed' lines (the time is the end, the duration says when it began)."""
    spans: dict[str, tuple[float, float]] = {}
    for line in log.splitlines():
        m = COMPLETED.match(line)
        if not m:
            continue
        stamp = m["time"]
        whole, _, frac = stamp.rstrip("Z").partition(".")
        end = datetime.fromisoformat(whole).timestamp() + float("0." + (frac or "0"))
        start = end - float(m["duration"]) * UNIT[m["unit"]]
        first, last = spans.get(m["repo"], (start, end))
        spans[m["repo"]] = (min(first, start), max(last, end))
    return spans


def overlapping(spans: dict[str, tuple[float, float]]) -> list[tuple[str, str]]:
    names = sorted(spans)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
            if spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]]


def test_request_spans_read_the_registry_log():
    """The parser on distribution 2.8's own lines (copied from its log): one overlap found."""
    log = "\n".join(
        f'time="2026-12-06T05:37:5{end}Z" level=info msg="response completed" '
        f'go.version=go1.19.8 http.request.host="127.0.0.1:5055" http.request.id=x '
        f'http.request.method=GET http.request.remoteaddr="127.0.0.1:1" '
        f'http.request.uri=/v2/mnemos-standin/{repo}/blobs/sha256:ab '
        f"http.request.useragent=docker http.response.duration={duration} "
        f"http.response.status=200"
        for repo, end, duration in (("redis", "1.5", "1.2s"), ("postgres", "1.9", "500ms"),
                                    ("traefik", "4.0", "500µs")))
    spans = request_spans(log)
    assert set(spans) == {"mnemos-standin/redis", "mnemos-standin/postgres",
                          "mnemos-standin/traefik"}
    assert overlapping(spans) == [("mnemos-standin/postgres", "mnemos-standin/redis")]


def test_the_first_run_pulls_every_image_from_the_registry_in_parallel(provisioned):
    machine, first = provisioned
    assert first.returncode == 0, first.output[-4000:]
    assert STACK in first.changed
    images = machine.exec("docker image ls --format '{{.Repository}}:{{.Tag}}'").stdout.split()
    for name in ("postgres", "redis", "prometheus", "traefik"):
        assert f"127.0.0.1:{REGISTRY_PORT}/mnemos-standin/{name}:debian12" in images, images
    assert machine.registry is not None
    spans = request_spans(machine.registry.log_text())
    assert len(spans) == 4, spans
    # pulled one after the other, no two images' requests would overlap
    assert len(overlapping(spans)) >= 1, spans


def test_the_pull_progress_is_shown_while_it_runs(provisioned):
    machine, first = provisioned
    timed = first.timed
    started = [t for t, line in timed if "pulling 4 of 4 images in parallel" in line]
    finished = [t for t, line in timed if re.search(r"pulls done in \d+ s", line)]
    assert started and finished, "\n".join(line for _, line in timed)[-4000:]
    between = [(t, line) for t, line in timed if started[0] < t < finished[0]
               and re.search(r"pulled 127\.0\.0\.1:\d+/mnemos-standin/|pulling images: \d+ of 4 "
                             r"done", line)]
    assert between, "no progress line between the pull's start and its end"
    # they reached the controller as they happened, not in one block at the end
    assert finished[0] - started[0] >= 2, (started, finished)
    assert between[0][0] - started[0] >= 1, between
    # a person's lines, not a wall of layer IDs
    assert not any(re.search(r"[0-9a-f]{12}: (Pulling fs layer|Download complete)", line)
                   for _, line in timed)
    # apt and the engine's install said they were alive, with how long they took
    out = first.output
    assert re.search(r"apt-get install of \d+ packages \(.*docker\.io.*\): done in \d+ s", out), \
        out[-3000:]
    assert re.search(r"docker compose up --wait .*: done in \d+ s", out)


def test_a_second_run_pulls_nothing(provisioned):
    machine, _ = provisioned
    again = machine.deploy()
    assert again.returncode == 0, again.output[-4000:]
    assert STACK not in again.changed
    assert "pulling" not in again.output and "pulled" not in again.output
    assert "still running" not in again.output and "done in" not in again.output


def test_a_tag_the_registry_lacks_fails_naming_image_answer_and_setting(provisioned):
    machine, _ = provisioned
    missing = f"127.0.0.1:{REGISTRY_PORT}/mnemos-standin/redis:no-such-tag"
    try:
        failed = machine.deploy(
            "deploys/bootstrap.py", 'images={"redis": "mnemos-standin/redis:no-such-tag"}')
        assert failed.returncode != 0
        assert STACK in failed.errors, failed.rows
        out = failed.output
        assert f"image {missing} cannot be pulled; the registry answered:" in out, out[-3000:]
        assert "manifest unknown" in out  # the registry's own error (MANIFEST_UNKNOWN)
        assert 'set images["redis"] (or image_registry) in group_data' in out
        assert "pulling 1 of 4 images in parallel" in out
        # the stack kept running on the images it had
        assert "mnemos-redis" in machine.exec("docker ps --format '{{.Names}}'").stdout
    finally:
        restored = machine.deploy()
        assert restored.returncode == 0, restored.output[-4000:]
