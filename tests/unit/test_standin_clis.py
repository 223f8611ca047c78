"""
The client commands of the Vault and MinIO stand-ins (tests/standins/vault/vault_standin.py,
tests/standins/minio/minio_standin.py), run from their Python on this machine without Docker: the
host suite runs them through `docker compose exec` where a service publishes no port
(tests/host/test_checklist.py), so each must behave as upstream's CLI does for the options used:
Vault 1.21's command/*.go, minio/mc's cmd/*.go (docs/testing.md, "Vault and MinIO stand-ins").
The same commands inside the built images: tests/unit/test_standin_vault_minio.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
VAULT = ("import sys; sys.path[:0] = [{tests!r}, {standin!r}]; from vault_standin import main; "
         "sys.exit(main(sys.argv[1:]))").format(tests=str(REPO / "tests"),
                                                 standin=str(REPO / "tests/standins/vault"))
MC = ("import sys; sys.path[:0] = [{standin!r}]; from minio_standin import mc; "
      "sys.exit(mc(sys.argv[1:]))").format(standin=str(REPO / "tests/standins/minio"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, method="GET", body=None, token=""):
    req = urllib.request.Request(url, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"X-Vault-Token": token} if token else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def vault(tmp_path_factory):
    """The stand-in's server on a free port of 127.0.0.1, initialized and unsealed, kv v2 at
    mnemos/ with one secret and a token whose policy reads only it."""
    work = tmp_path_factory.mktemp("vault")
    port = free_port()
    (work / "config").mkdir()
    (work / "config/vault.hcl").write_text(
        f'disable_mlock = true\nstorage "file" {{\n  path = "{work}/file"\n}}\n'
        f'listener "tcp" {{\n  address     = "127.0.0.1:{port}"\n  tls_disable = true\n}}\n')
    server = subprocess.Popen([sys.executable, "-c", VAULT, "server", f"-config={work}/config"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                call(url + "/v1/sys/seal-status")
                break
            except OSError:
                time.sleep(0.1)
        init = call(url + "/v1/sys/init", "PUT", {"secret_shares": 1, "secret_threshold": 1})
        root = init["root_token"]
        yield {"url": url, "init": init, "root": root}
    finally:
        server.kill()
        server.wait()


def vault_cli(vault, *args: str, token: str = "", stdin: str = "", **env: str):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    environ.update({"VAULT_ADDR": vault["url"], **env})
    if token:
        environ["VAULT_TOKEN"] = token
    return subprocess.run([sys.executable, "-c", VAULT, *args], capture_output=True, text=True,
                          env=environ, input=stdin, timeout=60)


def test_vault_status_json_and_exit_codes_then_unseal(vault):
    sealed = vault_cli(vault, "status", "-format=json")
    assert sealed.returncode == 2, sealed
    status = json.loads(sealed.stdout)
    assert (status["initialized"], status["sealed"], status["t"]) == (True, True, 1)
    # the flag's other spellings, and VAULT_FORMAT, as Go's flag package and format.go read them
    assert json.loads(vault_cli(vault, "status", "-format", "json").stdout)["sealed"] is True
    assert json.loads(vault_cli(vault, "status", "--format=json").stdout)["sealed"] is True
    assert json.loads(vault_cli(vault, "status", VAULT_FORMAT="json").stdout)["sealed"] is True
    table = vault_cli(vault, "status").stdout.splitlines()
    assert ["Sealed", "true"] in [line.split() for line in table], table
    assert vault_cli(vault, "status", "-format=xml").returncode == 1
    unknown = vault_cli(vault, "status", "-formt=json")
    assert unknown.returncode == 1 and "flag provided but not defined: -formt" in unknown.stderr
    # piped key: refused (Vault reads it from a terminal only); the key as the argument
    key = vault["init"]["keys_base64"][0]
    piped = vault_cli(vault, "operator", "unseal", stdin=key + "\n")
    assert piped.returncode == 1 and "not a terminal" in piped.stderr
    assert vault_cli(vault, "operator", "unseal", "0" * 64).returncode == 2
    unsealed = vault_cli(vault, "operator", "unseal", "-format=json", key)
    assert unsealed.returncode == 0 and json.loads(unsealed.stdout)["sealed"] is False
    assert vault_cli(vault, "status").returncode == 0
    assert vault_cli(vault, "status", VAULT_ADDR="http://127.0.0.1:1").returncode == 1


def test_vault_kv_get_reads_through_the_preflight_with_the_token_of_vault_token(vault):
    url, root = vault["url"], vault["root"]
    if vault_cli(vault, "status").returncode == 2:
        vault_cli(vault, "operator", "unseal", vault["init"]["keys_base64"][0])
    call(url + "/v1/sys/mounts/mnemos", "POST", {"type": "kv", "options": {"version": "2"}}, root)
    call(url + "/v1/mnemos/data/postgres", "POST", {"data": {"password": "p<w"}}, root)
    call(url + "/v1/sys/policy/reader", "PUT",
         {"policy": 'path "mnemos/data/postgres" {\n  capabilities = ["read"]\n}'}, root)
    token = call(url + "/v1/auth/token/create", "POST", {"policies": ["reader"]},
                 root)["auth"]["client_token"]
    got = vault_cli(vault, "kv", "get", "-format=json", "mnemos/postgres", token=token)
    assert got.returncode == 0, got.stderr
    secret = json.loads(got.stdout)
    assert secret["data"]["data"] == {"password": "p<w"}
    assert '"p\\u003cw"' in got.stdout, "Go's encoder escapes <, > and &"
    assert list(secret)[:5] == ["request_id", "lease_id", "lease_duration", "renewable", "data"]
    by_mount = vault_cli(vault, "kv", "get", "-mount=mnemos", "-field=password", "postgres",
                         token=token)
    assert by_mount.stdout == "p<w\n", by_mount
    missing = vault_cli(vault, "kv", "get", "mnemos/nothing", token=root)
    assert missing.returncode == 2 and "No value found at mnemos/data/nothing" in missing.stderr
    # the token of VAULT_TOKEN is the one used: none, a stranger's, one without the path
    assert vault_cli(vault, "kv", "get", "mnemos/postgres").returncode == 2
    refused = vault_cli(vault, "kv", "get", "mnemos/postgres", token="hvs.not-a-token")
    assert refused.returncode == 2 and "permission denied" in refused.stderr
    other = call(url + "/v1/auth/token/create", "POST", {"policies": ["default"]},
                 root)["auth"]["client_token"]
    assert vault_cli(vault, "kv", "get", "mnemos/postgres", token=other).returncode == 2
    assert vault_cli(vault, "kv", "get", token=token).returncode == 1


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server (the MinIO stand-in's S3 behind its front) with one bucket."""
    from minio import Minio
    from moto.server import ThreadedMotoServer
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        Minio(f"127.0.0.1:{port}", "key-id", "secret/with+chars@", secure=False).make_bucket(
            "kept")
        yield port
    finally:
        server.stop()


def mc_cli(*args: str, **env: str):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MC_")}
    environ.update(env)
    return subprocess.run([sys.executable, "-c", MC, *args], capture_output=True, text=True,
                          env=environ, timeout=60)


def test_mc_stat_reads_its_alias_from_mc_host_then_from_the_config(s3, tmp_path):
    host = f"http://key-id:secret/with+chars@@127.0.0.1:{s3}"  # the last @ ends the secret
    ok = mc_cli("stat", "--quiet", "m/kept", MC_HOST_m=host, MC_CONFIG_DIR=str(tmp_path))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0].split() == ["Name", ":", "kept"]
    gone = mc_cli("stat", "m/gone", MC_HOST_m=host, MC_CONFIG_DIR=str(tmp_path))
    assert gone.returncode == 1
    assert gone.stderr.strip() == \
        "mc: <ERROR> Unable to stat `m/gone`. Bucket `gone` does not exist."
    assert mc_cli("stat", "m/kept", MC_CONFIG_DIR=str(tmp_path)).returncode == 1  # no alias m
    bad = mc_cli("stat", "m/kept", MC_HOST_m=f"ftp://127.0.0.1:{s3}/x",
                 MC_CONFIG_DIR=str(tmp_path))
    assert bad.returncode == 1 and "Invalid argument" in bad.stderr
    added = mc_cli("alias", "set", "here", f"http://127.0.0.1:{s3}", "key-id", "secret",
                   MC_CONFIG_DIR=str(tmp_path))
    assert added.returncode == 0 and added.stdout.strip() == "Added `here` successfully."
    config = tmp_path / "config.json"
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    aliases = json.loads(config.read_text())["aliases"]
    assert aliases["local"]["url"] == "http://localhost:9000" and aliases["here"]["secretKey"]
    assert mc_cli("stat", "here/kept", MC_CONFIG_DIR=str(tmp_path)).returncode == 0
    # the environment's alias wins over the file's
    assert mc_cli("stat", "here/kept", MC_CONFIG_DIR=str(tmp_path),
                  MC_HOST_here="http://k:s@127.0.0.1:1").returncode == 1
    assert mc_cli("alias", "remove", "here", MC_CONFIG_DIR=str(tmp_path)).returncode == 0
    assert mc_cli("stat", "here/kept", MC_CONFIG_DIR=str(tmp_path)).returncode == 1
