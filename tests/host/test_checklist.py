"""
The design's "Phase 1 Completion Checklist", one test per item a machine can check, in the
design's order and grouped as its list reads: environment, project files, services, verification,
access, operations. Each test is marked with the item's text (the run ends with the checklist and
each item's outcome, see conftest.py) and checks it the way a user would: through the port the
service publishes on bind_address, or with `docker compose exec` where nothing is published (the
image's own CLI; for images with no HTTP client, Loki's and the collector's, wget in a sibling
container on their network: Prometheus's, else Grafana's). An
item that does not apply to this host's settings (a service left out by compose_profiles, ports
not published, Docker Engine rather than Docker Desktop, not WSL) is skipped with the reason.

Secrets are read from the host's .env by the host's shell (sed) and handed to clients on stdin or
in a curl config read from stdin: never on a command line.
"""

from __future__ import annotations

import json
import shlex
import time

import pytest

from mnemos_provision import dotenv, render, stack
from mnemos_provision.stack import LAYERS

pytestmark = pytest.mark.host

# the design's Makefile targets (its .PHONY line) and its per-service pattern targets
DESIGN_MAKE_TARGETS = ["help", "init", "build", "up", "down", "restart", "logs", "clean", "test",
                       "health", "backup", "restore"]


# .env's variables: name -> (the title of its section, its comment), as .env.example documents them
DOTENV_DOCS = {var.name: (title, var.comment) for title, section in dotenv.SECTIONS
               for var in section}

# ------------------------------------------------------------------ helpers

def env_sh(name: str, root: str) -> str:
    """A shell expression that the host expands to .env's value of `name`."""
    return f"\"$(sed -n 's/^{name}=//p' {root}/.env)\""


def service_item(name: str):
    """The checklist mark of the test that checks service `name`: its item, from the registry."""
    return pytest.mark.checklist(stack.service(name).checklist, service=name)


def require(settings, service: str) -> None:
    if not settings.service_enabled(service):
        pytest.skip(f"{stack.service(service).label} ({service}) is not run on this host: "
                    f"compose_profiles={settings.compose_profiles} leaves it out")


def address(settings, key: str):
    """(host, port) of the published port `key` as a client on the host reaches it, or None."""
    port = settings.published_ports.get(key)
    if port is None:
        return None
    bind = settings.bind_address
    return ("127.0.0.1" if bind == "0.0.0.0" else bind), port


def run(host, command: str, timeout: int = 60):
    return host.run(f"timeout {timeout} sh -c {shlex.quote(command)}")


def compose(paths) -> str:
    return f"cd {paths['root']} && docker compose"


def curl(host, url: str, config: str = "", extra: str = "") -> tuple[int, str]:
    """(HTTP status, body) of a GET from the host; `config`: shell printing curl config lines
    (credentials), piped to curl -K - so that nothing secret is on a command line."""
    feed = f"{{ {config}; }} | " if config else ": | "
    result = run(host, f"{feed}curl -sS -m 10 -K - {extra} -w '\\n%{{http_code}}' "
                       f"{shlex.quote(url)}")
    body, _, code = result.stdout.rpartition("\n")
    assert code.strip().isdigit(), f"GET {url}: {result.stderr.strip() or result.stdout}"
    assert int(code) != 0, f"GET {url}: no answer ({result.stderr.strip()})"
    return int(code), body


def http_code(host, url: str) -> int:
    return curl(host, url)[0]


def post_json(host, url: str, payload: str) -> tuple[str, str]:
    """(HTTP status as curl prints it, curl's stderr) of a JSON POST from the host."""
    result = run(host, f"curl -sS -m 10 -o /dev/null -w '%{{http_code}}' "
                       f"-H 'Content-Type: application/json' "
                       f"--data-binary {shlex.quote(payload)} {shlex.quote(url)}")
    return result.stdout.strip(), result.stderr


def wait_healthy(host, paths, service: str, seconds: int = 90) -> str:
    state = ""
    for _ in range(seconds):
        state = host.run(f"{compose(paths)} ps --format '{{{{.State}}}} {{{{.Health}}}}' "
                         f"{service}").stdout.strip()
        if state in ("running healthy", "running"):
            return state
        time.sleep(1)
    return state


def env_values(host, paths) -> dict:
    return dict(line.split("=", 1)
                for line in host.file(f"{paths['root']}/.env").content_string.splitlines()
                if line and not line.startswith("#") and "=" in line)


# ------------------------------------------------------------------ environment

class TestEnvironment:
    @pytest.mark.checklist("WSL Ubuntu 22.04 installed and configured")
    def test_wsl_ubuntu_installed_and_configured(self, host, settings):
        release = host.file("/proc/sys/kernel/osrelease").content_string.strip()
        if "microsoft" not in release.lower():
            pytest.skip(f"not WSL (kernel {release}): the host is a "
                        f"{host.system_info.distribution} {host.system_info.release} machine")
        assert "Microsoft" not in release, f"WSL1 (kernel {release}): the design needs WSL2"
        info = host.system_info
        assert info.release in settings.supported_os.get(info.distribution, []), \
            f"{info.distribution} {info.release} is not in supported_os"

    @pytest.mark.checklist("Docker Desktop installed with WSL2 integration")
    def test_docker_desktop_installed_with_wsl2_integration(self, host, settings):
        os_name = host.run("docker info --format '{{.OperatingSystem}}'")
        assert os_name.rc == 0, f"docker does not answer: {os_name.stderr}"
        if "Docker Desktop" not in os_name.stdout:
            pytest.skip(f"Docker Engine on {os_name.stdout.strip()} (docker_source="
                        f"{settings.docker_source}), not Docker Desktop: the engine and Compose v2 "
                        "are checked by test_docker_engine_answers_with_compose_v2")
        # the docker CLI of this distribution talks to Desktop's engine: the WSL integration works
        assert host.run("docker compose version --short").rc == 0

    @pytest.mark.checklist("Claude Code CLI installed (authentication stays the user's)")
    def test_claude_code_cli_installed(self, host, settings, account):
        if "claude-code" not in settings.tools:
            pytest.skip(f"claude-code is not in tools={settings.tools}")
        result = host.run(f"su - {account['name']} -c 'claude --version'"
                          if host.user().name == "root" else "claude --version")
        assert result.rc == 0, f"claude --version: {result.stderr or result.stdout}"


# ------------------------------------------------------------------ project files

class TestProjectFiles:
    @pytest.mark.checklist("Project directory structure created")
    def test_project_directory_structure_created(self, host, paths, account, expected_tree):
        for entry in (e for e in expected_tree if e.kind == "directory"):
            d = host.file(f"{paths['root']}/{entry.path}")
            assert d.is_directory, f"{entry.path}/ is missing"
            assert d.user == account["name"], f"{entry.path}/ is owned by {d.user}"
        assert host.file(f"{paths['root']}/.git").is_directory, "the tree is not a git repository"

    @pytest.mark.checklist(".gitignore configured")
    def test_gitignore_configured(self, host, paths, secrets):
        root = paths["root"]
        # the suite may run as another user than the owner
        git = f"git -c safe.directory='*' -C {root}"
        assert host.run(f"{git} check-ignore -q .env").rc == 0, ".env is not ignored by git"
        would_add = host.run(f"{git} add -A --dry-run")
        assert would_add.rc == 0, would_add.stderr
        assert "'.env'" not in would_add.stdout
        for value in secrets.values():
            found = host.run(f"{git} grep --cached -l -F -e {value} -- .")
            assert found.stdout.strip() == "", f"a secret is in the git index: {found.stdout}"

    @pytest.mark.checklist("docker-compose.yml created with all infrastructure services")
    def test_compose_file_has_all_infrastructure_services(self, host, paths):
        # every service, enabled or not
        profiles = " ".join(f"--profile {layer}" for layer in LAYERS)
        result = host.run(f"{compose(paths)} {profiles} config --services")
        assert result.rc == 0, f"docker compose config: {result.stderr}"
        assert sorted(result.stdout.split()) == sorted(stack.names())

    @pytest.mark.checklist(".env.example created with all variables documented")
    def test_env_example_documents_every_variable(self, host, paths):
        example = host.file(f"{paths['root']}/.env.example")
        assert example.is_file, ".env.example is missing"
        lines = example.content_string.splitlines()
        names = [line.split("=", 1)[0] for line in lines
                 if "=" in line and not line.startswith("#")]
        assert names == dotenv.NAMES, f"variables differ: {sorted(set(dotenv.NAMES) ^ set(names))}"
        # each variable under its section's heading, its documentation (mnemos_provision/dotenv.py
        # and the registry's records) on the line right above it
        section, undocumented = "", []
        for number, line in enumerate(lines):
            rule = line.startswith("# ---")
            if rule and number + 2 < len(lines) and lines[number + 2].startswith("# ---"):
                section = lines[number + 1].removeprefix("# ")
            if "=" not in line or line.startswith("#"):
                continue
            name = line.split("=", 1)[0]
            title, comment = DOTENV_DOCS[name]
            above = lines[number - 1] if number else ""
            if section != title:
                undocumented.append(f"{name} is under {section!r}, not {title!r}")
            if comment and above != f"# {comment}":
                undocumented.append(f"{name}: the line above is {above!r}, not '# {comment}'")
        assert not undocumented, "; ".join(undocumented)

    @pytest.mark.checklist(".env file created with actual values (not committed)")
    def test_env_created_with_values_not_committed(self, host, paths):
        root = paths["root"]
        env = host.file(f"{root}/.env")
        assert env.is_file and env.mode == 0o600, \
            f".env: mode {oct(env.mode) if env.exists else 'missing'}"
        values = env_values(host, paths)
        assert list(values) == dotenv.NAMES
        for name in dotenv.SECRET_VARS:
            assert len(values[name]) >= 16, f"{name} is missing or short"
        tracked = host.run(f"git -c safe.directory='*' -C {root} ls-files .env")
        assert tracked.stdout.strip() == "", ".env is committed"

    @pytest.mark.checklist("Makefile created with all targets")
    def test_makefile_has_all_targets(self, host, paths, settings):
        service = settings.enabled_services[0] if settings.enabled_services else "postgres"
        targets = DESIGN_MAKE_TARGETS + [f"restart-{service}", f"logs-{service}"]
        # -n prints each target's commands without running them; a missing target fails
        result = host.run(f"cd {paths['root']} && make -n {' '.join(targets)}")
        assert result.rc == 0, f"make -n {' '.join(targets)}: {result.stderr}"

    @pytest.mark.checklist("Health check script created and executable")
    def test_health_check_script_created_and_executable(self, host, paths):
        script = host.file(f"{paths['root']}/scripts/health-check.sh")
        assert script.is_file, "scripts/health-check.sh is missing"
        assert script.mode & 0o111 == 0o111, f"scripts/health-check.sh has mode {oct(script.mode)}"
        syntax = host.run(f"sh -n {paths['root']}/scripts/health-check.sh")
        assert syntax.rc == 0, syntax.stderr

    @pytest.mark.checklist("`make init` executed successfully")
    def test_make_init_executed_successfully(self, host, paths, account):
        # what make init makes is there (checked first: a second make init would make it)
        for d in render.data_dirs():
            assert host.file(f"{paths['root']}/data/{d}").is_directory, f"data/{d} is missing"
        user = account["name"]
        command = f"cd {paths['root']} && make init"
        if host.user().name != user:  # run it as the tree's owner, as the user would
            command = f"su {user} -s /bin/sh -c {shlex.quote(command)}"
        result = host.run(command)
        assert result.rc == 0, result.stdout + result.stderr
        assert ".env already exists" in result.stdout


# ------------------------------------------------------------------ services

class TestServices:
    @service_item("postgres")
    def test_postgresql_running_and_accepting_connections(self, host, settings, paths):
        require(settings, "postgres")
        root = paths["root"]
        values = env_values(host, paths)
        user, dbs = values["POSTGRES_USER"], [values["POSTGRES_DB"], *render.DATABASES]
        published = address(settings, "postgres")
        if published:  # the published port answers the PostgreSQL protocol (an SSLRequest: N or S)
            h, p = published
            probe = host.run("timeout 10 bash -c " + shlex.quote(
                f"exec 3<>/dev/tcp/{h}/{p} && "
                f"printf '\\0\\0\\0\\10\\4\\322\\26\\57' >&3 && head -c 1 <&3"))
            assert probe.stdout in ("N", "S"), \
                f"{h}:{p} does not answer as PostgreSQL: {probe.stderr}"
        # every database with .env's user and password, over TCP (password auth, as the services
        # connect); the password goes from .env to psql on stdin
        script = ('read -r pw; for db in ' + " ".join(dbs) + '; do '
                  'PGPASSWORD="$pw" psql -h 127.0.0.1 '
                  f'-U {user} -d "$db" -tAc "select current_database()" || exit 1; done; '
                  f'PGPASSWORD=not-the-password psql -h 127.0.0.1 -U {user} -d {dbs[0]} '
                  '-tAc "select 1" 2>&1 && exit 3; exit 0')
        result = run(host, f"cd {root} && sed -n 's/^POSTGRES_PASSWORD=//p' .env | "
                           f"docker compose exec -T postgres sh -c {shlex.quote(script)}")
        assert result.rc != 3, "PostgreSQL accepted a wrong password"
        assert result.rc == 0, f"the .env credentials were refused: {result.stdout}{result.stderr}"
        assert result.stdout.split()[:len(dbs)] == dbs

    @service_item("redis")
    def test_redis_running_and_responding_to_ping(self, host, settings, paths):
        require(settings, "redis")
        root = paths["root"]
        published = address(settings, "redis")
        if published:  # RESP over the published port from the host's bash (no redis-cli needed)
            h, p = published
            script = (f"pw={env_sh('REDIS_PASSWORD', root)}; exec 3<>/dev/tcp/{h}/{p}; "
                      "printf 'PING\\r\\nAUTH %s\\r\\nPING\\r\\n' \"$pw\" >&3; head -n 3 <&3")
            result = host.run("timeout 10 bash -c " + shlex.quote(script))
            replies = [line.strip() for line in result.stdout.splitlines()]
            assert replies[:1] and replies[0].startswith("-NOAUTH"), \
                f"PING without the password: {replies}"
            assert replies[1:] == ["+OK", "+PONG"], \
                f"AUTH with .env's REDIS_PASSWORD, PING: {replies}"
        else:
            result = run(host, f"cd {root} && sed -n 's/^REDIS_PASSWORD=//p' .env | "
                               "docker compose exec -T "
                               "redis sh -c 'read -r pw; REDISCLI_AUTH=\"$pw\" redis-cli ping'")
            assert result.stdout.strip() == "PONG", f"{result.stdout}{result.stderr}"

    @service_item("vault")
    def test_vault_running_unsealed_and_token_reads_a_secret(self, host, settings, paths):
        """Server mode, not the design's dev mode (docs/deviations.md): unsealed, and .env's scoped
        token reads a service secret of the kv-v2 mount."""
        require(settings, "vault")
        root = paths["root"]
        mount = settings.vault_mount_path.strip("/")
        published = address(settings, "vault")
        if not published:  # the image's own vault CLI (VAULT_ADDR, VAULT_CACERT: the service's)
            script = ("read -r t; vault status -format=json; echo \"status=$?\"; "
                      f"VAULT_TOKEN=\"$t\" vault kv get -format=json {mount}/postgres; "
                      "echo \"kv=$?\"")
            result = run(host, f"cd {root} && sed -n 's/^VAULT_TOKEN=//p' .env | "
                               "docker compose exec -T "
                               f"vault sh -c {shlex.quote(script)}")
            status_out, _, rest = result.stdout.partition("\nstatus=")
            status_rc, _, kv_out = rest.partition("\n")
            kv_out, _, kv_rc = kv_out.rpartition("kv=")
            assert status_rc.strip() == "0", \
                f"vault status exited {status_rc.strip() or '?'}: {status_out}{result.stderr}"
            status = json.loads(status_out)
            assert status["initialized"] and not status["sealed"], f"Vault is {status}"
            assert kv_rc.strip() == "0", \
                f"the scoped token of .env could not read {mount}/postgres: {result.stderr}"
            assert json.loads(kv_out)["data"]["data"], "the secret is empty"
            return
        scheme = "https" if settings.vault_tls else "http"
        base = f"{scheme}://{published[0]}:{published[1]}"
        tls = "-k" if settings.vault_tls else ""
        code, body = curl(host, f"{base}/v1/sys/seal-status", extra=tls)
        assert code == 200, f"seal-status answered {code}: {body}"
        status = json.loads(body)
        assert status["initialized"] and not status["sealed"], f"Vault is {status}"
        token = f"printf 'header = \"X-Vault-Token: %s\"\\n' {env_sh('VAULT_TOKEN', root)}"
        code, body = curl(host, f"{base}/v1/{mount}/data/postgres", config=token, extra=tls)
        assert code == 200, \
            f"the scoped token of .env could not read {mount}/postgres: {code} {body}"
        assert json.loads(body)["data"]["data"], "the secret is empty"

    @service_item("minio")
    def test_minio_running_console_api_and_buckets(self, host, settings, paths):
        require(settings, "minio")
        root = paths["root"]
        api, console = address(settings, "minio_api"), address(settings, "minio_console")
        buckets = list(settings.minio_buckets)
        if not api:  # the image's own mc and curl, inside the container
            script = ("mc ready local >/dev/null || { echo 'mc ready local failed' >&2; exit 1; }; "
                      "curl -sf -o /dev/null http://127.0.0.1:9001/ "
                      "|| { echo 'the console does not answer' >&2; exit 1; }; "
                      "read -r k; read -r s; export MC_HOST_m=\"http://$k:$s@127.0.0.1:9000\"; "
                      + "; ".join(f"mc stat --quiet m/{b} >/dev/null || exit 1" for b in buckets))
            feed = (f"{{ sed -n 's/^AWS_ACCESS_KEY_ID=//p' {root}/.env; "
                    f"sed -n 's/^AWS_SECRET_ACCESS_KEY=//p' {root}/.env; }}")
            result = run(host, f"cd {root} && {feed} | "
                               f"docker compose exec -T minio sh -c {shlex.quote(script)}")
            assert result.rc == 0, \
                f"a bucket is missing or the app credentials fail: {result.stdout}{result.stderr}"
            return
        base = f"http://{api[0]}:{api[1]}"
        assert http_code(host, f"{base}/minio/health/live") == 200, "MinIO's API is not live"
        if console:
            assert http_code(host, f"http://{console[0]}:{console[1]}/") == 200, \
                "the console does not answer"
        creds = (f"printf 'user = \"%s:%s\"\\n' {env_sh('AWS_ACCESS_KEY_ID', root)} "
                 f"{env_sh('AWS_SECRET_ACCESS_KEY', root)}")
        for bucket in buckets:  # signed with the application user's keys of .env (AWS sigv4)
            code, body = curl(host, f"{base}/{bucket}?location=", config=creds,
                              extra="--aws-sigv4 aws:amz:us-east-1:s3")
            assert code == 200, f"bucket {bucket}: {code} {body[:300]}"

    @service_item("prometheus")
    def test_prometheus_running_and_scraping_targets(self, host, settings, paths):
        require(settings, "prometheus")
        import yaml
        config = yaml.safe_load(
            host.file(f"{paths['root']}/config/prometheus/prometheus.yml").content_string)
        jobs = sorted(c["job_name"] for c in config["scrape_configs"])
        targets = {}
        for _ in range(60):  # a target is "unknown" until its first scrape (scrape_interval)
            body = prometheus_get(host, settings, paths, "/api/v1/targets")
            targets = {t["labels"]["job"]: t for t in json.loads(body)["data"]["activeTargets"]}
            if all(t["health"] != "unknown" for t in targets.values()) \
                    and set(jobs) <= set(targets):
                break
            time.sleep(1)
        assert sorted(targets) == jobs, \
            f"configured jobs {jobs}, Prometheus reports {sorted(targets)}"
        down = {job: t["lastError"] or t["health"] for job, t in targets.items()
                if t["health"] != "up"}
        assert not down, f"targets not up: {down}"

    @service_item("loki")
    def test_loki_running_and_accepting_logs(self, host, settings, paths):
        require(settings, "loki")
        published = address(settings, "loki")
        mark = f"checklist-{time.time_ns()}"
        now = time.time_ns()
        push = json.dumps({"streams": [{"stream": {"job": "mnemos-checklist"},
                                        "values": [[str(now), mark]]}]})
        query = "%7Bjob%3D%22mnemos-checklist%22%7D"
        query_path = (f"/loki/api/v1/query_range?query={query}&start={now - 10**9}"
                      f"&end={now + 60 * 10**9}&limit=100")
        found = ""
        if published:
            base = f"http://{published[0]}:{published[1]}"
            code, err = post_json(host, f"{base}/loki/api/v1/push", push)
            assert code == "204", f"push answered {code} {err}"
            for _ in range(30):
                code, found = curl(host, base + query_path)
                if code == 200 and mark in found:
                    break
                time.sleep(1)
        else:  # Loki's image has no HTTP client: asked from a sibling on its network
            peer = sibling(settings, "loki")
            pushed = peer_http(host, paths, peer, "http://loki:3100/loki/api/v1/push", push)
            assert pushed.rc == 0, f"push from {peer} failed: {pushed.stderr}"
            for _ in range(30):
                asked = peer_http(host, paths, peer, "http://loki:3100" + query_path)
                found = asked.stdout
                if asked.rc == 0 and mark in found:
                    break
                time.sleep(1)
        assert mark in found, f"the pushed line did not come back: {found[:300]}"

    @service_item("grafana")
    def test_grafana_running_with_dashboards(self, host, settings, paths):
        require(settings, "grafana")
        root = paths["root"]
        h, p = address(settings, "grafana")
        base = f"http://{h}:{p}"
        creds = (f"printf 'user = \"%s:%s\"\\n' {env_sh('GRAFANA_ADMIN_USER', root)} "
                 f"{env_sh('GRAFANA_ADMIN_PASSWORD', root)}")
        code, body = curl(host, f"{base}/api/health")
        assert code == 200 and json.loads(body).get("database") == "ok", f"{code} {body}"
        code, body = curl(host, f"{base}/api/datasources", config=creds)
        assert code == 200, f"the admin of .env was refused: {code} {body}"
        sources = json.loads(body)
        assert sources, "no datasource is provisioned"
        for source in sources:
            ds = source["type"]
            if (ds == "loki" and not settings.service_enabled("loki")) or \
                    (ds == "prometheus" and not settings.service_enabled("prometheus")):
                continue  # its service is left out by compose_profiles
            code, body = curl(host, f"{base}/api/datasources/uid/{source['uid']}/health",
                              config=creds)
            assert code == 200, f"datasource {source['name']}: {code} {body}"
        code, body = curl(host, f"{base}/api/dashboards/uid/mnemos-stack-health", config=creds)
        assert code == 200, f"the provisioned dashboard is missing: {code} {body[:200]}"

    @service_item("traefik")
    def test_traefik_running_dashboard_and_routing(self, host, settings, paths):
        require(settings, "traefik")
        h, p = address(settings, "traefik_dashboard")
        code, body = curl(host, f"http://{h}:{p}/api/overview")
        assert code == 200, f"Traefik's API answered {code}: {body[:200]}"
        assert http_code(host, f"http://{h}:{p}/dashboard/") == 200, "the dashboard does not answer"
        # a request routed by its Host rule through the web entry point reaches its backend
        web_h, web_p = address(settings, "traefik_http")
        if settings.service_enabled("grafana"):
            code, body = curl(host, f"http://{web_h}:{web_p}/api/health",
                              extra="-H 'Host: grafana.mnemos.local'")
            assert code == 200 and '"database"' in body, f"routed to Grafana: {code} {body[:200]}"
        else:
            code, body = curl(host, f"http://{web_h}:{web_p}/api/overview",
                              extra="-H 'Host: traefik.mnemos.local'")
            assert code == 200, f"routed to the dashboard: {code} {body[:200]}"
        assert http_code(host, f"http://{web_h}:{web_p}/") == 404, \
            "a request matching no rule was routed"

    @service_item("otel-collector")
    def test_otel_collector_running_and_accepting_traces(self, host, settings, paths):
        require(settings, "otel-collector")
        published = address(settings, "otel_http")
        trace = json.dumps({"resourceSpans": [{"resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "mnemos-checklist"}}]},
            "scopeSpans": [{"spans": [{"traceId": "5b8efff798038103d269b633813fc60c",
                                       "spanId": "eee19b7ec3c1b174", "name": "checklist", "kind": 1,
                                       "startTimeUnixNano": str(time.time_ns() - 10**6),
                                       "endTimeUnixNano": str(time.time_ns())}]}]}]})
        if published:
            code, err = post_json(host, f"http://{published[0]}:{published[1]}/v1/traces", trace)
            assert code == "200", f"OTLP/HTTP trace answered {code} {err}"
        else:  # the collector's image is FROM scratch: asked from a sibling on its network
            peer = sibling(settings, "otel-collector")
            sent = peer_http(host, paths, peer, "http://otel-collector:4318/v1/traces", trace)
            assert sent.rc == 0, f"OTLP/HTTP trace from {peer} failed: {sent.stderr}"
        if settings.service_enabled("prometheus"):  # its own metrics reach Prometheus
            body = prometheus_get(host, settings, paths,
                                  "/api/v1/query?query=up%7Bjob%3D%22otel-collector%22%7D")
            values = [r["value"][1] for r in json.loads(body)["data"]["result"]]
            assert values == ["1"], f"up{{job=otel-collector}} in Prometheus: {values}"


    def test_service_running(self, host, settings, paths, service):
        """A service of the registry with no test of its own above (parametrized by
        pytest_generate_tests, marked with its record's checklist item): its container runs,
        healthy where its image has a healthcheck, and its HTTP health check answers where its
        port is published."""
        require(settings, service)
        state = wait_healthy(host, paths, service)
        assert state.split()[:1] == ["running"], f"{service} is not running: {state}"
        check = stack.service(service).health.http
        published = address(settings, check[0]) if check else None
        if check and published:
            code = http_code(host, f"http://{published[0]}:{published[1]}{check[1]}")
            assert str(code) in check[2].split("|"), f"{service}: {check[1]} answered {code}"


def dedicated_services() -> set[str]:
    """The services TestServices checks with a test of their own (marked with service_item)."""
    return {mark.kwargs["service"] for function in vars(TestServices).values()
            for mark in getattr(function, "pytestmark", [])
            if mark.name == "checklist" and "service" in mark.kwargs}


def generic_items() -> list[tuple[str, str]]:
    """(service, checklist item) of every service of the registry that test_service_running
    checks: those with no test of their own."""
    return [(s.name, s.checklist) for s in stack.REGISTRY if s.name not in dedicated_services()]


def pytest_generate_tests(metafunc):
    if metafunc.function.__name__ == "test_service_running":
        metafunc.parametrize("service", [pytest.param(name, marks=pytest.mark.checklist(item))
                                         for name, item in generic_items()])


# The services whose real images have an HTTP client (wget: Prometheus's busybox, Grafana's
# Alpine) and share a network with the services whose images have none (Loki: distroless; the
# collector: FROM scratch). Prometheus is on backend and data, Grafana on frontend and data.
WGET_SIBLINGS = ("prometheus", "grafana")


def sibling(settings, service: str) -> str:
    """An enabled service from which `service` is reached when it publishes no port."""
    peer = next((p for p in WGET_SIBLINGS if settings.service_enabled(p)), None)
    if peer is None:
        pytest.skip(f"publish_ports is false and neither Prometheus nor Grafana runs here: "
                    f"{stack.service(service).label}'s image has no HTTP client to ask it with")
    return peer


def peer_http(host, paths, peer: str, url: str, json_body: str | None = None):
    """GET (or a JSON POST of `json_body`) of `url` with wget inside the container of `peer`;
    wget exits non-zero on an HTTP error status. Options busybox's and GNU wget share."""
    post = (f"--header 'Content-Type: application/json' --post-data {shlex.quote(json_body)} "
            if json_body is not None else "")
    return run(host, f"{compose(paths)} exec -T {peer} wget -q -T 10 -O - {post}"
                     f"{shlex.quote(url)}")


def prometheus_get(host, settings, paths, path: str) -> str:
    published = address(settings, "prometheus")
    if published:
        code, body = curl(host, f"http://{published[0]}:{published[1]}{path}")
        assert code == 200, f"Prometheus {path}: {code} {body[:200]}"
        return body
    result = run(host, f"{compose(paths)} exec -T prometheus wget -qO- "
                       f"{shlex.quote('http://127.0.0.1:9090' + path)}")
    assert result.rc == 0, f"Prometheus {path}: {result.stderr}"
    return result.stdout


# ------------------------------------------------------------------ verification

def persistence_commands(host, paths, service: str, value: str) -> tuple[str, str, str]:
    """Shell commands that write `value` to `service` (a row of PostgreSQL, a key of Redis), read
    it back, and remove it."""
    c = compose(paths)
    if service == "postgres":
        psql = (f"{c} exec -T postgres psql -U {env_values(host, paths)['POSTGRES_USER']} -d "
                f"{env_values(host, paths)['POSTGRES_DB']}")
        return (f"{psql} -v ON_ERROR_STOP=1 -qc \"CREATE TABLE IF NOT EXISTS mnemos_checklist "
                f"(v text); INSERT INTO mnemos_checklist VALUES ('{value}')\"",
                f"{psql} -tAc \"SELECT v FROM mnemos_checklist\"",
                f"{psql} -qc \"DROP TABLE mnemos_checklist\"")
    cli = (f"cd {paths['root']} && sed -n 's/^REDIS_PASSWORD=//p' .env | "
           "docker compose exec -T redis sh -c "
           "'read -r pw; REDISCLI_AUTH=\"$pw\" redis-cli {}'")
    return (cli.format(f"SET mnemos_checklist {value}"), cli.format("GET mnemos_checklist"),
            cli.format("DEL mnemos_checklist"))


def data_service(settings) -> str:
    """PostgreSQL, else Redis: the service whose data the restart and persistence checks use;
    skips when the stack is not launched or neither runs."""
    if not settings.launch_stack:
        pytest.skip("launch_stack is false: no service runs")
    service = next((s for s in ("postgres", "redis") if settings.service_enabled(s)), None)
    if service is None:
        pytest.skip(f"neither PostgreSQL nor Redis runs here "
                    f"(compose_profiles={settings.compose_profiles})")
    return service


def started_at(host, settings, service: str) -> str:
    """When the container of `service` (its name from the registry) last started."""
    container = stack.service(service).container_name(settings.compose_project)
    return host.run(f"docker inspect -f '{{{{.State.StartedAt}}}}' {container}").stdout.strip()


@pytest.fixture(scope="module")
def restarted(host, settings, paths):
    """PostgreSQL (else Redis) restarted alone with `make restart-<service>` (= docker compose
    restart <service>) and waited for until healthy. Returns what the checks need; skips when
    neither service runs."""
    service = data_service(settings)
    root = paths["root"]
    before = started_at(host, settings, service)
    others = {s: started_at(host, settings, s) for s in settings.enabled_services if s != service}
    restart = run(host, f"cd {root} && make restart-{service}", timeout=120)
    state = wait_healthy(host, paths, service)
    return {"service": service, "restart": restart, "state": state, "before": before,
            "after": started_at(host, settings, service), "others": others}


@pytest.fixture(scope="module")
def recreated(host, settings, paths):
    """A row (PostgreSQL, else a key in Redis) written, then its service's container removed and
    made anew (`docker compose rm --stop --force`: what `down` does to it, the named volume kept;
    then `docker compose up -d --wait`): only the named volume carries the row across. Returns
    what the checks need; skips when neither service runs."""
    service = data_service(settings)
    c, value = compose(paths), f"kept-{time.time_ns()}"
    write, read, clean = persistence_commands(host, paths, service, value)
    model = json.loads(host.run(f"{c} config --format json").stdout)
    volumes = sorted((model["volumes"][m["source"]]["name"], m["target"])
                     for m in model["services"][service].get("volumes", [])
                     if m["type"] == "volume" and m.get("source"))
    container = f"{settings.compose_project}-{service}"
    inspect = f"docker inspect -f '{{{{.Id}}}} {{{{json .Mounts}}}}' {container}"
    written = run(host, write)
    assert written.rc == 0, f"writing to {service}: {written.stdout}{written.stderr}"
    before = host.run(inspect).stdout.split(" ", 1)[0]
    again = run(host, f"{c} rm --stop --force {service} && {c} up -d --wait {service}",
                timeout=180)
    after, _, mounts = host.run(inspect).stdout.strip().partition(" ")
    yield {"service": service, "value": value, "read": run(host, read), "again": again,
           "before": before, "after": after, "volumes": volumes,
           "mounted": sorted((m.get("Name"), m["Destination"]) for m in json.loads(mounts or "[]")
                             if m["Type"] == "volume")}
    run(host, clean)


class TestVerification:
    @pytest.mark.checklist("All services passing health checks (`make health` succeeds)")
    def test_all_services_pass_health_checks(self, host, settings, paths):
        if not settings.launch_stack:
            pytest.skip("launch_stack is false: the stack is not started by the deploy")
        for service in settings.enabled_services:
            state = host.run(f"{compose(paths)} ps --format '{{{{.State}}}} {{{{.Health}}}}' "
                             f"{service}")
            assert state.stdout.split()[:1] == ["running"], \
                f"{service} is not running: " \
                f"""{state.stdout.strip() or state.stderr.strip()
                     or 'docker compose ps lists no container'}"""
            if service != "otel-collector":  # its image can have no healthcheck (no shell)
                assert "healthy" in state.stdout.split(), f"{service}: {state.stdout}"
        check = host.run(f"cd {paths['root']} && make health")
        assert check.rc == 0, check.stdout + check.stderr
        assert "All services healthy" in check.stdout

    @pytest.mark.checklist("Network isolation verified (backend/data networks are internal)")
    def test_backend_and_data_networks_are_internal(self, host, settings, paths):
        if not settings.launch_stack:
            pytest.skip("launch_stack is false: no network is created")
        model = json.loads(host.run(f"{compose(paths)} config --format json").stdout)
        used = {n for s in model["services"].values() for n in s.get("networks", {})}
        checked = []
        for network in ("backend", "data"):
            if network not in used:
                continue  # no enabled service is on it: compose does not create it
            name = model["networks"][network]["name"]
            info = host.run(f"docker network inspect -f '{{{{.Internal}}}}' {name}")
            assert info.rc == 0, f"network {name} does not exist: {info.stderr}"
            assert info.stdout.strip() == "true", f"network {name} is not internal"
            checked.append(name)
        if not checked:
            pytest.skip(f"no enabled service ({settings.enabled_services}) is on backend or data")

    @pytest.mark.checklist("Volumes created and data persisting across restarts")
    def test_volumes_created_and_data_persists_across_restarts(self, host, settings, paths,
                                                                recreated):
        model = json.loads(host.run(f"{compose(paths)} config --format json").stdout)
        for name, service in model["services"].items():
            for mount in service.get("volumes", []):
                if mount["type"] == "volume" and mount.get("source"):  # named, not anonymous
                    volume = model["volumes"][mount["source"]]["name"]
                    assert host.run(f"docker volume inspect {volume}").rc == 0, \
                        f"volume {volume} is missing"
        service = recreated["service"]
        assert recreated["again"].rc == 0, recreated["again"].stdout + recreated["again"].stderr
        assert recreated["after"] and recreated["after"] != recreated["before"], \
            f"{service}'s container was not made anew ({recreated['before'][:12]})"
        assert recreated["volumes"], f"{service} keeps its data in no named volume"
        assert set(recreated["volumes"]) <= set(recreated["mounted"]), \
            f"the new {service} container mounts {recreated['mounted']}, " \
            f"not its named volumes {recreated['volumes']}"
        assert recreated["value"] in recreated["read"].stdout.split(), \
            f"what was written to {service} is gone with its container: " \
            f"{recreated['read'].stdout}{recreated['read'].stderr}"


# ------------------------------------------------------------------ access

def _page(host, settings, key: str, service: str, path: str, expect=(200,)):
    require(settings, service)
    published = address(settings, key)
    if not published:
        pytest.skip(f"publish_ports is false: {stack.service(service).label} publishes no port "
                    "on the host")
    url = f"http://{published[0]}:{published[1]}{path}"
    code = http_code(host, url)
    assert code in expect, f"{url} answered {code}"


class TestAccess:
    @pytest.mark.checklist("Grafana accessible at http://localhost:3000")
    def test_grafana_accessible(self, host, settings):
        _page(host, settings, "grafana", "grafana", "/login")

    @pytest.mark.checklist("Traefik dashboard accessible at http://localhost:8080")
    def test_traefik_dashboard_accessible(self, host, settings):
        _page(host, settings, "traefik_dashboard", "traefik", "/dashboard/")

    @pytest.mark.checklist("MinIO console accessible at http://localhost:9001")
    def test_minio_console_accessible(self, host, settings):
        _page(host, settings, "minio_console", "minio", "/")

    @pytest.mark.checklist("Prometheus accessible at http://localhost:9090")
    def test_prometheus_accessible(self, host, settings):
        _page(host, settings, "prometheus", "prometheus", "/-/ready")


# ------------------------------------------------------------------ operations

class TestOperations:
    @pytest.mark.checklist("Can view logs with `make logs`")
    def test_can_view_logs_with_make_logs(self, host, settings, paths):
        if not settings.enabled_services:
            pytest.skip("compose_profiles enables no service")
        service = settings.enabled_services[0]
        # LOGS_FOLLOW= prints the logs and returns instead of following them (-f)
        result = run(host, f"cd {paths['root']} && make logs-{service} LOGS_FOLLOW=", timeout=30)
        assert result.rc == 0, result.stderr
        lines = [line for line in result.stdout.splitlines()
                 if "|" in line and service in line.split("|", 1)[0]]
        assert lines, f"make logs-{service} printed no line of {service}:\n{result.stdout[-500:]}"
        everything = run(host, f"cd {paths['root']} && make logs LOGS_FOLLOW=", timeout=30)
        assert everything.rc == 0 and service in everything.stdout, everything.stderr

    @pytest.mark.checklist("Can restart individual services")
    def test_can_restart_individual_services(self, host, settings, paths, restarted):
        service = restarted["service"]
        assert restarted["restart"].rc == 0, \
            restarted["restart"].stdout + restarted["restart"].stderr
        assert restarted["after"] != restarted["before"], \
            f"make restart-{service} did not restart it"
        assert restarted["state"] in ("running healthy", "running"), \
            f"{service} after the restart: {restarted['state']}"
        now = {s: started_at(host, settings, s) for s in restarted["others"]}
        assert now == restarted["others"], "another service was restarted with it"
