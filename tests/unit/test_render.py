"""
The rendered tree, for every environment, checked by the real tools: Compose v2 (`docker compose
config`), promtool, shellcheck, make, a real PostgreSQL and a real Redis started on the rendered
configs, an HCL2 parser for vault.hcl, YAML and JSON parsers for the rest.
"""

from __future__ import annotations

import configparser
import http.server
import json
import os
import pwd
import re
import runpy
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from mnemos_provision import dotenv, render, secret_store
from mnemos_provision.settings import validate
from roles.tree import VAULT_CERT_SANS, openssl_self_signed
from tests.conftest import REPO, compose_binary, need, run

pytestmark = pytest.mark.unit

ENVIRONMENTS = {
    "dev": {},
    "staging": {},
    "production": {},
    # an 8 GB laptop: data services only
    "laptop": {"compose_profiles": ["data"]},
}


def env_data(env: str) -> dict:
    path = REPO / f"group_data/{env}.py"
    data = {}
    if path.exists():
        data = {k: v for k, v in runpy.run_path(str(path)).items() if not k.startswith("__")}
    data.update(ENVIRONMENTS[env])
    return data


def write_tree(root: Path, entries) -> None:
    for e in entries:
        p = root / e.path
        if e.kind == "directory":
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(e.content)
            p.chmod(int(e.mode, 8))


@pytest.fixture(scope="module", params=list(ENVIRONMENTS))
def tree(request, tmp_path_factory):
    settings = validate(env_data(request.param))
    secrets = secret_store.complete({}, {})
    root = tmp_path_factory.mktemp(request.param) / "mnemos"
    write_tree(root, render.render_tree(settings, "/home/dev", secrets))
    return {"root": root, "settings": settings, "secrets": secrets, "env": request.param}


def test_docker_compose_config_accepts_the_file(tree):
    result = run([compose_binary(), "config", "-q"], cwd=tree["root"])
    assert result.returncode == 0, result.stderr
    assert "obsolete" not in result.stderr


def test_compose_model(tree):
    result = run([compose_binary(), "config", "--format", "json"], cwd=tree["root"])
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    s = tree["settings"]
    assert sorted(model["services"]) == sorted(s.enabled_services)
    assert model["networks"]["backend"]["internal"] is True
    assert model["networks"]["data"]["internal"] is True
    for name, service in model["services"].items():
        assert service["image"] == s.images[name]
        assert ":latest" not in service["image"]
        for port in service.get("ports", []):
            assert port["host_ip"] == s.bind_address, f"{name} publishes on {port['host_ip']}"
        if name != "otel-collector":
            assert "healthcheck" in service, f"{name} has no healthcheck"
        assert service["logging"]["options"] == {"max-size": "10m", "max-file": "3"}
        assert service["labels"]["mnemos.service"] == name
    if "traefik" in model["services"]:
        # With a static config file, Traefik ignores TRAEFIK_* variables: the level is in
        # traefik.yml.
        environment = model["services"]["traefik"].get("environment") or {}
        assert not [k for k in environment if k.startswith("TRAEFIK_")], environment
    if s.publish_ports:
        assert model["services"]["postgres"]["ports"][0]["published"] == str(s.ports["postgres"])
    else:
        assert "ports" not in model["services"]["postgres"]


def test_compose_profiles_leave_out_services(tree):
    env = dict(os.environ, COMPOSE_PROFILES="postgres,redis")
    result = run([compose_binary(), "config", "--services"], cwd=tree["root"], env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == ["postgres", "redis"]


def test_promtool_accepts_config_and_rules(tree):
    promtool = need("promtool")
    root = tree["root"]
    result = run([promtool, "check", "config", "--syntax-only",
                  str(root / "config/prometheus/prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    for rules in (root / "config/prometheus/alerts").glob("*.yml"):
        result = run([promtool, "check", "rules", str(rules)])
        assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_accepts_every_script(tree):
    shellcheck = need("shellcheck")
    scripts = [p for p in tree["root"].rglob("*.sh")]
    assert scripts
    result = run([shellcheck, *map(str, scripts)])
    assert result.returncode == 0, result.stdout


def test_make_n_every_target(tree):
    need("make")
    root = tree["root"]
    text = (root / "Makefile").read_text()
    targets = re.findall(r"^([a-z][a-z0-9_-]*%?):", text, flags=re.M)
    assert "help" in targets and "backup" in targets
    for target in targets:
        name = target.replace("%", "postgres")
        result = run(["make", "-n", name], cwd=root)
        assert result.returncode == 0, f"make -n {name}: {result.stderr}"


def test_makefile_runs_help_without_env(tree):
    result = run(["make", "help"], cwd=tree["root"])
    assert result.returncode == 0, result.stderr
    assert "restart-%" in result.stdout and "\\033" not in result.stdout


def test_phase2_targets_fail_clearly(tree):
    result = run(["make", "migrate"], cwd=tree["root"])
    assert result.returncode != 0
    assert "Phase 1 does not deploy" in result.stderr


def test_yaml_and_json_parse(tree):
    root = tree["root"]
    files = [p for p in root.rglob("*") if p.suffix in (".yml", ".yaml", ".json")]
    assert len(files) >= 8
    for path in files:
        text = path.read_text()
        (json.loads if path.suffix == ".json" else yaml.safe_load)(text)


# Component types the rendered collector config may use, as the pinned collector
# (otel/opentelemetry-collector-contrib:0.158.0) names them: `type:` of each component's
# metadata.yaml (opentelemetry-collector at tag v0.158.0: otlp, batch, memory_limiter, debug,
# otlp_grpc, otlp_http; opentelemetry-collector-contrib: prometheus, health_check). The exporters'
# old names are only deprecated aliases there (`deprecated_type:`), logged as such at start-up.
COLLECTOR_TYPES = {
    "receivers": {"otlp"},
    "processors": {"batch", "memory_limiter"},
    "exporters": {"otlp_grpc", "otlp_http", "prometheus", "debug"},
    "extensions": {"health_check"},
}
DEPRECATED_EXPORTER_TYPES = {"otlp": "otlp_grpc", "otlphttp": "otlp_http"}  # since v0.144.0


def test_collector_config_uses_current_component_types_consistently(tree):
    config = yaml.safe_load((tree["root"] / "config/otel-collector.yaml").read_text())
    for kind, known in COLLECTOR_TYPES.items():
        for component in config.get(kind) or {}:
            ctype = component.split("/", 1)[0]
            if kind == "exporters" and ctype in DEPRECATED_EXPORTER_TYPES:
                pytest.fail(f"exporter {component}: {ctype!r} is a deprecated alias, the type is "
                            f"{DEPRECATED_EXPORTER_TYPES[ctype]!r}")
            assert ctype in known, \
                f"{kind} {component}: not a type this test knows of the pinned collector"
    service = config["service"]
    for extension in service.get("extensions", []):
        assert extension in config["extensions"], f"service.extensions: {extension} is not defined"
    for name, pipeline in service["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], \
                    f"pipeline {name}: {kind} {component} is not defined"


def vault_hcl(tree) -> dict:
    import hcl2
    with open(tree["root"] / "docker/vault/config/vault.hcl") as f:
        return hcl2.load(f)


def compose_model(tree) -> dict:
    result = run([compose_binary(), "config", "--format", "json"], cwd=tree["root"])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# CIS Docker Benchmark, per service as the compose file sets it (tests/stack/test_cis.py checks the
# running containers): the capabilities each image's entrypoint needs (None: the image's own set,
# its entrypoint runs as root and upstream shows no narrower one) and whether the root filesystem is
# read-only (docs/cis-docker-benchmark.md cites upstream for each).
HARDENING = {
    "postgres": (["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"], True),
    "redis": (["CHOWN", "DAC_OVERRIDE", "SETGID", "SETUID"], True),
    "vault": (None, False),
    "minio": (None, False),
    "otel-collector": ([], False),
    "prometheus": ([], True),
    "loki": ([], True),
    "grafana": ([], False),
    "traefik": ([], True),
}


def test_cis_every_service_has_a_pids_limit_and_its_capabilities_and_root_filesystem(tree):
    """5.29 (a PIDs limit), 5.4 (every capability dropped but those the entrypoint needs), 5.13
    (read-only root filesystem, with tmpfs where the process writes), 5.32 (no Docker socket)."""
    model = compose_model(tree)
    assert set(model["services"]) <= set(HARDENING)
    for name, service in model["services"].items():
        caps, read_only = HARDENING[name]
        assert int(service["deploy"]["resources"]["limits"]["pids"]) > 0, name
        if caps is None:
            assert "cap_drop" not in service, name
        else:
            assert service["cap_drop"] == ["ALL"], name
            assert sorted(service.get("cap_add", [])) == caps, name
        assert bool(service.get("read_only")) == read_only, name
        for volume in service.get("volumes", []):
            assert "docker.sock" not in volume["source"], f"{name} mounts {volume['source']}"
    if "postgres" in model["services"]:
        postgres = model["services"]["postgres"]
        # a process per connection, and the server's own
        assert int(postgres["deploy"]["resources"]["limits"]["pids"]) \
            == int(tree["settings"].dotenv_overrides.get("POSTGRES_MAX_CONNECTIONS", 100)) + 100
        # the socket and the entrypoint's here-documents
        assert sorted(t.split(":")[0] for t in postgres["tmpfs"]) == ["/tmp", "/var/run/postgresql"]


def test_cis_traefik_runs_as_a_user_on_unprivileged_ports(tree):
    """4.1 (not root) and 5.8 (no privileged port inside the container): published as 80 and 443
    all the same."""
    model = compose_model(tree)
    if "traefik" not in model["services"]:
        pytest.skip("traefik is not enabled here")
    traefik = model["services"]["traefik"]
    assert traefik["user"] == f"{render.TRAEFIK_UID}:{render.TRAEFIK_UID}"
    static = yaml.safe_load((tree["root"] / "config/traefik/traefik.yml").read_text())
    listening = {name: int(e["address"].rsplit(":", 1)[1])
                 for name, e in static["entryPoints"].items()}
    assert listening == {"web": 8000, "websecure": 8443, "traefik": 8080}
    published = {int(p["target"]): int(p["published"]) for p in traefik.get("ports", [])}
    s = tree["settings"]
    expected = {8000: s.ports.get("traefik_http"), 8443: s.ports.get("traefik_https"),
                8080: s.ports.get("traefik_dashboard")}
    assert published == {k: v for k, v in expected.items() if k in published}
    assert all(port >= 1024 for port in published), published


def test_vault_hcl_parses(tree):
    config = vault_hcl(tree)
    # python-hcl2 8 keeps the quotes of labels and strings
    listener = config["listener"][0]['"tcp"']
    assert config["storage"][0]['"file"']["path"].strip('"') == VAULT_STORAGE
    assert listener["address"].strip('"') == "0.0.0.0:8200"
    if tree["settings"].vault_tls:
        assert listener["tls_cert_file"].strip('"') == "/vault/tls/vault.crt"
    else:
        assert listener["tls_disable"] is True


# The hashicorp/vault image (Dockerfile and .release/docker/docker-entrypoint.sh of
# hashicorp/vault): the Dockerfile creates /vault/config, /vault/logs and /vault/file owned by
# vault (VOLUME /vault/logs and /vault/file); the entrypoint chowns exactly these three to vault
# when they are not its own, then drops to the vault user with su-exec. Any other path, such as a
# fresh named volume mounted elsewhere, stays root's and Vault cannot write its storage there.
VAULT_PREPARED = ("/vault/config", "/vault/logs", "/vault/file")
VAULT_STORAGE = "/vault/file"


def test_vault_storage_is_where_the_image_lets_vault_write_and_is_what_backups_copy(tree):
    if not tree["settings"].service_enabled("vault"):
        pytest.skip("vault is not enabled here")
    path = vault_hcl(tree)["storage"][0]['"file"']["path"].strip('"')
    assert path in VAULT_PREPARED, f"{path} is not a directory the image's entrypoint prepares"
    mounts = {m["target"]: m for m in compose_model(tree)["services"]["vault"]["volumes"]}
    assert mounts[path]["type"] == "volume" and mounts[path]["source"] == "vault-data"
    root = tree["root"]
    backup = (root / "scripts/backup/backup-all.sh").read_text()
    restore = (root / "scripts/backup/restore-all.sh").read_text()
    assert f'paused_copy "$PROJECT-vault" {path} ' in backup
    assert f'replace_dir "$PROJECT-vault" {path} ' in restore
    for name, text in (("docker-compose.yml", (root / "docker-compose.yml").read_text()),
                       ("backup-all.sh", backup), ("restore-all.sh", restore)):
        assert "/vault/data" not in text, f"{name} still names /vault/data"


def test_vault_config_and_container_agree_on_mlock(tree):
    """
    Vault refuses to start when it cannot lock its memory unless `disable_mlock` is set (hashicorp/
    vault vault/core.go, NewCore: mlock.LockMemory() fails -> "Failed to lock memory ... set the
    `disable_mlock` configuration option"). In the image, the vault user gets mlock only from the
    file capability the entrypoint puts on the binary (setcap cap_ipc_lock=+ep, then su-exec
    vault): that needs IPC_LOCK in the container's capabilities, and no-new-privileges makes exec
    ignore file capabilities, so with it Vault would exit at start.
    """
    if not tree["settings"].service_enabled("vault"):
        pytest.skip("vault is not enabled here")
    service = compose_model(tree)["services"]["vault"]
    options = [o.replace(" ", "").replace("=", ":") for o in service.get("security_opt", [])]
    no_new_privileges = "no-new-privileges:true" in options or "no-new-privileges" in options
    if vault_hcl(tree).get("disable_mlock") is not True:
        assert "IPC_LOCK" in service.get("cap_add", []), "mlock without IPC_LOCK"
        assert not no_new_privileges, "mlock through a file capability under no-new-privileges"
        assert "SKIP_SETCAP" not in (service.get("environment") or {})


def test_prometheus_can_scrape_vault_without_a_token(tree):
    """
    Vault serves /v1/sys/metrics without a token only on a listener with `telemetry {
    unauthenticated_metrics_access = true }` (hashicorp/vault http/handler.go registers
    handleMetricsUnauthenticated then, the token-checking handler otherwise), in Prometheus format
    with ?format=prometheus and a non-zero prometheus_retention_time (api-docs/system/metrics).
    The Prometheus job sends no token, so without it the target is down for good.
    """
    s = tree["settings"]
    if not (s.service_enabled("vault") and s.service_enabled("prometheus")):
        pytest.skip("vault or prometheus is not enabled here")
    config = vault_hcl(tree)
    listener = config["listener"][0]['"tcp"']
    assert listener["telemetry"][0]["unauthenticated_metrics_access"] is True
    retention = config["telemetry"][0]["prometheus_retention_time"].strip('"')
    assert retention not in ("0", "0s", "0h")
    prometheus = yaml.safe_load((tree["root"] / "config/prometheus/prometheus.yml").read_text())
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "vault")
    assert job["metrics_path"] == "/v1/sys/metrics" and job["params"] == {"format": ["prometheus"]}
    assert job["scheme"] == ("https" if s.vault_tls else "http")
    assert job["static_configs"] == [{"targets": ["vault:8200"]}]
    assert not {"authorization", "bearer_token", "bearer_token_file"} & set(job)


def test_env_and_example_have_the_same_keys_and_no_secret_in_the_example(tree):
    root = tree["root"]

    def keys(path):
        return [line.split("=", 1)[0] for line in path.read_text().splitlines()
                if line and not line.startswith("#")]

    assert keys(root / ".env") == keys(root / ".env.example") == dotenv.NAMES
    example = (root / ".env.example").read_text()
    for value in tree["secrets"].values():
        assert value not in example
    env = dict(line.split("=", 1) for line in (root / ".env").read_text().splitlines()
               if line and not line.startswith("#"))
    assert all(env[name] for name in dotenv.SECRET_VARS), "a secret is empty in .env"
    assert env["AWS_SECRET_ACCESS_KEY"] == tree["secrets"]["MINIO_APP_SECRET_KEY"]
    assert env["AWS_ACCESS_KEY_ID"] == tree["settings"].minio_app_user
    assert env["VAULT_TOKEN"] == tree["secrets"]["VAULT_TOKEN"]
    assert env["DATABASE_URL"] == (f"postgresql://mnemos:{tree['secrets']['POSTGRES_PASSWORD']}"
                                   "@postgres:5432/mnemos")
    assert "${" not in (root / ".env").read_text()
    assert oct((root / ".env").stat().st_mode & 0o777) == "0o600"


def test_no_secret_in_any_git_tracked_file(tree):
    root = tree["root"]
    run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    run(["git", "add", "-A"], cwd=root, check=True)
    tracked = run(["git", "ls-files"], cwd=root).stdout.split()
    assert ".env" not in tracked
    assert "data/postgres/.gitkeep" in tracked, ".gitkeep files must be committable"
    for name in tracked:
        text = (root / name).read_bytes().decode(errors="replace")
        for secret in tree["secrets"].values():
            assert secret not in text, f"a secret is in the tracked file {name}"


# ------------------------------------------------------------ real servers on the rendered configs

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


@pytest.fixture(scope="module")
def dev_tree(tmp_path_factory):
    settings = validate(env_data("dev"))
    secrets = secret_store.complete({}, {})
    # Under /tmp directly: the postgres account must reach these files (pytest's dirs are 0700).
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="mnemos-servers-", dir="/tmp"))
    root = base / "mnemos"
    write_tree(root, render.render_tree(settings, "/home/dev", secrets))
    base.chmod(0o755)
    yield {"root": root, "secrets": secrets, "base": base}
    import shutil
    shutil.rmtree(base, ignore_errors=True)


def test_postgresql_loads_the_rendered_config_and_init_db_creates_the_databases(dev_tree):
    bindir = Path("/usr/lib/postgresql")
    versions = sorted(bindir.glob("*/bin/postgres"))
    assert versions, "PostgreSQL server is not installed (scripts/test installs it)"
    pgbin = versions[-1].parent
    base, root = dev_tree["base"], dev_tree["root"]
    password = dev_tree["secrets"]["POSTGRES_PASSWORD"]
    data, sock = base / "pgdata", base / "pgsock"
    sock.mkdir()
    pwfile = base / "pw"
    pwfile.write_text(password)
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for p in (sock, pwfile):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(base, 0o777)
    result = run(as_postgres + [str(pgbin / "initdb"), "-D", str(data), "-U", "mnemos",
                                "--pwfile", str(pwfile), "-E", "UTF8", "--auth-local=trust"])
    assert result.returncode == 0, result.stderr
    port = free_port()
    server = subprocess.Popen(
        as_postgres + [str(pgbin / "postgres"), "-D", str(data),
                       "-c", f"config_file={root}/docker/postgres/postgresql.conf",
                       "-c", f"hba_file={root}/docker/postgres/pg_hba.conf",
                       "-c", f"port={port}", "-c", "listen_addresses=127.0.0.1",
                       "-c", f"unix_socket_directories={sock}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        env = dict(os.environ, PGPASSWORD=password)
        psql = ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "mnemos", "-d", "postgres",
                "-tAc", "select 1"]
        ready = wait_for(lambda: run(psql, env=env).returncode == 0)
        if not ready:
            server.terminate()
            pytest.fail("PostgreSQL did not accept the rendered config:\n"
                        + server.communicate()[0])
        run(as_postgres + [str(pgbin / "createdb"), "-h", str(sock), "-p", str(port),
                           "-U", "mnemos", "mnemos"], check=True)
        init_env = dict(os.environ, POSTGRES_USER="mnemos", POSTGRES_DB="mnemos",
                        PGHOST=str(sock), PGPORT=str(port))
        result = run(as_postgres + ["env", f"PGHOST={sock}", f"PGPORT={port}",
                                    "POSTGRES_USER=mnemos", "POSTGRES_DB=mnemos", "bash",
                                    f"{root}/docker/postgres/init-db.sh"],
                     env=init_env)
        assert result.returncode == 0, result.stderr
        dbs = run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "mnemos", "-d", "mnemos",
                   "-tAc", "select datname from pg_database order by 1"], env=env).stdout.split()
        assert {"mnemos_cortex", "mnemos_genome", "mnemos_synkron"} <= set(dbs)
        wrong = run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "mnemos", "-d", "mnemos",
                     "-tAc", "select 1"], env=dict(os.environ, PGPASSWORD="wrong"))
        assert wrong.returncode != 0, "pg_hba.conf lets a wrong password in over TCP"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_redis_runs_the_rendered_compose_command_with_the_password_off_every_command_line(dev_tree):
    """
    The redis service's own command, as `docker compose config` resolves it from the rendered
    compose file and .env, run by sh with the service's environment. A shim stands in for the
    image's docker-entrypoint.sh and for the config file's bind mount (the only two things of the
    container that do not exist here) and keeps redis-server on a free port of 127.0.0.1.
    Neither the arguments the entrypoint receives nor any process's command line while the server
    runs holds the password.
    """
    redis_server = need("redis-server")
    root, base = dev_tree["root"], dev_tree["base"]
    password = dev_tree["secrets"]["REDIS_PASSWORD"]
    model = json.loads(run([compose_binary(), "config", "--format", "json"], cwd=root,
                           check=True).stdout)
    service = model["services"]["redis"]
    assert service["environment"]["REDIS_PASSWORD"] == password, "the password does not reach redis"
    # `config` prints the model escaped for reuse ($$); the container receives it unescaped
    command = [arg.replace("$$", "$")
               for arg in (service.get("entrypoint") or []) + service["command"]]
    assert password not in " ".join(command), "the password is on the compose command line"
    data, shims = base / "redis", base / "shims"
    data.mkdir()
    shims.mkdir()
    port = free_port()
    entrypoint = shims / "docker-entrypoint.sh"
    entrypoint.write_text(
        "#!/bin/sh\n"
        "# the image's entrypoint execs its arguments; the config file is mounted from the tree;\n"
        "# redis-server reads stdin for a `-` that is its last argument\n"
        "[ \"$1\" = redis-server ] && [ \"$2\" = /usr/local/etc/redis/redis.conf ] || exit 64\n"
        "shift 2\n"
        f"printf '%s\\n' \"$@\" > {base}/entrypoint-argv\n"
        f"exec {redis_server} {root}/docker/redis/redis.conf --port {port} --bind 127.0.0.1 "
        f"--dir {data} \"$@\"\n")
    entrypoint.chmod(0o755)
    env = dict(os.environ, PATH=f"{shims}:{os.environ['PATH']}", REDIS_PASSWORD=password)
    log = base / "redis.log"
    # a session of its own: sh, the shim and redis-server end together
    server = subprocess.Popen(command, cwd=data, env=env, stdout=log.open("w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        auth = dict(os.environ, REDISCLI_AUTH=password)
        ok = wait_for(lambda: run(["redis-cli", "-p", str(port), "ping"],
                                  env=auth).stdout.strip() == "PONG",
                      timeout=15)
        if not ok:
            pytest.fail("the rendered redis command did not start a server that accepts the "
                        "password:\n" + log.read_text())
        denied = run(["redis-cli", "-p", str(port), "ping"])
        assert "NOAUTH" in denied.stdout + denied.stderr
        appendonly = run(["redis-cli", "-p", str(port), "config", "get", "appendonly"], env=auth)
        assert appendonly.stdout.split()[-1] == "yes"
        # what the container's entrypoint was started with (redis-server then overwrites its own
        # argv with a process title, which would hide a password from /proc on its own)
        assert password not in (base / "entrypoint-argv").read_text(), \
            "the password is on the entrypoint's command line"
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            assert password not in args, f"the password is on a command line: {cmdline.parent.name}"
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # a throwaway server: no shutdown save
        server.wait(timeout=30)


# ------------------------------------------------------------ the collector's health, from outside

FAKE_DOCKER = """#!{python}
# docker, as far as scripts/health-check.sh uses it: every container running (healthy where its
# image has a healthcheck; the collector's has none); `docker exec <peer> wget URL` asks the
# collector's stand-in health endpoint for http://otel-collector:13133/ (Docker's DNS name).
import os, sys, urllib.request
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
if args[0] == "inspect":
    print("running " if args[-1].endswith("-otel") else "running healthy")
elif args[0] == "exec" and args[2] == "wget":
    url = args[-1]
    if not url.startswith("http://otel-collector:13133/"):
        sys.exit(1)
    try:
        urllib.request.urlopen(url.replace("otel-collector:13133", os.environ["FAKE_OTEL_HEALTH"]),
                               timeout=5)
    except Exception:
        sys.exit(1)
elif args[0] == "exec" and "redis-cli" in " ".join(args):
    print("PONG")
"""


def fake_docker(tmp_path: Path) -> Path:
    """A directory holding FAKE_DOCKER as `docker`, to put first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER.format(python=sys.executable))
    (bin_dir / "docker").chmod(0o755)
    return bin_dir


class CollectorHealth(http.server.BaseHTTPRequestHandler):
    """The health_check extension: 200 while the collector is available, 503 otherwise."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("env", [e for e in ENVIRONMENTS
                                 if validate(env_data(e)).service_enabled("otel-collector")])
def test_make_health_asks_the_collectors_health_endpoint(env, tmp_path):
    """
    The collector's image is FROM scratch: nothing inside it can run a check. `make health`
    (scripts/health-check.sh) must ask its health_check extension from outside, through the
    published port where there is one, else from a container on one of its networks, and report
    it unhealthy when the extension does not answer 200, whatever the container's state.
    """
    need("make")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CollectorHealth)
    server.status = 200
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    data = env_data(env)
    data["ports"] = {**validate(data).ports, "otel_health": port}
    settings = validate(data)
    root = tmp_path / "mnemos"
    write_tree(root, render.render_tree(settings, "/home/dev", secret_store.complete({}, {})))
    bin_dir = fake_docker(tmp_path)
    calls = tmp_path / "docker-calls"
    environ = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_DOCKER_LOG=str(calls),
                   FAKE_OTEL_HEALTH=f"127.0.0.1:{port}")

    def collector_line() -> str:
        result = run(["make", "health"], cwd=root, env=environ)
        lines = [line for line in result.stdout.splitlines() if "Checking OTel collector" in line]
        assert len(lines) == 1, result.stdout + result.stderr
        return lines[0]

    try:
        line = collector_line()
        assert "Healthy" in line and "Unhealthy" not in line, line
        server.status = 503
        line = collector_line()
        assert "Unhealthy" in line and ("13133" in line or str(port) in line), line
    finally:
        server.shutdown()
        server.server_close()

    # A peer that asked must share a network with the collector and have wget (its own
    # healthcheck uses it).
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    services = compose["services"]
    for call in calls.read_text().splitlines():
        words = call.split()
        if words[0] == "exec" and words[2] == "wget":
            peer = words[1].removeprefix(settings.compose_project + "-")
            collector_networks = set(services["otel-collector"]["networks"])
            assert set(services[peer]["networks"]) & collector_networks, peer
            assert "wget" in services[peer]["healthcheck"]["test"], peer
    # Compose cannot wait for a collector health it cannot see: dependants wait for it started.
    for name, service in services.items():
        condition = (service.get("depends_on") or {}).get("otel-collector", {}).get("condition")
        assert condition in (None, "service_started"), f"{name} waits for the collector {condition}"


def test_grafana_secure_cookie_only_where_grafana_is_served_over_https_only(tree):
    """
    A secure cookie is not sent back over plain HTTP: with `cookie_secure = true` while Grafana is
    also reachable over HTTP (its published port, Traefik's web entry point without a redirect),
    an HTTP login cannot keep its session.
    """
    s = tree["settings"]
    if not s.service_enabled("grafana"):
        pytest.skip("Grafana is not enabled in this environment")
    ini = configparser.ConfigParser(comment_prefixes=(";", "#"), inline_comment_prefixes=None)
    ini.read_string((tree["root"] / "config/grafana/grafana.ini").read_text())
    secure = ini.getboolean("security", "cookie_secure")
    compose = yaml.safe_load((tree["root"] / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    plain_http = bool(grafana.get("ports"))  # Grafana's own port speaks HTTP only
    if "traefik" in compose["services"]:
        static = yaml.safe_load((tree["root"] / "config/traefik/traefik.yml").read_text())
        web = static["entryPoints"].get("web", {})
        redirects = bool(((web.get("http") or {}).get("redirections") or {}).get("entryPoint"))
        plain_http = plain_http or not redirects
    assert not (secure and plain_http), (
        f"{tree['env']}: cookie_secure is on while Grafana is also served over plain HTTP")


class VaultHealth(http.server.BaseHTTPRequestHandler):
    """Vault's /v1/sys/health on a TLS-only listener: 200 (initialized, unsealed, active)."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.server.asked.append(self.path)
        self.send_response(200 if self.path == "/v1/sys/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_make_health_asks_vault_over_https_with_the_trees_ca_and_no_proxy(tmp_path):
    """
    With vault_tls on, Vault's listener speaks TLS only: `make health` must ask it over https,
    verifying the certificate the deploy made (config/vault/tls/vault.crt) by one of its names,
    and neither a proxy of the environment nor ~/.curlrc may change where it asks.
    """
    need("make")
    need("openssl")
    root = tmp_path / "mnemos"
    tls = root / "config/vault/tls"
    tls.mkdir(parents=True)
    # the certificate as the deploy makes it (roles/tree.py)
    result = run(["sh", "-c", openssl_self_signed(str(tls / "vault.crt"), str(tls / "vault.key"),
                                                  "vault", VAULT_CERT_SANS)])
    assert result.returncode == 0, result.stderr
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls / "vault.crt", tls / "vault.key")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), VaultHealth)
    server.asked = []
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    data = env_data("dev")
    data.update(vault_tls=True, ports={**validate(data).ports, "vault": port})
    settings = validate(data)
    write_tree(root, render.render_tree(settings, "/home/dev", secret_store.complete({}, {})))
    bin_dir = fake_docker(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".curlrc").write_text("proxy = http://127.0.0.1:9\n")  # nothing listens there
    dead_proxy = "http://127.0.0.1:9"
    environ = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", HOME=str(home),
                   FAKE_DOCKER_LOG=str(tmp_path / "docker-calls"), http_proxy=dead_proxy,
                   https_proxy=dead_proxy, HTTPS_PROXY=dead_proxy, ALL_PROXY=dead_proxy,
                   all_proxy=dead_proxy)
    environ.pop("NO_PROXY", None)
    environ.pop("no_proxy", None)
    try:
        result = run(["make", "health"], cwd=root, env=environ)
        lines = [line for line in result.stdout.splitlines() if "Checking Vault" in line]
        assert len(lines) == 1, result.stdout + result.stderr
        assert "Healthy" in lines[0] and "Unhealthy" not in lines[0], lines[0]
        assert server.asked == ["/v1/sys/health"]
    finally:
        server.shutdown()
        server.server_close()
