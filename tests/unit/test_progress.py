"""
Commands that say they are alive (mnemos_provision/operations/progress.py), run for real:

- the pull script by a real sh, with a stand-in `docker` on PATH (a shell script that answers
  `image inspect` from a file and makes `pull` take seconds, writing `docker pull`'s own
  non-terminal lines): the pulls overlap, the progress lines arrive while they run, nothing is
  printed when nothing is missing, a failed pull names the image, the registry's answer and the
  setting;
- `alive` by a real sh: what it runs, a line while it runs, how long it took; the command's own
  output only when it failed;
- a ShownCommand in a real `pyinfra @local` run at default verbosity: its lines reach the
  controller as they are printed, not at the end, and a failure's lines are printed once.
(The real registry and engine: tests/converge/test_pulls.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mnemos_provision.operations import progress
from tests.conftest import REPO

pytestmark = pytest.mark.unit

FAKE_DOCKER = """#!/bin/sh
# a stand-in for docker: `image inspect` answers from $FAKE/present, `pull` takes 3 s and
# prints docker pull's non-terminal lines; an image named *missing* is refused as a registry does
case "$1 $2" in
"image inspect") grep -qxF "$3" "$FAKE/present" 2>/dev/null; exit $?;;
esac
[ "$1" = pull ] || exit 3
echo "start $2 $(date +%s.%N)" >>"$FAKE/events"
case "$2" in *missing*)
  echo "Error response from daemon: manifest for $2 not found: manifest unknown: \
manifest unknown" >&2
  exit 1;;
esac
echo "${2##*:}: Pulling from x"
echo "0a1b2c3d4e5f: Pulling fs layer"
echo "1a1b2c3d4e5f: Pulling fs layer"
sleep 1; echo "0a1b2c3d4e5f: Pull complete"; sleep 2; echo "1a1b2c3d4e5f: Pull complete"
echo "$2" >>"$FAKE/present"
echo "end $2 $(date +%s.%N)" >>"$FAKE/events"
"""


def run_timed(argv: list[str], env: dict, cwd: Path | None = None) -> tuple[int, list]:
    """(exit status, [(seconds since start, line)]) of stdout and stderr, read as they come."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    timed = [(time.monotonic() - start, line.rstrip("\n")) for line in proc.stdout]
    return proc.wait(), timed


@pytest.fixture
def fake(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    env = dict(os.environ, FAKE=str(tmp_path), PATH=f"{bin_dir}:{os.environ['PATH']}")
    return tmp_path, env


def pulls(fake_dir: Path, env: dict, images: dict[str, str], every: int = 1):
    script = fake_dir / "pull.sh"
    script.write_text(progress.pull_script(images, every=every))
    return run_timed(["sh", str(script)], env)


def events(fake_dir: Path) -> dict:
    found: dict = {}
    for line in (fake_dir / "events").read_text().splitlines():
        kind, image, when = line.split()
        found.setdefault(image, {})[kind] = float(when)
    return found


def test_missing_images_are_pulled_at_once_with_progress_while_they_arrive(fake):
    fake_dir, env = fake
    (fake_dir / "present").write_text("redis:7\n")
    rc, timed = pulls(fake_dir, env, {"redis": "redis:7", "postgres": "postgres:16",
                                      "traefik": "traefik:v3"})
    lines = [line for _, line in timed]
    assert rc == 0, lines
    seen = events(fake_dir)
    assert set(seen) == {"postgres:16", "traefik:v3"}  # the present one is not pulled
    # in parallel: each pull started before any ended (one after the other: 6 s, not 3)
    assert max(e["start"] for e in seen.values()) < min(e["end"] for e in seen.values())
    assert lines[0] == "pulling 2 of 3 images in parallel: postgres:16 traefik:v3"
    summaries = [t for t, line in timed if line.startswith("pulling images: 0 of 2 done, ")]
    assert summaries, lines
    assert any("1 of 4 layers" in line or "2 of 4 layers" in line for line in lines), lines
    # printed while the pulls ran: a summary at least a second before the last line
    assert timed[-1][0] - summaries[0] >= 1, timed
    assert {line.split(" (")[0] for line in lines if line.startswith("pulled ")} == \
        {"pulled postgres:16", "pulled traefik:v3"}
    assert lines[-1].startswith("pulls done in ")
    assert not any("Pulling fs layer" in line for line in lines)  # no wall of layer IDs


def test_nothing_is_printed_when_nothing_is_missing(fake):
    fake_dir, env = fake
    (fake_dir / "present").write_text("redis:7\npostgres:16\n")
    rc, timed = pulls(fake_dir, env, {"redis": "redis:7", "postgres": "postgres:16"})
    assert rc == 0 and timed == []
    assert not (fake_dir / "events").exists()


def test_a_failed_pull_names_the_image_the_registry_answer_and_the_setting(fake):
    fake_dir, env = fake
    rc, timed = pulls(fake_dir, env, {"redis": "redis:missing", "postgres": "postgres:16"})
    out = "\n".join(line for _, line in timed)
    assert rc == 1
    assert "image redis:missing cannot be pulled; the registry answered:\n    Error response " \
           "from daemon: manifest for redis:missing not found: manifest unknown" in out
    assert 'set images["redis"] (or image_registry) in group_data' in out
    # the other pull was not cut short
    assert "pulled postgres:16" in out and "postgres:16" in (fake_dir / "present").read_text()


def test_alive_says_what_runs_while_it_runs_and_how_long_it_took(tmp_path):
    label = "apt-get install of 1 packages (jq)"
    script = (f"{progress.alive_definition(1)}\n"
              f"{progress.alive(label, 'sh', '-c', 'echo noisy; sleep 3')}")
    rc, timed = run_timed(["sh", "-c", script], dict(os.environ))
    lines = [line for _, line in timed]
    assert rc == 0
    assert lines[0] == "apt-get install of 1 packages (jq) ..."
    assert any(line.startswith("apt-get install of 1 packages (jq): still running, ")
               for line in lines[1:-1]), lines
    assert lines[-1] in {f"apt-get install of 1 packages (jq): done in {s} s" for s in (3, 4)}
    assert "noisy" not in lines  # the command's own output only when it fails
    assert timed[-1][0] - timed[0][0] >= 2.5  # the first line came when it started

    failing = (f"{progress.alive_definition(1)}\n"
               f"{progress.alive('x', 'sh', '-c', 'echo why; exit 7')}")
    rc, timed = run_timed(["sh", "-c", failing], dict(os.environ))
    assert rc == 7
    assert [line for _, line in timed][-2:] == ["why", "x: failed after 0 s (exit status 7)"] or \
        [line for _, line in timed][-2:] == ["why", "x: failed after 1 s (exit status 7)"]


DEPLOY = """
from pyinfra.api import operation
from mnemos_provision.operations.progress import ShownCommand

@operation()
def shown(script):
    yield ShownCommand(script)

shown(name="streamed", script={script!r})
"""


@pytest.mark.parametrize("fails", [False, True])
def test_a_shown_command_streams_its_lines_at_default_verbosity(tmp_path, fails):
    script = "echo first-line; sleep 3; echo second-line" + ("; echo why-it-failed >&2; exit 1"
                                                            if fails else "")
    deploy = tmp_path / "deploy.py"
    deploy.write_text(textwrap.dedent(DEPLOY.format(script=script)))
    pyinfra = os.path.join(os.path.dirname(sys.executable), "pyinfra")
    rc, timed = run_timed([pyinfra, "@local", str(deploy), "-y"],
                          dict(os.environ, PYTHONPATH=str(REPO)), cwd=tmp_path)
    out = "\n".join(line for _, line in timed)
    assert (rc != 0) == fails, out
    first = [t for t, line in timed if line.endswith("first-line")]
    second = [t for t, line in timed if line.endswith("second-line")]
    assert len(first) == 1 and len(second) == 1, out
    assert second[0] - first[0] >= 2, "the first line came only with the second"
    assert "[@local] first-line" in out  # prefixed with the host, as pyinfra prints at -vvv
    assert out.count("why-it-failed") == (1 if fails else 0), out
