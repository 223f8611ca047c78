"""
Backups and the Makefile on the real engine of the provisioned machine, with the stand-in
PostgreSQL and Redis (tests/standins). Everything runs as the machine's user `dev` (in the
docker group), as cron does.
"""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.stack

ROOT = "/home/dev/mnemos"
BACKUPS = f"{ROOT}/data/backups"


def dev(machine, command: str, check=True):
    return machine.exec(f"cd {ROOT} && {command}", check=check, user="dev")


def psql(machine, sql: str) -> str:
    return machine.exec(f"docker exec mnemos-postgres psql -U mnemos -d mnemos_cortex "
                        f"-tAc \"{sql}\"").stdout.strip()


def redis(machine, *args: str) -> str:
    quoted = " ".join(args)
    return machine.exec("docker exec mnemos-redis sh -c "
                        f"'REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli {quoted}'").stdout.strip()


def make_backup(machine) -> str:
    result = dev(machine, "make backup")
    match = re.search(r"backup: wrote (\S+)", result.stdout)
    assert match, result.stdout + result.stderr
    return match.group(1)


@pytest.fixture(scope="module")
def data(provisioned):
    machine, first = provisioned
    assert first.returncode == 0, first.output[-3000:]
    psql(machine, "CREATE TABLE IF NOT EXISTS jobs (id int primary key, name text); "
                  "INSERT INTO jobs SELECT g, 'job-' || g FROM generate_series(1, 500) g "
                  "ON CONFLICT DO NOTHING")
    for i in range(20):
        redis(machine, "SET", f"key:{i}", f"value-{i}")
    return {"rows": psql(machine, "SELECT md5(string_agg(id || name, ',' ORDER BY id)) FROM jobs"),
            "keys": redis(machine, "MGET", *[f"key:{i}" for i in range(20)])}


def test_backup_destroy_restore_gives_identical_data(provisioned, data):
    machine, _ = provisioned
    archive = make_backup(machine)
    assert archive.endswith(".tar.gz.gpg"), "BACKUP_ENCRYPT=true by default"
    assert machine.exec(f"stat -c %a {archive}").stdout.strip() == "600"
    dev(machine, "docker compose down -v")
    run = machine.deploy()
    assert run.returncode == 0, run.output[-3000:]
    assert psql(machine, "SELECT to_regclass('jobs') IS NULL") == "t", \
        "the volume was not destroyed"
    restore = dev(machine, f"make restore BACKUP_FILE={archive}")
    assert "verified" in restore.stdout
    assert psql(machine, "SELECT md5(string_agg(id || name, ',' ORDER BY id)) FROM jobs") \
        == data["rows"]
    assert redis(machine, "MGET", *[f"key:{i}" for i in range(20)]) == data["keys"]
    assert dev(machine, "make health").returncode == 0


def test_an_archive_with_one_flipped_byte_is_refused_and_nothing_changes(provisioned, data):
    machine, _ = provisioned
    archive = make_backup(machine)
    started = machine.exec("docker inspect -f '{{.State.StartedAt}}' "
                           "mnemos-postgres mnemos-redis").stdout
    redis(machine, "SET", "after-backup", "kept")
    for keep_checksum in (True, False):
        bad = f"/tmp/flipped-{keep_checksum}.tar.gz.gpg"
        machine.exec(f"cp {archive} {bad} && chmod 644 {bad}")
        if keep_checksum:
            machine.exec(f"sed 's|{archive.split('/')[-1]}|{bad.split('/')[-1]}|' "
                         f"{archive}.sha256 > {bad}.sha256")
        size = int(machine.exec(f"stat -c %s {bad}").stdout)
        offset = size // 2
        byte = int(machine.exec(f"od -An -tu1 -j{offset} -N1 {bad}").stdout)
        machine.exec(f"printf '\\{(byte ^ 0xFF):03o}' | "
                     f"dd of={bad} bs=1 seek={offset} conv=notrunc 2>/dev/null")
        assert int(machine.exec(f"od -An -tu1 -j{offset} -N1 {bad}").stdout) == byte ^ 0xFF
        result = dev(machine, f"sh scripts/backup/restore-all.sh {bad}", check=False)
        assert result.returncode != 0
        assert "refused, nothing was changed" in result.stderr, result.stderr
    assert machine.exec("docker inspect -f '{{.State.StartedAt}}' "
                        "mnemos-postgres mnemos-redis").stdout == started
    assert redis(machine, "GET", "after-backup") == "kept"
    assert psql(machine, "SELECT md5(string_agg(id || name, ',' ORDER BY id)) FROM jobs") \
        == data["rows"]


def test_an_encrypted_archive_cannot_be_read_without_the_key(provisioned, data):
    machine, _ = provisioned
    archive = make_backup(machine)
    assert machine.exec(f"tar -tzf {archive}", check=False).returncode != 0
    decrypt = ("gpg --batch --pinentry-mode loopback --passphrase-fd 0 -d {archive} 2>/dev/null "
               "| tar -xzOf - ./postgres.sql")
    for wrong_key in ("wrong-key", ""):
        wrong = machine.exec(f"printf '%s\\n' '{wrong_key}' | " + decrypt.format(archive=archive),
                             check=False, user="dev")
        assert "job-42" not in wrong.stdout, f"the archive decrypts with the key {wrong_key!r}"
        assert wrong.returncode != 0
    key = machine.exec(f"sed -n 's/^BACKUP_ENCRYPTION_KEY=//p' {ROOT}/.env").stdout.strip()
    right = machine.exec(f"printf '%s\\n' '{key}' | " + decrypt.format(archive=archive),
                         check=False, user="dev")
    assert right.returncode == 0 and "job-42" in right.stdout, "the key of .env does not open it"
    listing = machine.exec(f"printf '%s\\n' '{key}' | gpg --batch --pinentry-mode loopback "
                           f"--passphrase-fd 0 -d {archive} 2>/dev/null | tar -tzf -",
                           user="dev").stdout
    assert "./postgres.sql" in listing and "./MANIFEST.sha256" in listing


def test_retention_removes_only_old_archives(provisioned, data):
    machine, _ = provisioned
    machine.exec(
        f"cd {BACKUPS} && touch -d '45 days ago' mnemos-backup-20200101T000000Z.tar.gz.gpg "
        "mnemos-backup-20200101T000000Z.tar.gz.gpg.sha256 unrelated-notes.txt && "
        "touch -d '10 days ago' mnemos-backup-20200301T000000Z.tar.gz.gpg && chown dev: *",
        user=None)
    make_backup(machine)
    left = machine.exec(f"ls {BACKUPS}").stdout.split()
    assert "mnemos-backup-20200101T000000Z.tar.gz.gpg" not in left
    assert "mnemos-backup-20200101T000000Z.tar.gz.gpg.sha256" not in left
    assert "mnemos-backup-20200301T000000Z.tar.gz.gpg" in left, "a recent archive was pruned"
    assert "unrelated-notes.txt" in left, "retention touched a file that is not an archive"


def test_a_failing_part_is_named_and_exits_non_zero(provisioned, data):
    machine, _ = provisioned
    machine.exec("docker stop mnemos-redis >/dev/null")
    result = dev(machine, "sh scripts/backup/backup-all.sh", check=False)
    assert result.returncode != 0
    assert "backup: redis failed: container mnemos-redis is not running" in result.stderr
    assert machine.exec(f"ls -a {BACKUPS} | grep -c '^.work-'", check=False).stdout.strip() == "0"
    run = machine.deploy()
    assert run.returncode == 0, run.output[-3000:]


def test_the_schedule_is_installed_and_cron_runs(provisioned):
    machine, _ = provisioned
    entry = machine.exec("cat /etc/cron.d/mnemos-backup").stdout
    assert f"0 3 * * * dev /bin/sh {ROOT}/scripts/backup/backup-all.sh" in entry
    assert machine.exec("for c in /proc/[0-9]*/comm; do cat $c; done 2>/dev/null | grep -qx cron",
                        check=False).returncode == 0


@pytest.mark.parametrize("target,expect", [
    ("help", "restart-%"),
    ("ps", "mnemos-postgres"),
    ("health", "All services healthy"),
    ("logs-postgres LOGS_FOLLOW=", "database system is ready to accept connections"),
    ("restart-redis", "Restarting"),
])
def test_makefile_targets_work_against_the_stack(provisioned, target, expect):
    machine, _ = provisioned
    result = dev(machine, f"make {target}", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert expect in result.stdout + result.stderr
    if target.startswith("restart"):
        assert dev(machine, "docker compose up -d --wait redis", check=False).returncode == 0
