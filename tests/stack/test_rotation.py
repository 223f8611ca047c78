"""
Secret rotation (deploys/rotate.py, docs/rotation.md) against the real PostgreSQL and Redis of the
provisioned machine (the stand-ins of tests/standins: Debian's PostgreSQL 15 and Redis 7.0).

Each test leaves the machine converged and consistent (the state, .env and the services agree,
no rotation recorded in progress), so the other stack tests pass in any order: they read the
passwords from .env or the containers' environment.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests import harness

pytestmark = pytest.mark.stack

ROOT = "/home/dev/mnemos"
STATE = "/home/dev/.config/mnemos/secrets.json"
ROTATED = ("POSTGRES_PASSWORD", "REDIS_PASSWORD")
OTHERS = ("mnemos-prometheus", "mnemos-traefik")  # no configuration of theirs holds the secrets


def state(machine) -> dict[str, str]:
    return json.loads(machine.exec(f"cat {STATE}").stdout)


def env(machine) -> dict[str, str]:
    lines = machine.exec(f"cat {ROOT}/.env").stdout.splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def in_container(machine, container: str, script: str, password: str,
                 check=False) -> subprocess.CompletedProcess:
    """`script` run by sh in `container` with $P the password, given on stdin (never on a
    command line)."""
    return harness.sh(["docker", "exec", "-i", machine.name, "docker", "exec", "-i", container,
                       "sh", "-c", f"IFS= read -r P; {script}"],
                      check=check, input=password + "\n")


def pg_accepts(machine, password: str) -> bool:
    """Logs in over TCP (scram-sha-256) as the application does and reads the table."""
    result = in_container(machine, "mnemos-postgres",
                          'PGPASSWORD="$P" psql -X -h 127.0.0.1 -U mnemos -d mnemos -tAc '
                          '"SELECT count(*) FROM rotation_rows"', password)
    return result.returncode == 0 and result.stdout.strip() == "300"


def redis_accepts(machine, password: str) -> bool:
    result = in_container(machine, "mnemos-redis",
                          'REDISCLI_AUTH="$P" redis-cli GET rotation:key', password)
    return result.stdout.strip() == "kept"


def started(machine, *containers: str) -> list[str]:
    return machine.exec("docker inspect -f '{{.State.StartedAt}}' "
                        + " ".join(containers)).stdout.split()


def assert_agree(machine, old: dict[str, str]) -> dict[str, str]:
    """The state, .env and the services agree on each rotated secret, with the data reachable;
    the value before the rotation is refused. Returns the state."""
    now, dotenv = state(machine), env(machine)
    assert not [k for k in now if k.startswith("rotating:")], "a rotation is still recorded"
    for name in ROTATED:  # compared without pytest's rewriting: it would print the values
        if now[name] == old[name]:
            pytest.fail(f"{name} was not rotated")
        if dotenv[name] != now[name]:
            pytest.fail(f".env and the state disagree on {name}")
    assert now["POSTGRES_PASSWORD"] in dotenv["DATABASE_URL"]
    assert now["REDIS_PASSWORD"] in dotenv["REDIS_URL"]
    assert pg_accepts(machine, now["POSTGRES_PASSWORD"]), "PostgreSQL refuses the state's value"
    assert not pg_accepts(machine, old["POSTGRES_PASSWORD"]), "PostgreSQL accepts the old value"
    assert redis_accepts(machine, now["REDIS_PASSWORD"]), "Redis refuses the state's value"
    assert not redis_accepts(machine, old["REDIS_PASSWORD"]), "Redis accepts the old value"
    health = machine.exec(f"cd {ROOT} && make health", check=False, user="dev")
    assert health.returncode == 0, health.stdout + health.stderr
    return now


def assert_no_secret(output: str, *values: dict[str, str]) -> None:
    for secrets in values:
        for name in ROTATED:
            assert secrets[name] not in output, f"{name}'s value is in the output"


def wait_for_orphans(machine) -> str:
    """pyinfra's remote commands outlive a killed client (docker exec): wait up to 60 s for the
    killed run's commands (those naming a stage directory, and compose up) to finish, as a dropped
    SSH session's would. Returns those still running then (for a failure's message). The patterns
    are split in two so that this loop's own command line never matches them."""
    return machine.exec(
        "for i in $(seq 1 60); do found=; for p in /proc/[0-9]*; do "
        "[ \"${p#/proc/}\" = $$ ] && continue; "
        "c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null) || continue; "
        "case \"$c\" in *'mnemos-sta''ge-'*|*'compose up'' -d --wa''it'*) "
        "found=\"$found $(printf '%s' \"$c\" | cut -c1-160) |\";; "
        "esac; done; [ -z \"$found\" ] && exit 0; sleep 1; done; printf '%s\\n' \"$found\"",
        check=False).stdout


@pytest.fixture(scope="module")
def rows(provisioned):
    machine, first = provisioned
    assert first.returncode == 0, first.output[-3000:]
    machine.exec("docker exec mnemos-postgres psql -U mnemos -d mnemos -qc "
                 "'CREATE TABLE IF NOT EXISTS rotation_rows (id int primary key); "
                 "INSERT INTO rotation_rows SELECT generate_series(1, 300) ON CONFLICT DO NOTHING'")
    machine.exec("docker exec mnemos-redis sh -c "
                 "'REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli SET rotation:key kept'")
    return machine


def test_rotate_sets_the_new_passwords_in_postgres_and_redis_and_restarts_only_them(rows):
    machine = rows
    old = state(machine)
    assert pg_accepts(machine, old["POSTGRES_PASSWORD"]) and redis_accepts(
        machine, old["REDIS_PASSWORD"]), "the machine did not start consistent"
    others = started(machine, *OTHERS)
    before = started(machine, "mnemos-postgres", "mnemos-redis")

    run = machine.deploy("deploys/rotate.py", "rotate=postgres,redis", flags=("-vvv",))
    assert run.returncode == 0, run.output[-4000:]
    new = assert_agree(machine, old)
    changed = [name for name in set(old) - set(ROTATED) if new[name] != old[name]]
    assert changed == [], "changed, though not named"
    assert started(machine, *OTHERS) == others, "a container that holds no rotated secret restarted"
    after = started(machine, "mnemos-postgres", "mnemos-redis")
    assert all(a != b for a, b in zip(after, before)), "a service kept its old environment"
    assert "the new POSTGRES_PASSWORD is accepted, the old one refused" in run.output
    assert_no_secret(run.output, old, new)

    suite = machine.host_suite("-k", "postgresql_running or redis_running or "
                                     "all_services_pass_health_checks")
    assert suite.returncode == 0, suite.stdout[-3000:]
    again = machine.deploy()
    harness.assert_no_change(again)


def test_rotate_without_names_or_a_recorded_rotation_changes_nothing(rows):
    machine = rows
    before = machine.exec(f"sha256sum {STATE} {ROOT}/.env").stdout
    run = machine.deploy("deploys/rotate.py")
    assert run.returncode != 0
    assert "rotate = []: name the services" in run.output
    assert "Traceback" not in run.output
    assert machine.exec(f"sha256sum {STATE} {ROOT}/.env").stdout == before


# Where the rotation run is killed, and which run finishes it. The conditions read the machine:
# the record written; Redis (set after PostgreSQL) holding the new value; the state written
# without the record; PostgreSQL's container recreated.
RECORDED = f"grep -q rotating: {STATE}"
REDIS_SET = (f"p=$(sed -n 's/.*\"rotating:REDIS_PASSWORD\": \"\\(.*\\)\".*/\\1/p' {STATE}); "
             "[ -n \"$p\" ] && printf '%s\\n' \"$p\" | docker exec -i mnemos-redis sh -c "
             "'IFS= read -r P; REDISCLI_AUTH=\"$P\" redis-cli ping' | grep -q PONG")
KILL_POINTS = [
    ("record written", RECORDED, "deploys/rotate.py"),
    ("services changed", REDIS_SET, "deploys/bootstrap.py"),
    ("state written", "! grep -q rotating: {state} && "
     "[ \"$(sha256sum < {state} | cut -c1-64)\" != '{sha}' ]",
     "deploys/bootstrap.py"),
    ("postgres recreated", "[ \"$(docker inspect -f '{{{{.State.StartedAt}}}}' mnemos-postgres)\" "
     "!= '{pg_started}' ]", "deploys/bootstrap.py"),
]


@pytest.mark.parametrize("point,condition,finisher", KILL_POINTS,
                         ids=[p[0].replace(" ", "-") for p in KILL_POINTS])
def test_a_rotation_killed_part_way_is_finished_by_the_next_run(rows, point, condition, finisher):
    machine = rows
    old = state(machine)
    sha = machine.exec(f"sha256sum < {STATE}").stdout.split()[0]
    pg_started = started(machine, "mnemos-postgres")[0]
    output = machine.deploy_killed_when(
        condition.format(state=STATE, sha=sha, pg_started=pg_started), timeout=400,
        deploy="deploys/rotate.py", data=("rotate=postgres,redis",))
    orphans = wait_for_orphans(machine)
    killed = state(machine)
    recorded = any(k.startswith("rotating:") for k in killed)
    if point == "record written":  # the services are set next, the record stays until the tree
        assert recorded, "the kill came after the record"

    run = machine.deploy(finisher)
    assert run.returncode == 0, (f"killed at {point!r} (still running then: {orphans}); "
                                 f"{finisher}:\n{run.output[-4000:]}")
    new = assert_agree(machine, old)
    if recorded:  # the recorded new value, not another
        kept = [n for n in ROTATED if new[n] == killed.get("rotating:" + n)]
        assert kept == list(ROTATED), "a recorded new value was replaced"
    assert_no_secret(output + run.output, old, new)
    again = machine.deploy()
    harness.assert_no_change(again)


def decrypts(machine, archive: str, key: str) -> bool:
    """gpg opens `archive` with `key` (given on stdin, never on a command line), as `dev`."""
    return harness.sh(["docker", "exec", "-i", "-u", "dev", machine.name, "sh", "-c",
                       "gpg --batch --quiet --pinentry-mode loopback --passphrase-fd 0 -d "
                       f"{archive} > /dev/null 2>&1"], input=key + "\n",
                      check=False).returncode == 0


def test_rotating_the_backup_and_jwt_keys_keeps_old_archives_restorable(rows):
    """rotate=backup-key,jwt (docs/rotation.md, docs/backups.md): the state and .env hold the new
    keys, the replaced backup key is kept (the state's previous keys, the tree's 0600
    .backup-keys); new archives use the new key; an archive made before the rotation is restored
    after it by make restore (the real scripts, the real PostgreSQL), rows and all; no container
    restarts for it; a converge after it changes nothing."""
    machine = rows
    before_backup = machine.exec(f"cd {ROOT} && make backup", user="dev").stdout
    archive = before_backup.rsplit("backup: wrote ", 1)[1].split()[0]
    old = state(machine)
    containers = started(machine, "mnemos-postgres", "mnemos-redis", *OTHERS)

    run = machine.deploy("deploys/rotate.py", "rotate=backup-key,jwt")
    assert run.returncode == 0, run.output[-4000:]
    new, dotenv = state(machine), env(machine)
    for name in ("BACKUP_ENCRYPTION_KEY", "JWT_SECRET_KEY"):  # no value in pytest's messages
        if new[name] == old[name] or dotenv[name] != new[name]:
            pytest.fail(f"{name}: not rotated, or .env and the state disagree")
        if new[name] in run.output or old[name] in run.output:
            pytest.fail(f"{name}'s value is in the output")
    if new["previous:BACKUP_ENCRYPTION_KEY"].split("\n")[0] != old["BACKUP_ENCRYPTION_KEY"]:
        pytest.fail("the state does not keep the replaced backup key first")
    keyring = harness.sh(["docker", "exec", "-i", machine.name, "sh", "-c",
                          f"stat -c '%a %U' {ROOT}/.backup-keys && grep -c -x -F -f /dev/stdin "
                          f"{ROOT}/.backup-keys"], input=old["BACKUP_ENCRYPTION_KEY"] + "\n",
                         check=False).stdout.split()
    assert keyring == ["600", "dev", "1"], "the keyring does not hold the replaced key (0600)"
    assert started(machine, "mnemos-postgres", "mnemos-redis", *OTHERS) == containers

    after = machine.exec(f"cd {ROOT} && make backup", user="dev").stdout
    newer = after.rsplit("backup: wrote ", 1)[1].split()[0]
    assert decrypts(machine, newer, new["BACKUP_ENCRYPTION_KEY"]), "a new archive: not the new key"
    assert not decrypts(machine, newer, old["BACKUP_ENCRYPTION_KEY"])
    assert not decrypts(machine, archive, new["BACKUP_ENCRYPTION_KEY"])

    machine.exec("docker exec mnemos-postgres psql -U mnemos -d mnemos -qc "
                 "'DELETE FROM rotation_rows WHERE id > 200'")
    restore = machine.exec(f"cd {ROOT} && make restore BACKUP_FILE={archive}", user="dev",
                           check=False)
    assert restore.returncode == 0, restore.stdout[-2000:] + restore.stderr[-2000:]
    assert "verified" in restore.stdout
    assert pg_accepts(machine, new["POSTGRES_PASSWORD"]), "the 300 rows are not back"
    harness.assert_no_change(machine.deploy())
