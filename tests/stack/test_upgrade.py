"""
Image upgrades on the real engine of the provisioned machine (docs/upgrading.md), with the
stand-in PostgreSQL (Debian 12's PostgreSQL 15) and Redis (Debian 12's Redis 7.0) of
tests/standins. The "new" images are stand-ins too, made inside the machine:

- `mnemos-standin/redis:upgrade-broken`: the Redis stand-in with `redis-cli` replaced by
  /bin/false, so the compose healthcheck (`redis-cli ping`) never passes: a bump that never
  becomes healthy;
- `mnemos-standin/redis:upgrade-good`: the Redis stand-in under another tag: a good bump;
- `mnemos-standin/postgres:16.11-notpresent`: a tag naming PostgreSQL 16 that is not on the
  machine (nothing can pull it): the guard must refuse before any pull;
- `mnemos-standin/postgres:15-next`: the PostgreSQL stand-in under a tag naming its own major.
  A second real major cannot be built here (Debian bookworm has only postgresql-15;
  bookworm-backports and apt.postgresql.org are not reachable), so the upgrade deploy's whole
  path (verified backup, new volume, pg_dumpall restore, per-table row counts, switch, old data
  kept) is tested on the same major under a new tag; the major guard is tested by tag.

Each test puts the machine back as it found it (the default images, converged, nothing kept),
so the other stack tests pass in any order.
"""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from mnemos_provision import stack
from tests import harness

pytestmark = pytest.mark.stack

ROOT = "/home/dev/mnemos"
REDIS = "mnemos-standin/redis:debian12"
POSTGRES = "mnemos-standin/postgres:debian12"
BOOTSTRAP = "deploys/bootstrap.py"
# the stand-in's Dockerfile, labelled as such: the healthcheck's redis-cli always fails
BROKEN_DOCKERFILE = (
    "# Stand-in (tests only): the Redis stand-in whose redis-cli always fails, so the compose\n"
    "# healthcheck never passes: an image bump that never becomes healthy.\n"
    f"FROM {REDIS}\n"
    "LABEL mnemos.standin=redis-upgrade-broken\n"
    "RUN ln -s /bin/false /usr/local/bin/redis-cli\n"
)


def images(**changed: str) -> str:
    return "images=" + json.dumps(changed)


def redis(machine, *args: str) -> str:
    return machine.exec("docker exec mnemos-redis sh -c "
                        f"'REDISCLI_AUTH=\"$REDIS_PASSWORD\" /usr/bin/redis-cli "
                        f"{' '.join(args)}'").stdout.strip()


def psql(machine, db: str, sql: str) -> str:
    return machine.exec(f"docker exec mnemos-postgres psql -U mnemos -d {db} -tAc \"{sql}\""
                        ).stdout.strip()


def started(machine) -> dict[str, str]:
    """Each container of the stack: its start time."""
    out = machine.exec("docker inspect -f '{{.Name}} {{.State.StartedAt}}' "
                       "$(docker ps -aq --filter label=com.docker.compose.project=mnemos)").stdout
    return dict(line.lstrip("/").split(" ", 1) for line in out.splitlines() if line.strip())


def inspect(machine, container: str, fmt: str) -> str:
    return machine.exec(f"docker inspect -f '{fmt}' {container}").stdout.strip()


def dry_run(machine, *data: str):
    """`--dry` as a user runs it (scripts/bootstrap --dry): without `-y`, so that pyinfra detects
    the changes (with -y it skips change detection: pyinfra's own rule)."""
    args = [a for a in machine.pyinfra_args(BOOTSTRAP, *data, flags=("--dry",)) if a != "-y"]
    return harness.sh(args, check=False, cwd=harness.REPO, env=machine.env(), timeout=900,
                      stdin=subprocess.DEVNULL)


def converged(machine) -> None:
    """The default images back, converged: every service healthy, then a run with no change."""
    run = machine.deploy()
    assert run.returncode == 0, run.output[-3000:]
    again = machine.deploy()
    harness.assert_no_change(again)
    assert machine.exec(f"cd {ROOT} && sh scripts/health-check.sh", check=False).returncode == 0


def test_a_bump_that_never_becomes_healthy_is_rolled_back(provisioned):
    """The bump also changes redis's configuration (its published port, 6379 -> 6390): the
    rollback puts back the image AND the configuration of the last healthy converge."""
    machine, first = provisioned
    assert first.returncode == 0, first.output[-3000:]
    machine.exec(f"printf '%s' {shlex.quote(BROKEN_DOCKERFILE)} | "
                 "docker build -q -t mnemos-standin/redis:upgrade-broken - >/dev/null")
    redis(machine, "SET", "upgrade:before", "kept")
    old_id = inspect(machine, "mnemos-redis", "{{.Image}}")
    ports = "{{json .HostConfig.PortBindings}}"
    old_ports = inspect(machine, "mnemos-redis", ports)
    assert '"HostPort":"6379"' in old_ports, old_ports
    # the configuration a rollback puts back: root's own, and 0600 (it holds the secrets)
    kept = "/var/lib/mnemos/compose/mnemos"
    assert machine.exec(f"stat -c '%U %a' {kept} {kept}/docker-compose.yml").stdout.split() \
        == ["root", "700", "root", "600"]
    before = started(machine)
    try:
        run = machine.deploy(BOOTSTRAP, images(redis="mnemos-standin/redis:upgrade-broken"),
                             "ports=" + json.dumps({**stack.default_ports(), "redis": 6390}),
                             "stack_wait_timeout=120")
        assert run.returncode != 0, "the broken image was accepted"
        message = run.output
        assert ("redis: the new image mnemos-standin/redis:upgrade-broken did not become "
                "healthy within 120 s; it was rolled back to the image it ran before, "
                f"{REDIS}") in message, message[-3000:]
        assert ("and to its configuration of the last healthy converge "
                "(/var/lib/mnemos/compose/mnemos/docker-compose.yml)") in message, message[-3000:]
        assert "Its volumes were not touched" in message
        assert "Health output of the new container:" in message
        assert "--- redis (mnemos-standin/redis:upgrade-broken): last log lines" in message
        # healthy again, on the very image it ran, with the data written before
        assert inspect(machine, "mnemos-redis", "{{.Image}}") == old_id
        assert inspect(machine, "mnemos-redis", ports) == old_ports, "the config was not restored"
        assert inspect(machine, "mnemos-redis", "{{.State.Health.Status}}") == "healthy"
        assert redis(machine, "GET", "upgrade:before") == "kept"
        after = started(machine)
        others = {name for name in before if name != "mnemos-redis"}
        assert {n: after[n] for n in others} == {n: before[n] for n in others}, \
            "a container other than redis was restarted"
    finally:
        converged(machine)
        redis(machine, "DEL", "upgrade:before")
        machine.exec("docker rmi mnemos-standin/redis:upgrade-broken >/dev/null", check=False)


def test_a_good_bump_is_recreated_alone(provisioned):
    machine, _ = provisioned
    machine.exec(f"docker tag {REDIS} mnemos-standin/redis:upgrade-good")
    redis(machine, "SET", "upgrade:good", "kept")
    before = started(machine)
    try:
        dry = dry_run(machine, images(redis="mnemos-standin/redis:upgrade-good"))
        assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
        assert (f"Will recreate redis alone: image {REDIS} -> mnemos-standin/redis:upgrade-good"
                in dry.stdout + dry.stderr), dry.stdout[-3000:] + dry.stderr[-3000:]
        assert started(machine) == before, "--dry changed a container"
        assert inspect(machine, "mnemos-redis", "{{.Config.Image}}") == REDIS

        run = machine.deploy(BOOTSTRAP, images(redis="mnemos-standin/redis:upgrade-good"))
        assert run.returncode == 0, run.output[-3000:]
        after = started(machine)
        assert inspect(machine, "mnemos-redis", "{{.Config.Image}}") == \
            "mnemos-standin/redis:upgrade-good"
        assert after["mnemos-redis"] != before["mnemos-redis"], "redis was not recreated"
        others = {name for name in before if name != "mnemos-redis"}
        assert {n: after[n] for n in others} == {n: before[n] for n in others}, \
            "a container other than redis was restarted"
        assert redis(machine, "GET", "upgrade:good") == "kept"
    finally:
        converged(machine)
        redis(machine, "DEL", "upgrade:good")
        machine.exec("docker rmi mnemos-standin/redis:upgrade-good >/dev/null", check=False)


def test_a_postgres_major_change_is_refused_before_any_change(provisioned):
    machine, _ = provisioned
    new = "mnemos-standin/postgres:16.11-notpresent"  # PostgreSQL 16 by its tag; not there
    before = started(machine)
    try:
        run = machine.deploy(BOOTSTRAP, images(postgres=new))
        assert run.returncode != 0, "a major change was accepted"
        assert ("postgres: the data in volume mnemos_postgres-data was written by PostgreSQL 15 "
                f'and images["postgres"] is {new} (PostgreSQL 16)') in run.output, \
            run.output[-3000:]
        assert "Nothing was pulled or stopped" in run.output
        assert "deploys/upgrade_postgres.py" in run.output
        assert "cannot be pulled" not in run.output, "a pull was tried"
        assert started(machine) == before, "a container was recreated or restarted"
        assert inspect(machine, "mnemos-postgres", "{{.Config.Image}}") == POSTGRES
    finally:
        converged(machine)


def test_the_postgres_upgrade_deploy_keeps_every_row(provisioned):
    machine, _ = provisioned
    new = "mnemos-standin/postgres:15-next"  # the same major under a new tag (module docstring)
    machine.exec(f"docker tag {POSTGRES} {new}")
    psql(machine, "mnemos", "CREATE TABLE upgrade_rows (id int primary key, name text); "
                            "INSERT INTO upgrade_rows SELECT g, 'row-' || g "
                            "FROM generate_series(1, 1000) g")
    psql(machine, "mnemos_cortex", "CREATE TABLE upgrade_other (id int); "
                                   "INSERT INTO upgrade_other SELECT generate_series(1, 37)")
    digest = "SELECT md5(string_agg(id || name, ',' ORDER BY id)) FROM upgrade_rows"
    rows = psql(machine, "mnemos", digest)
    archives = set(machine.exec(f"ls {ROOT}/data/backups").stdout.split())
    try:
        run = machine.deploy("deploys/upgrade_postgres.py", images(postgres=new))
        assert run.returncode == 0, run.output[-4000:]
        assert ("the data of PostgreSQL 15 will be kept in volume mnemos_postgres-data-pg15: "
                "once you are satisfied, remove it with `docker volume rm "
                "mnemos_postgres-data-pg15`") in run.output, run.output[-3000:]
        made = set(machine.exec(f"ls {ROOT}/data/backups").stdout.split()) - archives
        assert any(name.startswith("mnemos-backup-") for name in made), "no backup was taken"
        # the service runs the new image, on its own volume, with every row
        assert inspect(machine, "mnemos-postgres", "{{.Config.Image}}") == new
        assert inspect(machine, "mnemos-postgres", "{{.State.Health.Status}}") == "healthy"
        assert psql(machine, "mnemos", digest) == rows
        assert psql(machine, "mnemos_cortex", "SELECT count(*) FROM upgrade_other") == "37"
        # the .env password still opens it over TCP (the roles came across)
        password = machine.exec(f"sed -n 's/^POSTGRES_PASSWORD=//p' {ROOT}/.env").stdout.strip()
        assert machine.exec(
            f"docker exec -e PGPASSWORD='{password}' mnemos-postgres psql -h 127.0.0.1 "
            "-U mnemos -d mnemos -tAc 'SELECT count(*) FROM upgrade_rows'").stdout.strip() \
            == "1000"
        kept = machine.exec("docker volume ls -q").stdout.split()
        assert "mnemos_postgres-data-pg15" in kept and "mnemos_postgres-data-next" not in kept
        # a converge with that image is then a no-op for the stack
        again = machine.deploy(BOOTSTRAP, images(postgres=new))
        harness.assert_no_change(again)
    finally:
        # back to the default image: without a container there is no image change to guard
        # (the data is PostgreSQL 15 and the default stand-in's tag names no major)
        machine.exec("docker rm -f mnemos-postgres >/dev/null", check=False)
        converged(machine)
        psql(machine, "mnemos", "DROP TABLE IF EXISTS upgrade_rows")
        psql(machine, "mnemos_cortex", "DROP TABLE IF EXISTS upgrade_other")
        machine.exec("docker volume rm mnemos_postgres-data-pg15 mnemos_postgres-data-next "
                     f">/dev/null 2>&1; docker rmi {new} >/dev/null", check=False)
        made = set(machine.exec(f"ls {ROOT}/data/backups").stdout.split()) - archives
        for name in made:
            machine.exec(f"rm -f {ROOT}/data/backups/{name}")
