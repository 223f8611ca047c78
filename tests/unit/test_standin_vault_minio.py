"""
The Vault and MinIO STAND-IN images (tests/standins/vault, tests/standins/minio) keep the contract
of the upstream images the compose file relies on: run on this machine's Docker Engine, each with
the rendered compose service's command, volumes, capabilities and healthcheck command.

They are stand-ins, not Vault or MinIO: what they follow and what they leave out is said in their
Dockerfiles and in docs/testing.md.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid

import pytest

from tests import harness
from tests.conftest import need

pytestmark = pytest.mark.unit

HCL = """ui = true
disable_mlock = {mlock}
storage "file" {{
  path = "{path}"
}}
listener "tcp" {{
  address     = "0.0.0.0:8200"
  tls_disable = true
}}
"""


@pytest.fixture(scope="module")
def images():
    need("docker")
    harness.ensure_standin_archive(("vault", "minio"))
    return harness.SERVICE_STANDINS


class Container:
    def __init__(self, image: str, *args: str, run: tuple[str, ...] = ()):
        self.name = f"mnemos-standin-test-{uuid.uuid4().hex[:8]}"
        self.volumes: list[str] = []
        self.image, self.args, self.run = image, args, run

    def start(self, port: int) -> "Container":
        harness.sh(["docker", "run", "-d", "--name", self.name, "-p", f"127.0.0.1::{port}",
                    *self.run, self.image, *self.args])
        return self

    def url(self, port: int) -> str:
        out = harness.sh(["docker", "port", self.name, f"{port}/tcp"]).stdout.split()
        return "http://" + [o for o in out if o.startswith("127.0.0.1:")][0]

    def exec(self, command: str, user: str | None = None):
        return harness.sh(["docker", "exec", *(["-u", user] if user else []), self.name, "sh", "-c",
                           command], check=False)

    def logs(self) -> str:
        r = harness.sh(["docker", "logs", self.name], check=False)
        return r.stdout + r.stderr

    def remove(self):
        harness.sh(["docker", "rm", "-f", "-v", self.name], check=False)
        for volume in self.volumes:
            harness.sh(["docker", "volume", "rm", "-f", volume], check=False)


def vault_container(images, tmp_path, storage="/vault/file", mlock="false", extra=(),
                    ipc_lock=True):
    config = tmp_path / "config"
    config.mkdir()
    (config / "vault.hcl").write_text(HCL.format(path=storage, mlock=mlock))
    c = Container(images["vault"], "server")
    c.volumes = [f"{c.name}-file", f"{c.name}-data"]
    c.run = ("-v", f"{c.volumes[0]}:/vault/file", "-v", f"{c.volumes[1]}:/vault/data",
             "-v", f"{config}:/vault/config:ro", "-e", "VAULT_ADDR=http://127.0.0.1:8200",
             *(("--cap-add", "IPC_LOCK") if ipc_lock else ()), *extra)
    return c


def request(url: str, method="GET", body=None, token=""):
    req = urllib.request.Request(url, method=method,
                                 data=json.dumps(body).encode() if body else None,
                                 headers={"X-Vault-Token": token} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_for(url: str, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            return request(url)
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer")


def healthcheck(c: Container) -> int:
    """The compose service's healthcheck command, as Docker runs it (CMD-SHELL: sh -c)."""
    return c.exec("vault status >/dev/null 2>&1; test $? -ne 1").returncode


def test_vault_standin_entrypoint_chowns_only_its_three_directories_and_drops_to_vault(
        images, tmp_path):
    c = vault_container(images, tmp_path).start(8200)
    try:
        wait_for(c.url(8200) + "/v1/sys/seal-status")
        owners = c.exec("stat -c '%n %U' /vault/file /vault/data /vault/config /vault/logs").stdout
        assert "/vault/file vault" in owners and "/vault/logs vault" in owners, owners
        assert "/vault/data root" in owners, f"a volume outside the three was chowned:\n{owners}"
        server = c.exec("for p in /proc/[0-9]*; do case $(tr '\\0' ' ' < $p/cmdline) in "
                        "*vault-python' '*/vault' server'*) stat -c %U $p;; esac; "
                        "done").stdout.split()
        assert server and set(server) == {"vault"}, f"vault server runs as {server}"
        caps = c.exec("getcap /usr/local/libexec/vault/vault-python").stdout
        assert "cap_ipc_lock" in caps, f"the entrypoint's setcap step did not run: {caps!r}"
    finally:
        c.remove()


def test_vault_standin_status_exit_codes_drive_the_compose_healthcheck(images, tmp_path):
    c = vault_container(images, tmp_path).start(8200)
    try:
        url = c.url(8200)
        wait_for(url + "/v1/sys/seal-status")
        assert c.exec("vault status").returncode == 2  # uninitialized: sealed
        assert healthcheck(c) == 0, "a sealed Vault is healthy for compose (the deploy unseals it)"
        status, init = request(url + "/v1/sys/init", "PUT",
                               {"secret_shares": 1, "secret_threshold": 1})
        assert status == 200, init
        request(url + "/v1/sys/unseal", "PUT", {"key": init["keys"][0]})
        assert c.exec("vault status").returncode == 0
        # restarted: state read back from the storage path, sealed again
        harness.sh(["docker", "restart", c.name])
        wait_for(c.url(8200) + "/v1/sys/seal-status")
        assert request(c.url(8200) + "/v1/sys/init")[1] == {"initialized": True}
        assert c.exec("vault status").returncode == 2
        # a server that does not answer: an error, 1 (`timeout` would say 124), once the
        # client's timeout (VAULT_CLIENT_TIMEOUT, 60 s by default as Vault's api) has passed
        c.exec("kill -STOP $(for p in /proc/[0-9]*; do case $(tr '\\0' ' ' < $p/cmdline) in "
               "*vault-python' '*/vault' server'*) echo ${p#/proc/};; esac; done)")
        assert c.exec("VAULT_CLIENT_TIMEOUT=3 timeout 8 vault status").returncode == 1
    finally:
        c.remove()


def test_vault_standin_refuses_to_initialize_on_a_storage_path_the_entrypoint_does_not_prepare(
        images, tmp_path):
    """/vault/data is a fresh, root-owned volume: the vault user cannot write it, so sys/init
    fails and Vault stays uninitialized (what the real image does with that vault.hcl)."""
    c = vault_container(images, tmp_path, storage="/vault/data").start(8200)
    try:
        url = c.url(8200)
        wait_for(url + "/v1/sys/seal-status")
        status, body = request(url + "/v1/sys/init", "PUT",
                               {"secret_shares": 1, "secret_threshold": 1})
        assert status == 500 and "Permission denied" in json.dumps(body), (status, body)
        assert request(url + "/v1/sys/init")[1] == {"initialized": False}
    finally:
        c.remove()


def test_vault_standin_mlock_needs_ipc_lock_as_vault_does(images, tmp_path):
    """disable_mlock = false under a small memlock limit: with IPC_LOCK (the compose service's
    cap_add) the entrypoint's setcap lets the server lock its memory; without it the entrypoint
    removes the capability again and the server refuses to start with Vault's message."""
    limit = ("--ulimit", "memlock=65536:65536")
    ok = vault_container(images, tmp_path, mlock="false", extra=limit).start(8200)
    try:
        wait_for(ok.url(8200) + "/v1/sys/seal-status")
    finally:
        ok.remove()
    (tmp_path / "config").rename(tmp_path / "config-ok")
    bad = vault_container(images, tmp_path, mlock="false", extra=limit, ipc_lock=False).start(8200)
    try:
        time.sleep(4)
        state = harness.sh(["docker", "inspect", "-f", "{{.State.Running}}",
                            bad.name]).stdout.strip()
        assert state == "false", bad.logs()
        assert "Couldn't start vault with IPC_LOCK" in bad.logs(), bad.logs()
        assert "Failed to lock memory" in bad.logs(), bad.logs()
    finally:
        bad.remove()


MINIO_ENV = ("-e", "MINIO_ROOT_USER=mnemos", "-e", "MINIO_ROOT_PASSWORD=standin-root-password")


@pytest.fixture
def minio(images):
    c = Container(images["minio"], "server", "/data", "--console-address", ":9001",
                  run=(*MINIO_ENV, "-p", "127.0.0.1::9001"))
    c.volumes = [f"{c.name}-data"]
    c.run = (*c.run, "-v", f"{c.volumes[0]}:/data")
    c.start(9000)
    try:
        end = time.time() + 60
        while c.exec("mc ready local").returncode != 0:
            assert time.time() < end, c.logs()
            time.sleep(0.5)
        yield c
    finally:
        c.remove()


def test_minio_standin_healthcheck_console_and_root_only_admin(minio):
    from minio import Minio, MinioAdmin
    from minio.credentials import StaticProvider
    from minio.error import MinioAdminException, S3Error
    endpoint = minio.url(9000)[len("http://"):]
    assert minio.exec("command -v curl").returncode == 0
    with urllib.request.urlopen(minio.url(9001), timeout=10) as r:
        assert r.status == 200
    s3 = Minio(endpoint, "mnemos", "standin-root-password", secure=False)
    s3.make_bucket("standin-check")
    assert s3.bucket_exists("standin-check")
    stranger = Minio(endpoint, "nobody-known", "whatever-secret", secure=False)
    with pytest.raises(S3Error) as refused:
        stranger.bucket_exists("standin-check")
    assert refused.value.code == "InvalidAccessKeyId"
    admin = MinioAdmin(endpoint=endpoint,
                       credentials=StaticProvider("nobody-known", "whatever-secret"), secure=False)
    with pytest.raises(MinioAdminException):
        admin.user_add("someone", "someone-secret")
    # metrics: refused without a token unless MINIO_PROMETHEUS_AUTH_TYPE=public (the compose
    # service sets it: the converge tier's Prometheus scrapes the stand-in's job as `up`)
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(minio.url(9000) + "/minio/v2/metrics/cluster", timeout=10)
    assert denied.value.code == 403
    # a healthcheck that fails when the server does not answer (stopped from outside: PID 1 of a
    # container ignores SIGSTOP sent from inside it)
    harness.sh(["docker", "kill", "-s", "STOP", minio.name])
    assert minio.exec("timeout 8 mc ready local").returncode == 1


def test_minio_standin_serves_the_deploys_admin_calls_and_shuffles_policies(minio):
    """The project's own MinIO code (mnemos_provision/minio_setup.py) against the stand-in, with
    the SDK's clients: applied once, then no difference left although every read of the policy
    comes back in another order."""
    from minio import Minio, MinioAdmin
    from minio.commonconfig import ENABLED
    from minio.credentials import StaticProvider
    from minio.versioningconfig import SUSPENDED, VersioningConfig

    from mnemos_provision import minio_setup
    endpoint = minio.url(9000)[len("http://"):]
    root = ("mnemos", "standin-root-password")
    desired = minio_setup.Desired(
        buckets=[minio_setup.Bucket("mnemos-artifacts", versioning=True),
                 minio_setup.Bucket("mnemos-backups", expire_days=60),
                 minio_setup.Bucket("mnemos-models")],
        app_user="mnemos-app", app_secret="app-secret-of-the-standin")
    s3 = Minio(endpoint, *root, secure=False)
    app = Minio(endpoint, desired.app_user, desired.app_secret, secure=False)
    admin = MinioAdmin(endpoint=endpoint, credentials=StaticProvider(*root), secure=False)
    before = (minio_setup.bucket_differences(s3, desired)
              + minio_setup.user_differences(admin, app, desired))
    assert f"user {desired.app_user}" in before
    minio_setup.apply_buckets(s3, desired)
    minio_setup.apply_user(admin, app, desired)
    documents = {admin.policy_info(desired.app_policy) for _ in range(8)}
    assert len(documents) > 1, "the stand-in returned the policy in one order only"
    for _ in range(4):
        assert minio_setup.bucket_differences(s3, desired) == []
        assert minio_setup.user_differences(admin, app, desired) == []
    # the plan as minio.setup runs it (curl on this machine as the host): every read in one host
    # command, and a drift is still seen through the batch
    from mnemos_provision.host_http import LocalRunner
    from mnemos_provision.operations.minio import clients
    for drift in (False, True):
        if drift:
            s3.set_bucket_versioning("mnemos-artifacts", VersioningConfig(SUSPENDED))
        hs3, happ, hadmin, http = clients(endpoint, root, (desired.app_user, desired.app_secret),
                                          desired.region, runner=LocalRunner())
        found = minio_setup.plan(hs3, hadmin, happ, desired, prefetch=http.prefetch)
        assert (found, http.commands) == (["mnemos-artifacts: versioning"] if drift else [], 1)
    minio_setup.apply_buckets(s3, desired)
    assert s3.get_bucket_versioning("mnemos-artifacts").status == ENABLED
    assert desired.app_policy in json.loads(admin.user_info(desired.app_user))["policyName"]
    # users and policies are kept in /data across a restart
    harness.sh(["docker", "restart", minio.name])
    end = time.time() + 60
    while minio.exec("mc ready local").returncode != 0:
        assert time.time() < end, minio.logs()
        time.sleep(0.5)
    endpoint = minio.url(9000)[len("http://"):]
    admin = MinioAdmin(endpoint=endpoint, credentials=StaticProvider(*root), secure=False)
    assert desired.app_policy in json.loads(admin.user_info(desired.app_user))["policyName"]


def test_vault_standin_cli_status_kv_get_and_unseal_as_vaults_cli(images, tmp_path):
    """The commands the host suite runs in the container where Vault publishes no port, with
    Vault's CLI's options, output and exit codes (command/status.go, kv_get.go,
    operator_unseal.go, format.go)."""
    c = vault_container(images, tmp_path).start(8200)
    try:
        url = c.url(8200)
        wait_for(url + "/v1/sys/seal-status")
        status, init = request(url + "/v1/sys/init", "PUT",
                               {"secret_shares": 1, "secret_threshold": 1})
        assert status == 200, init
        sealed = c.exec("vault status -format=json")
        assert sealed.returncode == 2 and json.loads(sealed.stdout)["sealed"] is True, sealed
        # no key and no terminal: refused, as password.Read refuses a pipe
        piped = c.exec(f"echo {init['keys_base64'][0]} | vault operator unseal")
        assert piped.returncode == 1 and "not a terminal" in piped.stderr, piped
        assert c.exec("vault operator unseal not-a-key").returncode == 2
        unsealed = c.exec(f"vault operator unseal -format=json {init['keys_base64'][0]}")
        assert unsealed.returncode == 0, unsealed.stderr
        assert json.loads(unsealed.stdout)["sealed"] is False
        answer = c.exec("vault status -format=json")
        assert answer.returncode == 0 and answer.stdout.startswith('{\n  "type": "shamir",'), answer
        assert json.loads(answer.stdout)["initialized"] is True
        table = c.exec("VAULT_FORMAT=table vault status").stdout
        assert any(line.split() == ["Sealed", "false"] for line in table.splitlines()), table
        assert c.exec("vault status -format=xml").returncode == 1
        assert c.exec("vault status -no-such-flag").returncode == 1
        # kv v2 at mnemos/, a secret, and a token that may read only it
        root = init["root_token"]
        assert request(url + "/v1/sys/mounts/mnemos", "POST",
                       {"type": "kv", "options": {"version": "2"}}, root)[0] == 204
        assert request(url + "/v1/mnemos/data/postgres", "POST",
                       {"data": {"password": "pw"}}, root)[0] == 200
        assert request(url + "/v1/sys/policy/reader", "PUT",
                       {"policy": 'path "mnemos/data/postgres" {\n  capabilities = ["read"]\n}'},
                       root)[0] in (200, 204)
        _, made = request(url + "/v1/auth/token/create", "POST", {"policies": ["reader"]}, root)
        token = made["auth"]["client_token"]
        got = c.exec(f"VAULT_TOKEN={token} vault kv get -format=json mnemos/postgres")
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["data"]["data"] == {"password": "pw"}
        field = c.exec(f"VAULT_TOKEN={token} vault kv get -field=password mnemos/postgres")
        assert field.stdout == "pw\n", field
        missing = c.exec(f"VAULT_TOKEN={root} vault kv get mnemos/nothing")
        assert missing.returncode == 2 and "No value found at mnemos/data/nothing" in missing.stderr
        refused = c.exec("VAULT_TOKEN=not-a-token vault kv get -format=json mnemos/postgres")
        assert refused.returncode == 2 and "permission denied" in refused.stderr, refused
        elsewhere = c.exec(f"VAULT_TOKEN={token} vault kv get -address=http://127.0.0.1:1 "
                           "mnemos/postgres")
        assert elsewhere.returncode == 2, elsewhere
    finally:
        c.remove()


def test_mc_standin_stat_with_mc_host_and_alias_as_mc(minio):
    """`mc stat` of a bucket through MC_HOST_<alias> and through `mc alias set` (minio/mc
    cmd/config.go: the environment's alias first, then $MC_CONFIG_DIR/config.json, 0600)."""
    from minio import Minio
    endpoint = minio.url(9000)[len("http://"):]
    Minio(endpoint, "mnemos", "standin-root-password", secure=False).make_bucket("stat-me")
    host = "MC_HOST_m=http://mnemos:standin-root-password@127.0.0.1:9000"
    assert minio.exec(f"{host} mc stat --quiet m/stat-me").returncode == 0
    gone = minio.exec(f"{host} mc stat --quiet m/not-there")
    assert gone.returncode == 1 and "Bucket `not-there` does not exist." in gone.stderr, gone
    stranger = minio.exec("MC_HOST_m=http://nobody:whatever-secret@127.0.0.1:9000 "
                          "mc stat m/stat-me")
    assert stranger.returncode == 1, stranger
    assert minio.exec("mc stat nowhere/stat-me").returncode == 1
    added = minio.exec("mc alias set here http://127.0.0.1:9000 mnemos standin-root-password "
                       "&& mc stat here/stat-me && stat -c %a \"$MC_CONFIG_DIR/config.json\"")
    assert added.returncode == 0 and added.stdout.split()[-1] == "600", added
    # a new container on the same /data (compose recreates it when its ports change) has the
    # bucket, as MinIO keeps buckets in /data
    harness.sh(["docker", "restart", minio.name])
    end = time.time() + 60
    while minio.exec("mc ready local").returncode != 0:
        assert time.time() < end, minio.logs()
        time.sleep(0.5)
    assert minio.exec(f"{host} mc stat --quiet m/stat-me").returncode == 0


def test_minio_standin_sends_each_answer_without_waiting_for_an_ack(minio):
    """MinIO is Go: Go's net package sets TCP_NODELAY on every connection it accepts
    (src/net/tcpsock.go, newTCPConn), so an answer's body follows its headers at once. The
    stand-in's Python front writes the two separately; with Nagle's algorithm on, the body waited
    for the client's delayed ACK, about 40 ms per request on a kept-alive connection (one curl
    process sending a batch, as mnemos_provision/host_http.py does). Timed inside the container,
    with the image's own curl: between an answer's first byte and its last, for each of 10
    requests on one connection."""
    timed = minio.exec("curl -q -s -o /dev/null -w '%{time_starttransfer} %{time_total}\\n' "
                       "'http://127.0.0.1:9000/minio/v2/metrics/cluster?n=[1-10]'")
    assert timed.returncode == 0, timed
    waits = [float(total) - float(first) for first, total in
             (line.split() for line in timed.stdout.splitlines())]
    assert len(waits) == 10, timed.stdout
    # with Nagle on, every answer after the first waited >= 40 ms (Linux's delayed-ACK minimum)
    assert sorted(waits)[1] < 0.02, waits
