"""
The rotation of Grafana's admin password and MinIO's root password (docs/rotation.md,
`rotate=grafana,minio-root`) against their STAND-INS run here as processes (tests/standins/grafana,
tests/standins/minio: not Grafana's or MinIO's servers; ports moved to free ones, nothing else
changed): the shell the deploy runs in the container to set Grafana's password
(rotation._GRAFANA_SET, Grafana 13's `grafana cli admin reset-admin-password --password-from-stdin`)
and the login checks (rotation.LOGIN_CHECKS: the new password accepted, the old one refused), and
the stand-ins' contract that makes "the old one refused" a real check: Grafana verifies basic auth
against the admin password of its grafana.db, which GF_SECURITY_ADMIN_PASSWORD no longer changes
after the first start; MinIO verifies AWS Signature Version 4 with the root password of its
environment at start and the users' secret keys of its IAM, which survive a new root password.
The same in the built images, on the converge tier's all-services machine
(tests/converge/test_converge.py).
"""

from __future__ import annotations

import base64
import io
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mnemos_provision.operations import rotation

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
STANDINS = REPO / "tests/standins"
GRAFANA = ("import sys; sys.path.insert(0, {d!r}); from grafana_standin import main; "
           "sys.exit(main(sys.argv[1:]))").format(d=str(STANDINS / "grafana"))
MINIO = ("import sys; sys.path.insert(0, {d!r}); import minio_standin as m; "
         "m.MOTO_PORT = int(sys.argv[1]); sys.exit(m.main(sys.argv[2:]))").format(
             d=str(STANDINS / "minio"))
MC = ("import sys; sys.path.insert(0, {d!r}); from minio_standin import mc; "
      "sys.exit(mc(sys.argv[1:]))").format(d=str(STANDINS / "minio"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(probe, timeout: float = 30) -> None:
    end = time.time() + timeout
    while True:
        try:
            if probe():
                return
        except OSError:
            pass
        assert time.time() < end, "the stand-in did not answer"
        time.sleep(0.1)


class Restartable:
    """A stand-in's server, one process at a time, started again with a new password in its
    environment `var` (as compose recreates the container with a new .env); `ready` is polled
    after each start."""

    def __init__(self, cmd: list[str], env: dict[str, str], var: str, ready) -> None:
        self.cmd, self.env, self.var, self.ready = cmd, env, var, ready
        self.proc: subprocess.Popen | None = None

    def start(self, password: str) -> None:
        self.stop()
        self.proc = subprocess.Popen(self.cmd, env={**self.env, self.var: password},
                                     stdout=subprocess.DEVNULL)
        wait_until(self.ready)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


def tool(directory: Path, name: str, code: str) -> None:
    """`name` on PATH: the stand-in's command, as the image has it."""
    path = directory / name
    path.write_text(f"#!/bin/sh\nexec {sys.executable} -c {shlex.quote(code)} \"$@\"\n")
    path.chmod(0o755)


def check(kind: str, port_from: int, port_to: int, user: str, new: str, old: str, env: dict):
    """rotation.check_password's shell (rotation._CHECK with LOGIN_CHECKS[kind]), here."""
    login = rotation.LOGIN_CHECKS[kind].replace(f"127.0.0.1:{port_from}", f"127.0.0.1:{port_to}")
    return subprocess.run(["sh", "-c", rotation._CHECK, "-", login, f"mnemos-{kind}"],
                          input=f"{new}\n{old}\n", text=True, capture_output=True,
                          env={**env, "USER_NAME": user}, timeout=60)


def status(url: str, user: str, password: str) -> int:
    req = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(
        f"{user}:{password}".encode()).decode()})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def grafana(tmp_path):
    """The Grafana stand-in's `grafana server` with the image's GF_PATHS_* layout under tmp_path,
    and its `grafana` on PATH for the CLI."""
    if not shutil.which("curl"):
        pytest.skip("curl is needed (the check runs curl, as in Grafana's image)")
    home, data, bin_dir = tmp_path / "home", tmp_path / "data", tmp_path / "bin"
    for d in (home / "conf", data, bin_dir):
        d.mkdir(parents=True)
    shutil.copy(STANDINS / "grafana/defaults.ini", home / "conf/defaults.ini")
    (tmp_path / "grafana.ini").write_text("[security]\ndisable_gravatar = true\n")
    tool(bin_dir, "grafana", GRAFANA)
    port = free_port()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GF_PATHS_HOME": str(home),
           "GF_PATHS_CONFIG": str(tmp_path / "grafana.ini"), "GF_PATHS_DATA": str(data),
           "GF_SERVER_HTTP_PORT": str(port), "GF_SECURITY_ADMIN_USER": "admin"}
    server = Restartable(
        ["grafana", "server", f"--homepath={home}", f"--config={tmp_path / 'grafana.ini'}",
         "--packaging=docker", f"cfg:default.paths.data={data}"],
        env, "GF_SECURITY_ADMIN_PASSWORD",
        lambda: status(f"http://127.0.0.1:{port}/api/health", "", "") == 200)
    try:
        yield {"start": server.start, "env": env, "port": port, "data": data}
    finally:
        server.stop()


def test_grafana_rotation_sets_the_password_in_grafana_db_and_the_old_one_is_refused(grafana):
    old, new = "old-admin-password-1", "new-admin-password-2"
    grafana["start"](old)
    port, env = grafana["port"], grafana["env"]
    user_api = f"http://127.0.0.1:{port}/api/user"
    assert status(user_api, "admin", old) == 200
    assert status(user_api, "admin", "not-the-password") == 401
    # before the rotation: the check fails, naming the service
    before = check("grafana", 3000, port, "admin", new, old, env)
    assert before.returncode == 1 and "mnemos-grafana refuses the new password" in before.stderr
    # the deploy's shell, its stdin the staged file (the new password); the password on no
    # command line
    run = subprocess.run(["sh", "-c", rotation._GRAFANA_SET], input=f"{new}\n", text=True,
                         capture_output=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    after = check("grafana", 3000, port, "admin", new, old, env)
    assert after.returncode == 0, after.stderr
    # again (a run killed after the change sets it again): the same result
    assert subprocess.run(["sh", "-c", rotation._GRAFANA_SET], input=f"{new}\n", text=True,
                          env=env, timeout=60).returncode == 0
    assert check("grafana", 3000, port, "admin", new, old, env).returncode == 0
    # a restart with the old GF_SECURITY_ADMIN_PASSWORD (read only at the first start) keeps the
    # password of grafana.db
    grafana["start"](old)
    assert check("grafana", 3000, port, "admin", new, old, env).returncode == 0
    # Grafana's CLI refuses a password under 4 characters, and the deploy's shell fails with it
    short = subprocess.run(["sh", "-c", rotation._GRAFANA_SET], input="abc\n", text=True,
                           capture_output=True, env=env, timeout=60)
    assert short.returncode == 1 and "reset-admin-password failed" in short.stderr
    direct = subprocess.run(["grafana", "cli", "admin", "reset-admin-password",
                             "--password-from-stdin"], input="abc\n", text=True,
                            capture_output=True, env=env, timeout=60)
    assert "new password is too short" in direct.stderr
    assert status(user_api, "admin", new) == 200


@pytest.fixture
def minio(tmp_path):
    """The MinIO stand-in's `minio server` on free ports, /data under tmp_path, `mc` on PATH."""
    bin_dir, data = tmp_path / "bin", tmp_path / "data"
    bin_dir.mkdir()
    data.mkdir()
    tool(bin_dir, "mc", MC)
    port, console, moto = free_port(), free_port(), free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("MC_", "MINIO_"))},
           "PATH": f"{bin_dir}:{os.environ['PATH']}", "MC_CONFIG_DIR": str(tmp_path / "mc"),
           "MINIO_ROOT_USER": "mnemos"}
    server = Restartable(
        [sys.executable, "-c", MINIO, str(moto), "server", str(data), "--address",
         f"127.0.0.1:{port}", "--console-address", f"127.0.0.1:{console}"],
        env, "MINIO_ROOT_PASSWORD",
        lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{port}/minio/health/live", timeout=2).status == 200)
    try:
        yield {"start": server.start, "env": env, "endpoint": f"127.0.0.1:{port}", "port": port}
    finally:
        server.stop()


def test_minio_standin_verifies_signatures_of_the_root_and_of_users(minio):
    from minio import Minio, MinioAdmin
    from minio.credentials import StaticProvider
    from minio.error import MinioAdminException, S3Error
    minio["start"]("root-password-1")
    endpoint = minio["endpoint"]
    root = Minio(endpoint, "mnemos", "root-password-1", secure=False)
    root.make_bucket("kept")
    with pytest.raises(S3Error) as wrong:
        Minio(endpoint, "mnemos", "root-password-0", secure=False).bucket_exists("kept")
    assert wrong.value.code == "SignatureDoesNotMatch"
    with pytest.raises(S3Error) as unknown:
        Minio(endpoint, "nobody", "whatever-secret", secure=False).bucket_exists("kept")
    assert unknown.value.code == "InvalidAccessKeyId"
    bad_admin = MinioAdmin(endpoint=endpoint,
                           credentials=StaticProvider("mnemos", "root-password-0"), secure=False)
    with pytest.raises(MinioAdminException) as refused:
        bad_admin.user_add("app", "app-secret-1")
    assert "SignatureDoesNotMatch" in str(refused.value)
    admin = MinioAdmin(endpoint=endpoint,
                       credentials=StaticProvider("mnemos", "root-password-1"), secure=False)
    admin.user_add("app", "app-secret-1")
    app = Minio(endpoint, "app", "app-secret-1", secure=False)
    assert app.bucket_exists("kept")
    app.put_object("kept", "a/b c.txt", io.BytesIO(b"data"), 4)  # a signed payload and a path
    assert app.get_object("kept", "a/b c.txt").read() == b"data"
    with pytest.raises(S3Error) as old_key:
        Minio(endpoint, "app", "app-secret-0", secure=False).bucket_exists("kept")
    assert old_key.value.code == "SignatureDoesNotMatch"
    # the user's key replaced (the minio-app rotation): the old one refused from then on
    admin.user_add("app", "app-secret-2")
    with pytest.raises(S3Error):
        app.bucket_exists("kept")
    assert Minio(endpoint, "app", "app-secret-2", secure=False).bucket_exists("kept")
    # curl --aws-sigv4 (the host suite's check, tests/host/test_checklist.py): no
    # x-amz-content-sha256 header, the empty payload's hash is signed; the key read from curl's
    # config on stdin
    for secret, code in (("app-secret-2", "200"), ("app-secret-1", "403")):
        asked = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-K", "-", "--aws-sigv4",
             "aws:amz:us-east-1:s3", f"http://{endpoint}/kept?location="],
            input=f'user = "app:{secret}"\n', text=True, capture_output=True, timeout=30)
        assert asked.stdout == code, (secret, asked.stdout, asked.stderr)
    # a presigned URL (the query form), and the same URL tampered with
    url = root.presigned_get_object("kept", "a/b c.txt")
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.read() == b"data"
    with pytest.raises(urllib.error.HTTPError) as tampered:
        urllib.request.urlopen(url.replace("a/b%20c.txt", "a/other.txt"), timeout=10)
    assert tampered.value.code == 403


def test_minio_root_rotation_is_a_restart_and_keeps_users_and_buckets(minio):
    from minio import Minio, MinioAdmin
    from minio.credentials import StaticProvider
    old, new = "root-password-old", "root-password-new"
    minio["start"](old)
    endpoint, env, port = minio["endpoint"], minio["env"], minio["port"]
    Minio(endpoint, "mnemos", old, secure=False).make_bucket("mnemos-artifacts")
    MinioAdmin(endpoint=endpoint, credentials=StaticProvider("mnemos", old),
               secure=False).user_add("app", "app-key-1")
    before = check("minio-root", 9000, port, "mnemos", new, old, env)
    assert before.returncode == 1 and "refuses the new password" in before.stderr
    minio["start"](new)  # the container recreated with the new .env
    after = check("minio-root", 9000, port, "mnemos", new, old, env)
    assert after.returncode == 0, after.stderr
    assert Minio(endpoint, "app", "app-key-1", secure=False).bucket_exists("mnemos-artifacts")
    assert MinioAdmin(endpoint=endpoint, credentials=StaticProvider("mnemos", new),
                      secure=False).user_info("app")
