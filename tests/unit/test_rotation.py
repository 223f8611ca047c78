"""
Rotation's decisions (docs/rotation.md), without a host: the state that records a rotation in
progress (old value under the secret's name, new value beside it), what a run makes of it, and
the SCRAM verifier sent to PostgreSQL. The rotation itself, killed at each step, runs against the
real PostgreSQL and Redis of the stack tier (tests/stack/test_rotation.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from mnemos_provision import secret_store
from mnemos_provision.dotenv import SECRET_LENGTHS
from mnemos_provision.operations.rotation import scram_sha_256
from mnemos_provision.secret_store import HostFile, HostState, StateError

pytestmark = pytest.mark.unit

PATHS = dict(state_path="/home/dev/.config/mnemos/secrets.json",
             env_path="/home/dev/mnemos/.env", project="mnemos")


def whole_state(**extra: str) -> dict[str, str]:
    values = {name: f"old-{name.lower()}" for name in SECRET_LENGTHS}
    values.update(extra)
    return values


def host_state(values: dict[str, str]) -> HostState:
    return HostState(state=HostFile("file", json.dumps(values).encode()),
                     env=HostFile("missing"), state_dir="directory|700|dev", volumes=set())


def test_a_state_without_a_rotation_decides_no_rotation():
    decision = secret_store.decide(host_state(whole_state()), {}, **PATHS)
    assert decision.rotating == {}
    assert decision.values["POSTGRES_PASSWORD"] == "old-postgres_password"


def test_a_rotation_in_progress_is_read_old_and_new_and_the_run_goes_on_with_the_new_value():
    state = whole_state(**{"rotating:POSTGRES_PASSWORD": "new-pg"})
    decision = secret_store.decide(host_state(state), {}, **PATHS)
    assert decision.rotating == {"POSTGRES_PASSWORD": ("old-postgres_password", "new-pg")}
    # the roles after the rotation role write the new value (the state without the record)
    assert decision.values["POSTGRES_PASSWORD"] == "new-pg"
    assert "rotating:POSTGRES_PASSWORD" not in secret_store.serialize(decision.values).decode()
    # the record as the run found it, byte for byte: a repeated record write changes nothing
    assert decision.in_progress() == secret_store.serialize(state)


@pytest.mark.parametrize("entry", [
    "rotating:NOT_A_SECRET",  # a record of a secret the state does not have
    "previous:REDIS_PASSWORD",  # earlier values are kept for BACKUP_ENCRYPTION_KEY only
])
def test_an_entry_the_state_cannot_hold_stops_the_run_naming_it_not_its_value(entry):
    state = whole_state(**{entry: "x" * 20})
    with pytest.raises(StateError) as raised:
        secret_store.decide(host_state(state), {}, **PATHS)
    assert entry in str(raised.value)
    assert "x" * 20 not in str(raised.value)


def test_begin_rotation_records_old_and_new_and_expects_that_record():
    read = secret_store.decide(host_state(whole_state()), {}, **PATHS)
    started = secret_store.begin_rotation(read, ["POSTGRES_PASSWORD", "REDIS_PASSWORD"])
    new_pg = started.values["POSTGRES_PASSWORD"]
    assert new_pg != "old-postgres_password" and len(new_pg) == SECRET_LENGTHS["POSTGRES_PASSWORD"]
    assert started.rotating["REDIS_PASSWORD"][0] == "old-redis_password"
    recorded = json.loads(started.in_progress())
    assert recorded["POSTGRES_PASSWORD"] == "old-postgres_password"  # the state still says old
    assert recorded["rotating:POSTGRES_PASSWORD"] == new_pg
    assert started.expected == secret_store.sha256(started.in_progress())
    assert read.expected == secret_store.sha256(json.dumps(whole_state()).encode())
    assert started.values["JWT_SECRET_KEY"] == read.values["JWT_SECRET_KEY"]  # only those named


def test_a_second_rotate_keeps_the_new_value_of_the_rotation_in_progress():
    """The earlier run may have set it in the service already: a fresh value would lock the
    service out of the state."""
    state = whole_state(**{"rotating:REDIS_PASSWORD": "new-redis"})
    read = secret_store.decide(host_state(state), {}, **PATHS)
    started = secret_store.begin_rotation(read, ["REDIS_PASSWORD", "POSTGRES_PASSWORD"])
    assert started.rotating["REDIS_PASSWORD"] == ("old-redis_password", "new-redis")
    assert started.rotating["POSTGRES_PASSWORD"][0] == "old-postgres_password"


def test_the_scram_verifier_is_postgresqls_format_and_proves_the_password():
    """RFC 5802: StoredKey = H(HMAC(SaltedPassword, "Client Key")); a server checks a client's
    proof against it, so it must be derived from this password and salt."""
    salt = b"0123456789abcdef"
    verifier = scram_sha_256("pencil", salt=salt)
    keys = verifier.split(":", 1)[1].split("$", 1)[1]
    assert verifier.startswith("SCRAM-SHA-256$4096:" + base64.b64encode(salt).decode() + "$")
    stored_b64, server = keys.split(":")
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert base64.b64decode(stored_b64) == hashlib.sha256(client_key).digest()
    assert base64.b64decode(server) == hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    assert "pencil" not in verifier
    assert scram_sha_256("pencil") != scram_sha_256("pencil"), "a new salt each time"


# ------------------------------------------------------------------ real runs on @local
# (tests/unit/test_secret_state.py's Site: a tree and its state under a temporary directory)

def _site(tmp_path):
    from tests.unit.test_secret_state import Site
    return Site(tmp_path, "mnemosrot" + str(abs(hash(str(tmp_path))) % 10**6))


def _rotate(site, *data: str):
    from tests.conftest import REPO, run
    from tests.unit.test_secret_state import PYINFRA
    args = [PYINFRA, "@local", "deploys/rotate.py", "-y", "--data", f"mnemos_root={site.root}",
            "--data", f"secrets_state_path={site.state}",
            "--data", f"compose_project={site.project}"]
    for item in data:
        args += ["--data", item]
    return run(args, cwd=REPO)


def test_a_run_that_does_not_rotate_keeps_a_recorded_rotation_and_the_old_values(tmp_path):
    """deploys/tree.py sets nothing in the services: it must neither write a recorded new value
    (the service does not hold it) nor drop the record (the next rotate or converge needs it)."""
    from tests.unit.test_secret_state import ok
    site = _site(tmp_path)
    ok(site.deploy())
    recorded = dict(site.secrets(),
                    **{"rotating:REDIS_PASSWORD": "N3wRedisPasswordValue0123456789x"})
    site.state.write_text(json.dumps(recorded))
    ok(site.deploy())
    assert site.secrets() == recorded, "the record or a value changed"
    assert site.env_values()["REDIS_PASSWORD"] == recorded["REDIS_PASSWORD"], ".env has the new one"


def test_rotate_refuses_a_service_not_enabled_and_an_empty_list_before_any_change(tmp_path):
    from tests.unit.test_secret_state import ok, refused
    site = _site(tmp_path)
    ok(site.deploy())
    before = (site.state.read_bytes(), site.env.read_bytes())
    refused(_rotate(site, "rotate=postgres", "compose_profiles=redis"),
            "the rotation cannot run; nothing on the host was changed",
            "POSTGRES_PASSWORD: the postgres service is not enabled on this host")
    refused(_rotate(site), "nothing to rotate", "rotate = []: name the services")
    refused(_rotate(site, "rotate=grafana,minio-root", "compose_profiles=redis"),
            "the rotation cannot run; nothing on the host was changed",
            "GRAFANA_ADMIN_PASSWORD: the grafana service is not enabled on this host",
            "MINIO_ROOT_PASSWORD: the minio service is not enabled on this host")
    refused(_rotate(site, "rotate=nothing"),
            "rotate = 'nothing': unknown entry; expected entries from postgres, redis, minio-app")
    assert (site.state.read_bytes(), site.env.read_bytes()) == before


# ------------------------------------------------------------------ jwt, backup-key, vault-token

def test_the_state_keeps_the_replaced_backup_keys_newest_first_and_the_keyring_gets_them():
    state = whole_state(**{"rotating:BACKUP_ENCRYPTION_KEY": "newkey",
                           secret_store.PREVIOUS_BACKUP_KEYS: "older\noldest"})
    decision = secret_store.decide(host_state(state), {}, **PATHS)
    # recorded, not applied (deploys/tree.py): the old key is still the current one
    assert decision.backup_keyring() == ["older", "oldest"]
    assert decision.state_file() == secret_store.serialize(state)
    decision.applied = True  # the rotation role planned it
    assert decision.backup_keyring() == ["old-backup_encryption_key", "older", "oldest"]
    written = json.loads(decision.state_file())
    assert written["BACKUP_ENCRYPTION_KEY"] == "newkey"
    assert written[secret_store.PREVIOUS_BACKUP_KEYS] == "old-backup_encryption_key\nolder\noldest"
    assert not [k for k in written if k.startswith("rotating:")]


def test_a_state_that_lost_the_earlier_backup_keys_recovers_them_from_the_keyring():
    found = host_state(whole_state())
    found.also["backup_keys"] = HostFile("file", b"# comment\nkeyA\n\nkeyB\n")
    decision = secret_store.decide(found, {}, **PATHS)
    assert decision.backup_keyring() == ["keyA", "keyB"]
    assert json.loads(decision.state_file())[secret_store.PREVIOUS_BACKUP_KEYS] == "keyA\nkeyB"


def test_an_earlier_backup_key_that_the_keyring_cannot_hold_is_refused_by_the_render():
    from mnemos_provision import render
    from mnemos_provision.settings import validate
    with pytest.raises(render.RenderError) as raised:
        render.render_tree(validate({}), "/home/dev", secret_store.complete({}, {}),
                           ["has space"])
    assert "previous:BACKUP_ENCRYPTION_KEY" in str(raised.value)
    assert "has space" not in str(raised.value)


def test_rotating_the_jwt_and_backup_keys_writes_the_state_env_and_keyring(tmp_path):
    """No service holds them: a real deploys/rotate.py on @local (launch_stack false) rotates them;
    the replaced backup key goes to the state's previous keys and the tree's 0600 keyring,
    newest first; a converge after it changes neither."""
    from tests.unit.test_secret_state import ok
    site = _site(tmp_path)
    ok(site.deploy())
    old = site.secrets()
    output = ok(_rotate(site, "rotate=jwt,backup-key", "launch_stack=false"))
    new, env = site.secrets(), site.env_values()
    keyring = site.root / ".backup-keys"
    for name in ("JWT_SECRET_KEY", "BACKUP_ENCRYPTION_KEY"):
        assert new[name] != old[name], f"{name} was not rotated"
        assert env[name] == new[name], f".env and the state disagree on {name}"
        assert new[name] not in output and old[name] not in output
    assert [n for n in old if new[n] != old[n]] == ["BACKUP_ENCRYPTION_KEY", "JWT_SECRET_KEY"]
    assert new[secret_store.PREVIOUS_BACKUP_KEYS] == old["BACKUP_ENCRYPTION_KEY"]
    assert oct(keyring.stat().st_mode & 0o777) == "0o600"
    lines = [x for x in keyring.read_text().splitlines() if x and not x.startswith("#")]
    assert lines == [old["BACKUP_ENCRYPTION_KEY"]]
    ok(_rotate(site, "rotate=backup-key", "launch_stack=false"))
    third = site.secrets()
    assert third[secret_store.PREVIOUS_BACKUP_KEYS].split("\n") == [
        new["BACKUP_ENCRYPTION_KEY"], old["BACKUP_ENCRYPTION_KEY"]], "newest first"
    before = (site.state.read_bytes(), keyring.read_bytes())
    ok(site.deploy())
    assert (site.state.read_bytes(), keyring.read_bytes()) == before


def test_rotating_the_vault_token_is_refused_before_any_change_without_what_it_needs(tmp_path):
    from tests.unit.test_secret_state import ok, refused
    site = _site(tmp_path)
    ok(site.deploy())
    before = (site.state.read_bytes(), site.env.read_bytes())
    refused(_rotate(site, "rotate=vault-token", "launch_stack=false"),
            "nothing on the host was changed",
            "VAULT_TOKEN: the vault service is not enabled on this host")
    refused(_rotate(site, "rotate=vault-token", "compose_profiles=data,vault", "vault_init=true",
                    "publish_ports=true"),
            "nothing on the host was changed", "holds no root token")
    assert (site.state.read_bytes(), site.env.read_bytes()) == before


def test_restore_opens_an_archive_made_before_a_backup_key_rotation_with_the_keyring(tmp_path):
    """The rendered restore-all.sh with real gpg: an archive encrypted with the replaced key opens
    with .backup-keys' key (.env holds the new one), and is refused without it, before anything is
    touched. `docker` is a stub that fails: the script must get past verification to call it."""
    import os
    import shutil
    import subprocess
    import tarfile

    from mnemos_provision import render
    from mnemos_provision.settings import validate
    from tests.unit.test_render import write_tree
    gpg = shutil.which("gpg") or pytest.skip("gpg is not installed")
    secrets = secret_store.complete({}, {})
    old_key = "0ldBackupKey" * 4
    root = tmp_path / "mnemos"
    write_tree(root, render.render_tree(validate({}), "/home/dev", secrets, [old_key]))
    files = tmp_path / "files"
    files.mkdir()
    (files / "backup.info").write_text("created=20261206T000000Z\n")
    subprocess.run("sha256sum -- * > MANIFEST.sha256", shell=True, cwd=files, check=True)
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz") as tar:
        tar.add(files, arcname=".")
    archive = tmp_path / "mnemos-backup-20261206T000000Z.tar.gz.gpg"
    subprocess.run([gpg, "--batch", "--quiet", "--symmetric", "--cipher-algo", "AES256",
                    "--pinentry-mode", "loopback", "--passphrase-fd", "0", "-o", str(archive),
                    str(tmp_path / "a.tar.gz")], input=old_key + "\n", text=True, check=True,
                   env={**os.environ, "GNUPGHOME": str(tmp_path)})
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "docker").write_text("#!/bin/sh\necho \"docker stub: $*\" >&2\nexit 1\n")
    (stub / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}", "GNUPGHOME": str(tmp_path)}

    def restore() -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(root / "scripts/backup/restore-all.sh"), str(archive)],
                              capture_output=True, text=True, env=env)
    try:
        opened, refused = restore(), None
        (root / ".backup-keys").write_text("# no earlier key\n")
        refused = restore()
    finally:  # the agent gpg started for this GNUPGHOME
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, check=False)
    assert "verified" in opened.stdout, opened.stderr
    assert "docker stub: compose up" in opened.stderr
    assert secrets["BACKUP_ENCRYPTION_KEY"] not in opened.stdout + opened.stderr
    assert old_key not in opened.stdout + opened.stderr
    assert refused.returncode != 0 and "verified" not in refused.stdout
    assert "refused, nothing was changed: cannot decrypt" in refused.stderr
    assert "docker stub" not in refused.stderr, "a service was touched"
