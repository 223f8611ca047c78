"""The versions the upgrade guard reads from image tags (mnemos_provision/operations/upgrade.py);
the guard's decisions themselves are the compose.stack fixtures (tests/operations)."""

from __future__ import annotations

import os

import pytest

from mnemos_provision.operations.upgrade import pg_major, release_version, tag_of

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("image,tag", [
    ("postgres:16.11-alpine", "16.11-alpine"),
    ("registry.local:5000/postgres:17", "17"),
    ("registry.local:5000/postgres", ""),
    ("postgres:16@sha256:" + "a" * 64, "16"),
])
def test_tag_of(image, tag):
    assert tag_of(image) == tag


@pytest.mark.parametrize("image,major", [
    ("postgres:16.11-alpine", "16"), ("postgres:17-alpine", "17"), ("postgres:17", "17"),
    ("postgres:9.6", "9"), ("mnemos-standin/postgres:15-next", "15"),
    ("mnemos-standin/postgres:debian12", None), ("postgres:latest", None),
    ("postgres:alpine3.20", None), ("registry.local:5000/postgres", None),
])
def test_pg_major(image, major):
    assert pg_major(image) == major


def test_release_versions_compare_as_upstream_orders_them():
    assert release_version("hashicorp/vault:1.20.4") < release_version("hashicorp/vault:1.21.0")
    assert release_version("hashicorp/vault:1.9.0") < release_version("hashicorp/vault:1.10.0")
    older = release_version("quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z")
    newer = release_version("quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z")
    assert older is not None and newer is not None and older < newer
    assert release_version("hashicorp/vault:latest") is None


# ------------------------------------------------- the recreate script, against a stand-in docker

FAKE_DOCKER = r"""#!/bin/sh
# Stand-in for the docker CLI (tests only): records each call, answers as a host would where the
# new image never becomes healthy; the rollback (the -f override) succeeds unless ROLLBACK=fail;
# `compose -f FILE config` prints the configuration it would keep.
printf '%s\n' "$*" >> "$CALLS"
case "$*" in
  "compose -f "*" config") printf 'name: mnemos\nservices:\n  redis:\n    image: r\n' ;;
  "compose -f "*" -f "*) cat "$5" > "$OVERRIDE"; [ "$ROLLBACK" != fail ] ;;
  "compose up "*) [ "$NEW" = healthy ] ;;
  "compose ps -a -q redis") echo c0ffee ;;
  "compose logs "*) echo "redis log line" ;;
  "inspect "*) echo "unhealthy: ping failed" ;;
  *) exit 0 ;;
esac
"""


def fake_docker(tmp_path, **env: str) -> dict[str, str]:
    import os
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "CALLS": str(tmp_path / "calls"), "OVERRIDE": str(tmp_path / "override.yml"), **env}


def run_recreate(tmp_path, new: str, rollback: str = "ok", saved: str | None = None):
    import subprocess

    from mnemos_provision.operations.upgrade import recreate_script
    stage = tmp_path / "stage"
    script = recreate_script("redis", "redis:7.4.7-alpine",
                             {"image": "redis:7.4.6-alpine", "id": "sha256:" + "b" * 64}, 90,
                             str(stage), saved or str(tmp_path / "none" / "docker-compose.yml"))
    env = fake_docker(tmp_path, NEW=new, ROLLBACK=rollback)
    result = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    calls = (tmp_path / "calls").read_text().splitlines()
    return result, calls, stage


def kept_config(tmp_path, mode: int = 0o700) -> str:
    """A configuration kept by a healthy converge, in a directory of the running account."""
    directory = tmp_path / "kept"
    directory.mkdir()
    directory.chmod(mode)
    saved = directory / "docker-compose.yml"
    saved.write_text("name: mnemos\nservices:\n  redis:\n    image: redis:7.4.6-alpine\n")
    return str(saved)


def test_a_healthy_new_image_is_recreated_alone_and_nothing_rolled_back(tmp_path):
    result, calls, stage = run_recreate(tmp_path, new="healthy")
    assert result.returncode == 0, result.stderr
    assert calls == ["compose up -d --no-deps --wait --wait-timeout 90 redis"]
    assert not stage.exists()


def test_an_unhealthy_new_image_is_rolled_back_to_the_image_id_it_ran(tmp_path):
    result, calls, stage = run_recreate(tmp_path, new="unhealthy")
    assert result.returncode == 1
    assert calls[0] == "compose up -d --no-deps --wait --wait-timeout 90 redis"
    # no configuration of a healthy converge was kept: this run's, with the image it ran
    assert calls[-1].startswith("compose -f docker-compose.yml -f ")
    assert calls[-1].endswith(" up -d --no-deps --wait --wait-timeout 90 redis")
    assert (tmp_path / "override.yml").read_text() == (
        "services:\n  redis:\n    image: sha256:" + "b" * 64 + "\n")
    assert not any(" -v" in c or "down" in c or "volume" in c for c in calls), calls
    assert not stage.exists(), "root's stage directory is left behind"
    assert result.stderr.splitlines() == [
        "mnemos: redis: the new image redis:7.4.7-alpine did not become healthy within 90 s; "
        "it was rolled back to the image it ran before, redis:7.4.6-alpine "
        "(sha256:bbbbbbbbbbbb), with this run's configuration (no configuration of a healthy "
        "converge was kept), and is healthy again. Its volumes were not touched. Set "
        'images["redis"] to an image that starts, or back to the one it ran. Health output of '
        "the new container:",
        "unhealthy: ping failed",
        "--- redis (redis:7.4.7-alpine): last log lines",
        "redis log line",
    ]


def test_the_rollback_puts_back_the_configuration_of_the_last_healthy_converge(tmp_path):
    saved = kept_config(tmp_path)
    result, calls, stage = run_recreate(tmp_path, new="unhealthy", saved=saved)
    assert result.returncode == 1
    assert calls[-1] == (f"compose -f {saved} -f {stage}/rollback.yml up -d --no-deps --wait "
                         "--wait-timeout 90 redis")
    assert (tmp_path / "override.yml").read_text() == (
        "services:\n  redis:\n    image: sha256:" + "b" * 64 + "\n")
    assert ("it was rolled back to the image it ran before, redis:7.4.6-alpine "
            "(sha256:bbbbbbbbbbbb), and to its configuration of the last healthy converge "
            f"({saved}), and is healthy again") in result.stderr


@pytest.mark.parametrize("spoil", ["writable by others", "a symlink", "without the service"])
def test_a_kept_configuration_root_cannot_trust_is_not_used(tmp_path, spoil):
    import os
    saved = kept_config(tmp_path, 0o777 if spoil == "writable by others" else 0o700)
    if spoil == "a symlink":
        os.rename(saved, saved + ".real")
        os.symlink(saved + ".real", saved)
    if spoil == "without the service":
        with open(saved, "w") as f:
            f.write("name: mnemos\nservices:\n  postgres:\n    image: p\n")
    result, calls, _ = run_recreate(tmp_path, new="unhealthy", saved=saved)
    assert calls[-1].startswith("compose -f docker-compose.yml -f "), calls
    assert "with this run's configuration" in result.stderr


def run_keep(tmp_path, saved: str):
    import subprocess

    from mnemos_provision.operations.upgrade import keep_last_good
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    return subprocess.run(["sh", "-c", keep_last_good(saved)], cwd=root, env=fake_docker(tmp_path),
                          capture_output=True, text=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only a run as root keeps the configuration")
def test_a_healthy_converge_keeps_its_configuration_0600_in_a_0700_directory(tmp_path):
    saved = tmp_path / "lib" / "compose" / "mnemos" / "docker-compose.yml"
    result = run_keep(tmp_path, str(saved))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert (tmp_path / "calls").read_text() == \
        f"compose -f {tmp_path}/root/docker-compose.yml config\n"
    assert saved.read_text() == "name: mnemos\nservices:\n  redis:\n    image: r\n"
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    assert oct(saved.parent.stat().st_mode & 0o777) == "0o700"
    assert [p.name for p in saved.parent.iterdir()] == ["docker-compose.yml"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only a run as root keeps the configuration")
def test_no_configuration_is_kept_in_a_directory_another_account_can_write(tmp_path):
    directory = tmp_path / "kept"
    directory.mkdir()
    directory.chmod(0o777)
    result = run_keep(tmp_path, str(directory / "docker-compose.yml"))
    assert result.returncode == 0
    assert "could not be kept" in result.stderr and "put back the image only" in result.stderr
    assert list(directory.iterdir()) == []


def test_a_rollback_that_fails_too_says_so(tmp_path):
    result, _, stage = run_recreate(tmp_path, new="unhealthy", rollback="fail")
    assert result.returncode == 1
    assert ("the rollback to redis:7.4.6-alpine (sha256:bbbbbbbbbbbb) did NOT become healthy "
            "either") in result.stderr
    assert "and is healthy again" not in result.stderr
    assert not stage.exists()


def test_the_row_counts_of_the_upgrade_count_every_table_exactly(tmp_path):
    """COUNT_SQL and DATABASES_SQL of deploys/upgrade_postgres.py against a real PostgreSQL
    (Debian's, on the host): every table of every database, other schemas and quoted names
    included, counted exactly; the templates left out."""
    import os
    import pwd
    import shutil
    import socket
    import subprocess
    import tempfile
    import time
    from pathlib import Path

    from mnemos_provision.operations.upgrade import COUNT_SQL, DATABASES_SQL
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    assert versions, "PostgreSQL server is not installed (scripts/test installs it)"
    pgbin = versions[-1].parent
    base = Path(tempfile.mkdtemp(prefix="mnemos-upgrade-pg-", dir="/tmp"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if os.geteuid() == 0:
        os.chown(base, pwd.getpwnam("postgres").pw_uid, -1)
    data, sock = base / "data", base / "sock"
    try:
        subprocess.run(as_postgres + [str(pgbin / "initdb"), "-D", str(data), "-U", "mnemos",
                                      "--auth-local=trust"], check=True, capture_output=True)
        subprocess.run(as_postgres + ["mkdir", str(sock)], check=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen(as_postgres + [
            str(pgbin / "postgres"), "-D", str(data), "-c", f"port={port}",
            "-c", "listen_addresses=", "-c", f"unix_socket_directories={sock}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def psql(db: str, sql: str) -> subprocess.CompletedProcess:
                return subprocess.run(["psql", "-XAt", "-h", str(sock), "-p", str(port), "-U",
                                       "mnemos", "-d", db, "-c", sql],
                                      capture_output=True, text=True)
            for _ in range(100):
                if psql("postgres", "select 1").returncode == 0:
                    break
                time.sleep(0.1)
            psql("postgres", "CREATE DATABASE mnemos_cortex")
            psql("postgres", "CREATE TABLE jobs (id int); "
                             "INSERT INTO jobs SELECT generate_series(1, 1234)")
            psql("mnemos_cortex", 'CREATE SCHEMA app; CREATE TABLE app."Odd Name" (x int); '
                                  'INSERT INTO app."Odd Name" VALUES (1), (2), (3); '
                                  "CREATE TABLE empty (x int)")
            dbs = psql("postgres", DATABASES_SQL).stdout.split()
            assert dbs == ["mnemos_cortex", "postgres"]
            counts = {db: psql(db, COUNT_SQL).stdout.splitlines() for db in dbs}
            assert counts == {"mnemos_cortex": ["app.Odd Name|3", "public.empty|0"],
                              "postgres": ["public.jobs|1234"]}
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        shutil.rmtree(base, ignore_errors=True)
