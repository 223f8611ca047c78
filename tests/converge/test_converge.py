"""
Convergence on a machine nobody provisioned: a fresh Debian 12 container (debootstrap minbase,
plus a user `dev`) in which the deploy installs and starts its own Docker Engine. pyinfra reaches
it with its @docker connector, the host suite with testinfra's docker:// backend.

The tests run in order on one machine: first run, host suite, second run with zero changes,
drift repaired exactly, .env restored byte for byte, no secret in any output.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
import urllib.parse

import pytest

from mnemos_provision import stack
from tests import harness
from tests.harness import assert_no_change, decoded_base64

pytestmark = pytest.mark.converge

ROOT = "/home/dev/mnemos"
STATE = "/home/dev/.config/mnemos/secrets.json"


def sha(machine, path: str) -> str:
    return machine.exec(f"sha256sum {path}").stdout.split()[0]


def secret_values(machine) -> list[str]:
    import json
    return list(json.loads(machine.exec(f"cat {STATE}").stdout).values())


def test_first_run_provisions_the_machine(provisioned):
    machine, first = provisioned
    assert first.returncode == 0, first.output[-4000:]
    assert not first.errors
    for op in ("Packages | Install the design's apt packages",
               "Docker Engine | Install the distribution's Docker Engine",
               "Docker Engine | Start Docker Engine",
               "MNEMOS tree | Lay out and render the MNEMOS tree at /home/dev/mnemos",
               "MNEMOS stack | Converge the compose stack (postgres, redis, prometheus, traefik)"):
        assert op in first.changed, f"{op} did not change anything:\n{first.rows}"
    # where things are, once, after the last operation (mnemos_provision/where.py)
    assert first.output.count("Where things are") == 1, first.output[-3000:]
    block = first.output[first.output.index("Where things are"):]
    assert "redis://127.0.0.1:6379" in block \
        and "dashboard http://127.0.0.1:8080/dashboard/" in block
    assert "/home/dev/mnemos/.env (0600)" in block and "make health" in block


def test_host_suite_passes_after_the_first_run(provisioned):
    machine, _ = provisioned
    suite = machine.host_suite()
    assert suite.returncode == 0, suite.stdout[-4000:]
    # the design's checklist: the item of each service that runs here passes; the others are
    # skipped, each naming its service
    import runpy

    from mnemos_provision.settings import validate
    ci = validate({k: v for k, v in runpy.run_path("group_data/ci.py").items()
                   if not k.startswith("__") and not hasattr(v, "__spec__")},
                  controller_path_exists=lambda p: True)
    for service, item in CHECKLIST_SERVICE_ITEMS.items():
        if ci.service_enabled(service):
            assert f"[x] {item}\n" in suite.stdout, f"{item}: not passed\n{suite.stdout[-4000:]}"
        else:
            assert f"[-] {item}  -- skipped: " in suite.stdout \
                and f"({service}) is not run on this host" in suite.stdout, \
                f"{item}: not skipped naming {service}\n{suite.stdout[-4000:]}"
    for item in ("Volumes created and data persisting across restarts",
                 "Can restart individual services",
                 "Can view logs with `make logs`",
                 "All services passing health checks (`make health` succeeds)"):
        assert f"[x] {item}\n" in suite.stdout, f"{item}: not passed\n{suite.stdout[-4000:]}"


# each service's item of the design's checklist: its record in the registry
CHECKLIST_SERVICE_ITEMS = {s.name: s.checklist for s in stack.REGISTRY}


def test_second_run_changes_nothing(provisioned):
    machine, _ = provisioned
    second = machine.deploy(flags=("-v", "--debug"))
    assert_no_change(second)
    assert "Where things are" not in second.output, "a no-op run printed the where block"
    # and costs a handful of round trips, whatever the number of operations and files: the host
    # snapshot (plan time) and one batch of every fact the operations read (plus the secret state
    # file, read outside pyinfra's fact output)
    assert second.facts_read == [
        "mnemos_provision.facts.server.HostSnapshot",
        "mnemos_provision.fact_batch.FactBatch",
    ], second.facts_read
    # every command counted (--debug): those two and the secret state's read (docs/performance.md)
    assert len(second.host_commands) == 3, "\n".join(second.host_commands)


def test_drift_is_repaired_exactly(provisioned):
    machine, _ = provisioned
    before = {p: sha(machine, p) for p in (STATE, f"{ROOT}/.env")}
    machine.exec(
        f"rm {ROOT}/config/loki/loki-config.yaml"
        f" && chmod 644 {ROOT}/.env"
        f" && sed -i 's/memory: 2G/memory: 3G/' {ROOT}/docker-compose.yml"
        f" && rm -r {ROOT}/docs/api"
        " && DEBIAN_FRONTEND=noninteractive apt-get remove -y -q jq >/dev/null"
    )
    third = machine.deploy()
    assert third.returncode == 0, third.output[-3000:]
    assert sorted(third.changed) == sorted([
        "Packages | Install the design's apt packages",
        "MNEMOS tree | Lay out and render the MNEMOS tree at /home/dev/mnemos",
    ]), third.rows
    assert machine.exec(f"stat -c %a {ROOT}/.env").stdout.strip() == "600"
    after = {p: sha(machine, p) for p in before}
    assert after == before, "a secret changed while repairing drift"
    suite = machine.host_suite()
    assert suite.returncode == 0, suite.stdout[-4000:]


def test_deleted_env_is_restored_byte_for_byte(provisioned):
    machine, _ = provisioned
    before = sha(machine, f"{ROOT}/.env")
    machine.exec(f"rm {ROOT}/.env")
    run = machine.deploy("deploys/tree.py")
    assert run.returncode == 0, run.output[-3000:]
    assert sha(machine, f"{ROOT}/.env") == before


def test_no_secret_in_pyinfra_output_even_with_diff(provisioned):
    machine, first = provisioned
    secrets = secret_values(machine)
    # drift .env and a config so that --diff has something to print
    machine.exec(f"sed -i 's/^LOG_LEVEL=.*/LOG_LEVEL=DEBUG/' {ROOT}/.env && "
                 f"echo '# drift' >> {ROOT}/docker/redis/redis.conf")
    from tests.harness import REPO, parse_results, sh
    # the most verbose output pyinfra has: every command, its output and every fact
    args = machine.pyinfra_args("deploys/tree.py") + ["--diff", "-vvv", "--debug"]
    result = sh(args, check=False, cwd=REPO, env=machine.env())
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "drift" in output, "--diff printed no diff at all (the check would prove nothing)"
    assert f"Will modify {ROOT}/.env (holds secrets: diff not shown)" in output
    for value in secrets:
        assert value not in output, "a secret was printed by pyinfra"
        assert value not in first.output, "a secret was printed by the first run"
    for path in (STATE, f"{ROOT}/.env"):  # as the deploy reads them: base64, 76 per line
        encoded = machine.exec(f"head -c 57 {path} | base64").stdout.strip()
        assert len(encoded) == 76 and encoded not in output, f"{path} was printed as read"
    assert parse_results(output)


# The second machine runs all nine services: PostgreSQL, Redis and Prometheus (Debian's real
# servers), Traefik (the real binary), and Vault, MinIO, Loki, Grafana and the OTel collector from
# their STAND-IN images (tests/standins/<name>: not HashiCorp's, MinIO's, Grafana's or the
# OpenTelemetry project's servers; see docs/testing.md), plus the Claude Code CLI from the npm
# registry in `tools`. They are enabled by the settings every run on it passes (--data) rather than
# by group_data/ci.py, so the first machine and the stack tier keep the CI profile.
ALL_SERVICES = list(stack.names())
ALL_SERVICES_DATA = (
    "compose_profiles=" + json.dumps(ALL_SERVICES),
    "images=" + json.dumps({s.name: s.standin.image for s in stack.REGISTRY if s.standin},
                           separators=(",", ":")),
    "tools=" + json.dumps(["claude-code"]),
)
# the checklist items no machine of the tier can pass: not WSL, not Docker Desktop
NOT_HERE = ("WSL Ubuntu 22.04 installed and configured",
            "Docker Desktop installed with WSL2 integration")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
KEYS = "/home/dev/.config/mnemos/vault-keys.json"
VAULT_OP = "Vault | Initialize, unseal and configure Vault"


@pytest.fixture(scope="module")
def second_machine():
    """A second fresh machine, all nine services (five of them stand-ins) and the Claude Code CLI
    enabled on every run."""
    from tests import harness
    machine = harness.FreshHost("mnemos-interrupted")
    machine.archive = harness.ensure_standin_archive(
        tuple(s.name for s in stack.REGISTRY if s.standin))
    machine.data = ALL_SERVICES_DATA
    # npm reaches its registry over HTTPS: the machine trusts what this one trusts (a TLS
    # inspecting proxy's CA, where there is one), added to the machine's store the Debian way
    # (/usr/local/share/ca-certificates, picked up when the deploy installs ca-certificates)
    trust = ("-v", f"{CA_BUNDLE}:/usr/local/share/ca-certificates/mnemos-test-host.crt:ro") \
        if os.path.exists(CA_BUNDLE) else ()
    machine.start(extra=trust)
    try:
        yield machine
    finally:
        if not os.environ.get("MNEMOS_KEEP_TEST_HOST"):
            machine.remove()


def vault_status(machine) -> str:
    """`vault status` in the Vault container: 0 unsealed, 2 sealed, 1 error."""
    return machine.exec("docker exec mnemos-vault vault status >/dev/null 2>&1; "
                        "echo $?").stdout.strip()


def checklist(output: str) -> list[tuple[str, str, str]]:
    """(mark, item, the rest) of each line of the checklist the host suite printed."""
    lines = output[output.index("Phase 1 completion checklist"):].splitlines()[1:]
    out = []
    for line in lines:
        m = re.match(r"^\[(x| |-|!)\] (.*?)(  -- .*)?$", line)
        if not m:
            break
        out.append((m.group(1), m.group(2), m.group(3) or ""))
    return out


def test_a_killed_first_run_is_finished_by_the_next_run(second_machine):
    """SIGKILL pyinfra part-way through a first run on the second fresh machine, then the whole
    bootstrap with all nine services, the host suite, and a run with zero changes."""
    machine = second_machine
    killed = machine.deploy_killed_after(25)
    assert "--> Results:" not in killed, "the run finished before it was killed: kill it earlier"
    after = machine.deploy()
    assert after.returncode == 0, after.output[-4000:]
    for op in (VAULT_OP,
               "MinIO | Buckets, versioning, lifecycle and the application user of MinIO",
               "Tools | Install the Claude Code CLI (@anthropic-ai/claude-code@2.0.14)"):
        assert op in after.changed, f"{op} did not run:\n{after.rows}"
    suite = machine.host_suite()
    # the checklist it got, for CI's log (-rA shows a passing test's output)
    print(suite.stdout[suite.stdout.index("Phase 1 completion checklist") - 40:]
          if "Phase 1 completion checklist" in suite.stdout else suite.stdout[-6000:])
    items = checklist(suite.stdout)
    # every item a machine can check passed, each service's by name; only WSL and Docker Desktop
    # are skipped (this is neither) and the user's own two are left to the user
    assert [i for m, i, _ in items if m == "-"] == list(NOT_HERE), items
    assert [i for m, i, _ in items if m == " "] == [
        "Claude Code CLI authenticated (run `claude` once and log in)",
        "Documentation reviewed and understood"], items
    passed = [i for m, i, _ in items if m == "x"]
    assert len(passed) == len(items) - 4, [(m, i, r) for m, i, r in items if m not in "x "]
    for item in [*CHECKLIST_SERVICE_ITEMS.values(),
                 "Claude Code CLI installed (authentication stays the user's)",
                 "Grafana accessible at http://localhost:3000",
                 "Traefik dashboard accessible at http://localhost:8080",
                 "MinIO console accessible at http://localhost:9001",
                 "Prometheus accessible at http://localhost:9090"]:
        assert item in passed, f"{item}: not passed"
    again = machine.deploy(flags=("--debug",))
    assert_no_change(again)
    # with every role enabled, a bounded cost (docs/performance.md): the snapshot, the secret
    # state (with Vault's keys file), and the fact batch, whose command also sends Vault's and
    # MinIO's reads (registered at plan time), whatever the number of secrets, policies and buckets
    assert len(again.host_commands) == 3, "\n".join(again.host_commands)
    batches = [line for line in again.output.splitlines() if "host_http: " in line]
    assert batches == [], batches  # neither plan sent a request of its own
    folded = [line for line in again.output.splitlines()
              if "fact_batch: " in line and " HTTP request(s) in one host command" in line]
    assert len(folded) == 1, folded
    # their answers and tokens are secrets: not printed at --debug, plain or base64
    keys = json.loads(machine.exec(f"cat {KEYS}").stdout)
    for value in [v for v in secret_values(machine) + keys["keys"] + [keys.get("root_token")]
                  if isinstance(v, str) and v]:
        assert value not in again.output, "a secret was printed by a --debug no-op"
        assert value.encode() not in decoded_base64(again.output), "printed base64"


def test_the_collector_forwards_logs_to_loki_and_metrics_to_prometheus(second_machine):
    """The stack working together: an OTLP/HTTP log and metric sent to the collector's published
    port; the log comes back from Loki's query_range (through the rendered otlp_http/loki
    exporter, over the stack's network), the metric from Prometheus (which scrapes the collector's
    prometheus exporter as the job otel-collector-exported)."""
    machine = second_machine
    mark = f"converge-{time.time_ns()}"
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": mark}}]}
    log = {"resourceLogs": [{"resource": resource, "scopeLogs": [{"logRecords": [{
        "timeUnixNano": str(time.time_ns()), "body": {"stringValue": f"line {mark}"}}]}]}]}
    metric = {"resourceMetrics": [{"resource": resource, "scopeMetrics": [{"metrics": [{
        "name": "mnemos.converge.probe", "gauge": {"dataPoints": [{"asDouble": 42.0}]}}]}]}]}
    for path, body in (("logs", log), ("metrics", metric)):
        code = machine.exec(f"curl -s -o /dev/null -w '%{{http_code}}' -H 'Content-Type: "
                            f"application/json' --data-binary {shlex.quote(json.dumps(body))} "
                            f"http://127.0.0.1:4318/v1/{path}").stdout
        assert code == "200", f"OTLP/HTTP {path}: {code}"
    query = urllib.parse.quote(f'{{service_name="{mark}"}}')
    found = metric_found = ""
    for _ in range(60):
        found = found if mark in found else machine.exec(
            f"curl -s 'http://127.0.0.1:3100/loki/api/v1/query_range?query={query}'",
            check=False).stdout
        metric_found = metric_found if mark in metric_found else machine.exec(
            "curl -s 'http://127.0.0.1:9090/api/v1/query?query=mnemos_converge_probe'",
            check=False).stdout
        if f"line {mark}" in found and mark in metric_found:
            break
        time.sleep(1)
    assert f"line {mark}" in found, f"the log sent to the collector is not in Loki: {found[:300]}"
    assert mark in metric_found and '"42"' in metric_found, \
        f"the metric sent to the collector is not in Prometheus: {metric_found[:300]}"


def test_vault_standin_is_unsealed_and_env_token_reads_only_its_secrets(second_machine):
    machine = second_machine
    assert vault_status(machine) == "0", "Vault is not unsealed after the converge"
    assert machine.exec(f"stat -c '%a %U' {KEYS}").stdout.split() == ["600", "dev"]
    # VAULT_TOKEN of .env, through a header file (never on a command line), from the host
    machine.exec(f"umask 077; printf 'X-Vault-Token: %s\n' "
                 f"\"$(sed -n 's/^VAULT_TOKEN=//p' {ROOT}/.env)\" "
                 "> /root/vault-header")
    read = machine.exec("curl -s -o /dev/null -w '%{http_code}' -H @/root/vault-header "
                        "http://127.0.0.1:8200/v1/mnemos/data/postgres").stdout
    write = machine.exec("curl -s -o /dev/null -w '%{http_code}' -H @/root/vault-header -X POST "
                         "-d '{\"data\":{\"x\":\"y\"}}' http://127.0.0.1:8200/v1/mnemos/data/postgres").stdout
    machine.exec("rm -f /root/vault-header")
    assert (read, write) == ("200", "403"), (read, write)


def test_a_restarted_vault_is_only_unsealed(second_machine):
    machine = second_machine
    machine.exec("docker restart mnemos-vault >/dev/null && for i in $(seq 1 60); do "
                 "[ \"$(docker inspect -f '{{.State.Health.Status}}' mnemos-vault)\" = healthy ] "
                 "&& break; "
                 "sleep 1; done")
    assert vault_status(machine) == "2", "a restarted Vault should come back sealed"
    run = machine.deploy(flags=("-v", "--debug"))
    assert run.returncode == 0, run.output[-3000:]
    assert run.changed == [VAULT_OP], run.rows
    assert "Vault: unsealed\n" in run.output \
        or run.output.rstrip().count("Vault: unsealed") == 1, run.output[-3000:]
    assert "Vault: unsealed," not in run.output, "more than unsealing was done"
    assert vault_status(machine) == "0"
    # the unseal keys and the root token went to Vault on the commands' input, never printed
    keys = json.loads(machine.exec(f"cat {KEYS}").stdout)
    for secret in [*keys["keys_base64"], *keys["keys"], keys["root_token"]]:
        assert secret not in run.output, "a Vault key or the root token is in pyinfra's output"


def test_a_run_killed_after_vault_initialized_still_unseals(second_machine):
    """Vault's data and the keys file removed (a new Vault); a run killed the moment the keys
    file appears on the host (written by the host command that sent sys/init, before the
    controller has the answer), then a run that unseals with those keys."""
    machine = second_machine
    machine.exec(f"docker rm -f -v mnemos-vault >/dev/null && docker volume rm mnemos_vault-data "
                 f">/dev/null && rm -f {KEYS}")
    machine.deploy_killed_when(f"[ -s {KEYS} ]")
    keys = json.loads(machine.exec(f"cat {KEYS}").stdout)
    assert "shares" not in keys, "the controller saved the keys before the kill: kill earlier"
    assert keys.get("keys_base64") and keys.get("root_token")
    assert machine.exec(f"stat -c %a {KEYS}").stdout.strip() == "600"
    init = machine.exec("curl -s http://127.0.0.1:8200/v1/sys/init").stdout
    assert json.loads(init) == {"initialized": True}
    assert vault_status(machine) == "2", "the killed run got as far as unsealing"
    run = machine.deploy()
    assert run.returncode == 0, run.output[-3000:]
    assert VAULT_OP in run.changed
    assert vault_status(machine) == "0"
    again = machine.deploy()
    assert_no_change(again)


def machine_settings(machine, *data: str):
    """The settings the machine's runs use: group_data/ci.py, then its --data items."""
    import runpy

    from mnemos_provision.settings import validate
    values = {k: v for k, v in runpy.run_path("group_data/ci.py").items()
              if not k.startswith("__") and not hasattr(v, "__spec__")}
    for item in (*machine.data, *data):
        key, _, value = item.partition("=")
        try:
            values[key] = json.loads(value)
        except json.JSONDecodeError:
            values[key] = value
    return validate(values, controller_path_exists=lambda p: True)


def test_nothing_published_every_service_item_passes(second_machine):
    """publish_ports = false: only the frontend services (Grafana, Traefik) publish; the host
    suite reaches the others with `docker compose exec` (their own CLIs) or, for images with no
    HTTP client (Loki, the collector), from a sibling that has one. Every service item of the
    enabled services must be [x]. Vault is recreated without its port, so it comes back sealed and
    the deploy leaves its set-up to the user (where.py): it is unsealed here as the user would,
    with `vault operator unseal` in its container. Then the machine converges back."""
    import time
    machine = second_machine
    closed_data = "publish_ports=false"
    settings = machine_settings(machine, closed_data)
    t0 = time.monotonic()
    closed = machine.deploy("deploys/bootstrap.py", closed_data)
    t_deploy = time.monotonic() - t0
    assert closed.returncode == 0, closed.output[-4000:]
    published = machine.exec("docker ps --format '{{.Names}} {{.Ports}}'").stdout
    for line in published.splitlines():
        name = line.split()[0]
        if not any(name == stack.service(s).container_name(settings.compose_project)
                   for s in settings.enabled_services if stack.service(s).frontend):
            assert "->" not in line, f"{name} still publishes a port: {line}"
    # the user's step where nothing is published: one unseal key at a time, read from the keys
    # file on the input of the machine's shell (the key is the argument of the CLI in the
    # container, upstream's way when no terminal is attached)
    if settings.service_enabled("vault") and vault_status(machine) == "2":
        from tests import harness
        keys = json.loads(machine.exec(f"cat {KEYS}").stdout)["keys_base64"]
        unseal = harness.sh(
            ["docker", "exec", "-i", machine.name, "sh", "-c",
             f"cd {ROOT} && while read -r k; do "
             "docker compose exec -T vault vault operator unseal \"$k\" </dev/null >/dev/null "
             "|| exit 1; docker compose exec -T vault vault status </dev/null >/dev/null "
             "&& exit 0; done; exit 2"],
            check=False, input="\n".join(keys) + "\n")
        assert unseal.returncode == 0, unseal.stdout + unseal.stderr
    t1 = time.monotonic()
    suite = machine.host_suite(f"--mnemos-data={closed_data}")
    t_suite = time.monotonic() - t1
    print(suite.stdout[suite.stdout.find("Phase 1 completion checklist") - 30:])
    for service in settings.enabled_services:
        item = CHECKLIST_SERVICE_ITEMS[service]
        assert f"[x] {item}\n" in suite.stdout, \
            f"{service}: {item} not passed with nothing published\n{suite.stdout[-5000:]}"
    t2 = time.monotonic()
    back = machine.deploy()
    t_back = time.monotonic() - t2
    assert back.returncode == 0, back.output[-4000:]
    if settings.service_enabled("vault"):
        assert vault_status(machine) == "0", "Vault is not unsealed after converging back"
    again = machine.deploy()
    assert_no_change(again)
    print(f"nothing published: deploy {t_deploy:.0f} s, host suite {t_suite:.0f} s, "
          f"converge back {t_back:.0f} s, then a no-op run")


def vault_kv(machine, path: str) -> dict:
    """kv mnemos/data/<path> read with .env's VAULT_TOKEN (a header file, never a command line)."""
    machine.exec(f"umask 077; printf 'X-Vault-Token: %s\n' "
                 f"\"$(sed -n 's/^VAULT_TOKEN=//p' {ROOT}/.env)\" > /root/vault-header")
    try:
        out = machine.exec("curl -s -H @/root/vault-header "
                           f"http://127.0.0.1:8200/v1/mnemos/data/{path}").stdout
    finally:
        machine.exec("rm -f /root/vault-header")
    return json.loads(out)["data"]["data"]


# python in the MinIO stand-in (its venv has the minio SDK): the bucket's objects listed (a GET,
# whose error has a body: a HEAD's has none, which the SDK reports as AccessDenied) as the given
# access key, the secret key read on stdin; prints "ok" or the S3 error code
_S3_AS_APP = (
    "import sys\n"
    "from minio import Minio\n"
    "from minio.error import S3Error\n"
    "key = sys.stdin.readline().strip()\n"
    "client = Minio('127.0.0.1:9000', access_key=sys.argv[1], secret_key=key, secure=False,"
    " region='us-east-1')\n"
    "try:\n"
    "    list(client.list_objects('mnemos-artifacts'))\n"
    "    print('ok')\n"
    "except S3Error as exc:\n"
    "    print(exc.code)\n")


def s3_status(machine, access_key: str, secret_key: str) -> str:
    """MinIO's answer to the application user with `secret_key` ("ok" or an S3 error code),
    asked inside the MinIO container; the key goes on stdin, never on a command line."""
    return harness.sh(["docker", "exec", "-i", machine.name, "docker", "exec", "-i",
                       "mnemos-minio", "/opt/minio-standin/bin/python", "-c", _S3_AS_APP,
                       access_key], input=secret_key + "\n", check=False).stdout.strip()


def grafana_status(machine, user: str, password: str) -> str:
    """Grafana's answer (the HTTP status) to /api/user with basic auth, asked inside its container
    with curl; the credentials go on stdin (curl's config), never on a command line."""
    return harness.sh(["docker", "exec", "-i", machine.name, "docker", "exec", "-i",
                       "mnemos-grafana", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                       "-K", "-", "http://127.0.0.1:3000/api/user"],
                      input=f'user = "{user}:{password}"\n', check=False).stdout.strip()


def started_at(machine) -> dict[str, str]:
    out = machine.exec("docker ps --format '{{.Names}}' | xargs docker inspect -f "
                       "'{{.Name}} {{.State.StartedAt}}'").stdout
    return dict(line.lstrip("/").split(" ", 1) for line in out.splitlines() if line.strip())


def test_rotation_killed_part_way_reaches_postgres_minio_grafana_vault_and_env(second_machine):
    """deploys/rotate.py (docs/rotation.md) with Vault, MinIO and Grafana (stand-ins: MinIO's
    verifies SigV4 signatures, Grafana's basic auth against grafana.db), killed once Grafana's
    database holds the new admin password (the record in the state, MinIO's container not yet
    recreated), then finished by a plain converge: PostgreSQL's password, the MinIO application
    user's key, MinIO's root password and Grafana's admin password rotated to the recorded values;
    the state, .env and Vault's kv agree; each old value refused and each new one accepted by the
    service; the application user and its bucket survive the new root password; exactly the
    containers whose configuration holds a rotated value are recreated; then the host suite and a
    converge with zero changes (the next test)."""
    from tests.stack.test_rotation import wait_for_orphans
    machine = second_machine
    old = json.loads(machine.exec(f"cat {STATE}").stdout)
    assert s3_status(machine, "mnemos-app", old["MINIO_APP_SECRET_KEY"]) == "ok"
    assert grafana_status(machine, "admin", old["GRAFANA_ADMIN_PASSWORD"]) == "200"
    before = started_at(machine)
    # the Grafana stand-in writes grafana.db only when a password changes (no login needed to
    # see it: Grafana locks a user out after failed logins)
    db = "docker exec mnemos-grafana md5sum /var/lib/grafana/grafana.db"
    killed = machine.deploy_killed_when(
        f"[ \"$({db})\" != {shlex.quote(machine.exec(db).stdout.strip())} ]", timeout=400,
        deploy="deploys/rotate.py", data=("rotate=postgres,minio-app,minio-root,grafana",))
    orphans = wait_for_orphans(machine)
    recorded = json.loads(machine.exec(f"cat {STATE}").stdout)
    run = machine.deploy()
    assert run.returncode == 0, f"still running after the kill: {orphans}\n{run.output[-4000:]}"
    new = json.loads(machine.exec(f"cat {STATE}").stdout)
    if "rotating:GRAFANA_ADMIN_PASSWORD" in recorded:  # else the kill came after the state
        for name in ("POSTGRES_PASSWORD", "MINIO_APP_SECRET_KEY", "MINIO_ROOT_PASSWORD",
                     "GRAFANA_ADMIN_PASSWORD"):
            assert new[name] == recorded["rotating:" + name], f"{name}: not the recorded value"
    output = killed + run.output
    env = dict(line.split("=", 1) for line in machine.exec(f"cat {ROOT}/.env").stdout.splitlines()
               if "=" in line and not line.startswith("#"))
    assert not [k for k in new if k.startswith("rotating:")]
    for name, variable in (("POSTGRES_PASSWORD", "POSTGRES_PASSWORD"),
                           ("MINIO_APP_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"),
                           ("MINIO_ROOT_PASSWORD", "MINIO_ROOT_PASSWORD"),
                           ("GRAFANA_ADMIN_PASSWORD", "GRAFANA_ADMIN_PASSWORD")):
        assert new[name] != old[name], f"{name} was not rotated"
        assert env[variable] == new[name], f".env's {variable} is not the state's {name}"
        assert new[name] not in output and old[name] not in output
    assert new["REDIS_PASSWORD"] == old["REDIS_PASSWORD"], "redis was not named"
    assert vault_kv(machine, "postgres")["password"] == new["POSTGRES_PASSWORD"]
    assert vault_kv(machine, "minio")["secret_key"] == new["MINIO_APP_SECRET_KEY"]
    assert vault_kv(machine, "minio")["root_password"] == new["MINIO_ROOT_PASSWORD"]
    assert vault_kv(machine, "grafana")["admin_password"] == new["GRAFANA_ADMIN_PASSWORD"]
    # the services themselves: the MinIO STAND-IN verifies SigV4 signatures, the Grafana
    # STAND-IN basic auth against its grafana.db (tests/standins)
    assert s3_status(machine, "mnemos-app", new["MINIO_APP_SECRET_KEY"]) == "ok"
    assert s3_status(machine, "mnemos-app", old["MINIO_APP_SECRET_KEY"]) == \
        "SignatureDoesNotMatch"
    assert s3_status(machine, "mnemos", new["MINIO_ROOT_PASSWORD"]) == "ok"
    assert s3_status(machine, "mnemos", old["MINIO_ROOT_PASSWORD"]) == "SignatureDoesNotMatch"
    assert grafana_status(machine, "admin", new["GRAFANA_ADMIN_PASSWORD"]) == "200"
    assert grafana_status(machine, "admin", old["GRAFANA_ADMIN_PASSWORD"]) == "401"
    after = started_at(machine)
    restarted = {name for name in after if after[name] != before.get(name)}
    assert restarted == {"mnemos-postgres", "mnemos-minio", "mnemos-grafana"}, (before, after)


def vault_answers(machine, token: str, path: str = "auth/token/lookup-self") -> str:
    """Vault's HTTP status for `token` on `path`, from the host (the header on stdin, never on a
    command line)."""
    return harness.sh(["docker", "exec", "-i", machine.name, "curl", "-s", "-o", "/dev/null",
                       "-w", "%{http_code}", "-H", "@-", f"http://127.0.0.1:8200/v1/{path}"],
                      input=f"X-Vault-Token: {token}\n", check=False).stdout.strip()


def test_rotating_the_vault_token_and_jwt_key_revokes_the_old_token(second_machine):
    """rotate=vault-token,jwt (docs/rotation.md) against the Vault stand-in: the new token (the
    state's and .env's) accepted by Vault and reads kv, the old one refused (403); kv
    mnemos/data/jwt holds the new JWT key; no value in the output. The host suite and a
    zero-change converge follow (the next test)."""
    machine = second_machine
    old = json.loads(machine.exec(f"cat {STATE}").stdout)
    assert vault_answers(machine, old["VAULT_TOKEN"]) == "200", "the machine did not start valid"
    run = machine.deploy("deploys/rotate.py", "rotate=vault-token,jwt")
    assert run.returncode == 0, run.output[-4000:]
    new = json.loads(machine.exec(f"cat {STATE}").stdout)
    env = dict(line.split("=", 1) for line in machine.exec(f"cat {ROOT}/.env").stdout.splitlines()
               if "=" in line and not line.startswith("#"))
    assert not [k for k in new if k.startswith("rotating:")]
    for name in ("VAULT_TOKEN", "JWT_SECRET_KEY"):  # no value in pytest's messages
        if new[name] == old[name] or env[name] != new[name]:
            pytest.fail(f"{name}: not rotated, or .env and the state disagree")
        if new[name] in run.output or old[name] in run.output:
            pytest.fail(f"{name}'s value is in the output")
    assert "the new VAULT_TOKEN accepted, the old one refused (403)" in run.output
    assert vault_answers(machine, new["VAULT_TOKEN"]) == "200", "Vault refuses the new token"
    assert vault_answers(machine, old["VAULT_TOKEN"]) == "403", "Vault accepts the old token"
    assert vault_answers(machine, new["VAULT_TOKEN"], "mnemos/data/postgres") == "200"
    assert vault_answers(machine, old["VAULT_TOKEN"], "mnemos/data/postgres") == "403"
    if vault_kv(machine, "jwt")["secret_key"] != new["JWT_SECRET_KEY"]:
        pytest.fail("Vault's kv mnemos/data/jwt does not hold the new JWT key")


def test_after_a_rotation_the_host_suite_passes_and_a_converge_changes_nothing(second_machine):
    machine = second_machine
    vault = machine.exec("docker inspect -f '{{.RestartCount}} {{.State.StartedAt}}' "
                         "mnemos-vault").stdout.strip()
    suite = machine.host_suite()
    logs = machine.exec("docker logs --tail 30 mnemos-vault 2>&1", check=False).stdout
    assert suite.returncode == 0, f"Vault: {vault}\n{logs}\n{suite.stdout[-4000:]}"
    again = machine.deploy()
    assert_no_change(again)


# Version tags of the Vault and MinIO STAND-INS, made inside the machine (`docker tag`): the
# downgrade guard reads versions from tags (operations/upgrade.py), so a stand-in under a newer and
# an older tag is what it sees of a real upgrade and a refused downgrade.
VAULT_NEW, VAULT_OLD = "mnemos-standin/vault:1.21.0", "mnemos-standin/vault:1.20.4"
MINIO_NEW = "mnemos-standin/minio:RELEASE.2025-10-15T17-29-55Z"
MINIO_OLD = "mnemos-standin/minio:RELEASE.2025-09-07T16-13-09Z"


def test_vault_and_minio_downgrades_are_refused_before_any_change(second_machine):
    """Vault and MinIO are moved to stand-in tags naming versions (a good bump, each recreated
    alone), then to older ones: the run is refused before anything is pulled or stopped (no
    container restarted, none recreated). Then the machine converges back to its stand-ins."""
    machine = second_machine
    if machine.exec("command -v docker", check=False).returncode != 0:  # run alone (-k)
        first = machine.deploy()
        assert first.returncode == 0, first.output[-4000:]
    standins = {s.name: s.standin.image for s in stack.REGISTRY if s.standin}
    vault, minio = standins["vault"], standins["minio"]
    machine.exec(f"docker tag {vault} {VAULT_NEW} && docker tag {vault} {VAULT_OLD} && "
                 f"docker tag {minio} {MINIO_NEW} && docker tag {minio} {MINIO_OLD}")

    def images(vault_image: str, minio_image: str) -> str:
        return "images=" + json.dumps({**standins, "vault": vault_image, "minio": minio_image},
                                      separators=(",", ":"))

    def started() -> dict[str, str]:
        out = machine.exec("docker inspect -f '{{.Name}} {{.State.StartedAt}} {{.Config.Image}}' "
                           "$(docker ps -aq --filter label=com.docker.compose.project=mnemos)"
                           ).stdout
        return dict(line.lstrip("/").split(" ", 1) for line in out.splitlines() if line.strip())

    took = {}
    try:
        t0 = time.monotonic()
        up = machine.deploy("deploys/bootstrap.py", images(VAULT_NEW, MINIO_NEW))
        took["the bump"] = time.monotonic() - t0
        assert up.returncode == 0, up.output[-4000:]
        before = started()
        assert before["mnemos-vault"].endswith(VAULT_NEW), before
        assert before["mnemos-minio"].endswith(MINIO_NEW), before
        t0 = time.monotonic()
        down = machine.deploy("deploys/bootstrap.py", images(VAULT_OLD, MINIO_OLD))
        took["the refused downgrade"] = time.monotonic() - t0
        assert down.returncode != 0, "a downgrade was accepted"
        assert (f'vault: images["vault"] is {VAULT_OLD}, older than {VAULT_NEW} which runs on '
                "its data; Vault does not support a downgrade") in down.output, down.output[-3000:]
        assert (f'minio: images["minio"] is {MINIO_OLD}, older than {MINIO_NEW} which runs on '
                "its data; MinIO does not support a downgrade") in down.output, down.output[-3000:]
        assert "Nothing was pulled or stopped" in down.output
        assert "cannot be pulled" not in down.output and "in parallel" not in down.output, \
            "a pull was tried"
        assert started() == before, "a container was restarted or recreated"
    finally:
        t0 = time.monotonic()
        back = machine.deploy()
        took["the run back"] = time.monotonic() - t0
        assert back.returncode == 0, back.output[-4000:]
        machine.exec(f"docker rmi {VAULT_NEW} {VAULT_OLD} {MINIO_NEW} {MINIO_OLD} >/dev/null",
                     check=False)
        assert vault_status(machine) == "0", "Vault is not unsealed after converging back"
        print("downgrades refused: " + ", ".join(f"{k} {v:.0f} s" for k, v in took.items()))
