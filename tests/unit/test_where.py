"""
The "where things are" block (mnemos_provision/where.py): its text for each environment, checked
against the rendered tree (the ports the compose file publishes, the Traefik routers of its
dynamic/routes.yml), and when a real `pyinfra @local` run prints it: after a change, not after a
no-op, always with MNEMOS_WHERE=always.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from mnemos_provision import render, secret_store, stack
from mnemos_provision.settings import validate
from mnemos_provision.where import TITLE, traefik_routes, where_things_are
from tests.unit.test_render import ENVIRONMENTS, env_data, write_tree

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent.parent
ROOT, KEYS, STATE = ("/home/u/mnemos", "/home/u/.config/mnemos/vault-keys.json",
                     "/home/u/.config/mnemos/secrets.json")


def rendered_compose(settings, tmp_path: Path) -> dict:
    write_tree(tmp_path, render.render_tree(settings, "/home/u", secret_store.complete({}, {})))
    return yaml.safe_load((tmp_path / "docker-compose.yml").read_text())


def block(data: dict) -> str:
    return where_things_are(validate(data), ROOT, KEYS, STATE)


@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_every_published_port_of_the_compose_file_is_in_the_block_and_no_other(env, tmp_path):
    settings = validate(env_data(env))
    compose = rendered_compose(settings, tmp_path)
    text = where_things_are(settings, ROOT, KEYS, STATE)
    published = set()
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            address, host_port, _ = port.rsplit(":", 2)
            assert address == settings.bind_address
            published.add(int(host_port))
            assert f"{address}:{host_port}" in text, f"{name}'s {port} is not in the block:\n{text}"
    shown = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", text)}
    assert shown == published, text
    # a service that publishes nothing gets the command that reaches it
    for name in settings.enabled_services:
        if not any(settings.published_ports.get(k)
                   for k, s in stack.port_services().items() if s == name):
            assert f"docker compose exec {name}" in text or name == "otel-collector", (name, text)


@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_the_traefik_routes_are_the_rendered_file_routes(env, tmp_path):
    settings = validate(env_data(env))
    rendered_compose(settings, tmp_path)
    routes = yaml.safe_load((tmp_path / "config/traefik/dynamic/routes.yml").read_text())["http"]
    services = {name: re.fullmatch(r"http://([a-z0-9-]+):\d+",
                                   spec["loadBalancer"]["servers"][0]["url"]).group(1)
                for name, spec in (routes.get("services") or {}).items()}
    rules = {}
    for router in routes["routers"].values():
        m = re.fullmatch(r"Host\(`([^`]+)`\).*", router["rule"])
        target = "traefik" if router["service"] == "api@internal" else services[router["service"]]
        if m and "traefik" in settings.enabled_services:
            rules[target] = m.group(1)
    expected = {k: v for k, v in traefik_routes().items() if k in settings.enabled_services}
    if "traefik" not in settings.enabled_services:
        expected = {}
    assert rules == expected
    text = where_things_are(settings, ROOT, KEYS, STATE)
    for host_name in rules.values():
        assert host_name in text
    assert ("https://" in text) == (bool(rules) and settings.traefik_tls)


def test_no_secret_and_where_the_credentials_are():
    data = env_data("dev")
    secrets = secret_store.complete({}, {})
    text = where_things_are(validate(data), ROOT, KEYS, STATE)
    for value in dict(secrets).values():
        assert value not in text
    assert f"{ROOT}/.env (0600)" in text and STATE in text and KEYS in text
    assert "POSTGRES_PASSWORD" in text and "GRAFANA_ADMIN_PASSWORD" in text
    assert "run `claude`" in text and f"cd {ROOT} && make health" in text


def test_what_changes_with_the_settings():
    no_tools = block({**env_data("dev"), "tools": [], "bind_address": "0.0.0.0",
                      "compose_profiles": ["redis"]})
    assert "claude" not in no_tools
    assert "redis://127.0.0.1:6379" in no_tools and "every address" in no_tools
    assert "PostgreSQL" not in no_tools and KEYS not in no_tools  # no Vault: no keys file
    production = block(env_data("production"))
    assert KEYS not in production  # publish_ports = False: the deploy does not initialize Vault
    assert "docker compose exec vault vault operator init" in production
    assert "https://grafana.mnemos.local/" in production
    other_port = block({**env_data("dev"),
                        "ports": {**validate(env_data("dev")).ports, "traefik_http": 8081}})
    assert "http://grafana.mnemos.local:8081/" in other_port


# ------------------------------------------------------------------ printed by a real pyinfra run

DEPLOY = textwrap.dedent('''
    import os
    from types import SimpleNamespace
    from pyinfra.operations import server
    from mnemos_provision.settings import validate
    from mnemos_provision.where import announce
    from tests.unit.test_render import env_data

    settings = validate({**env_data("dev"), "compose_profiles": ["redis"]})
    if os.environ["CHANGE"] == "yes":
        server.shell(name="a change", commands=["true"])
    else:
        server.shell(name="nothing to do", commands=[])
    announce(SimpleNamespace(settings=settings, root="/r", vault_keys_path="/k",
                             secrets_state_path="/s"))
    server.shell(name="the last operation", commands=[])
''')


def pyinfra_run(tmp_path: Path, change: str,
                where: str | None = None) -> subprocess.CompletedProcess:
    deploy = tmp_path / "where_deploy.py"
    deploy.write_text(DEPLOY)
    env = {**os.environ, "CHANGE": change, "PYTHONPATH": str(REPO)}
    env.pop("MNEMOS_WHERE", None)
    if where:
        env["MNEMOS_WHERE"] = where
    pyinfra = Path(sys.executable).parent / "pyinfra"
    result = subprocess.run([str(pyinfra), "@local", str(deploy), "-y"], capture_output=True,
                            text=True, cwd=REPO, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_a_run_that_changed_something_prints_the_block_after_its_last_operation(tmp_path):
    out = pyinfra_run(tmp_path, "yes")
    text = out.stdout + out.stderr
    assert TITLE in text and "redis://127.0.0.1:6379" in text, text
    assert text.index(TITLE) > text.index("the last operation"), text


def test_a_no_op_run_stays_quiet_unless_asked(tmp_path):
    quiet = pyinfra_run(tmp_path, "no")
    assert TITLE not in quiet.stdout + quiet.stderr
    asked = pyinfra_run(tmp_path, "no", "always")
    assert TITLE in asked.stdout + asked.stderr
    never = pyinfra_run(tmp_path, "yes", "never")
    assert TITLE not in never.stdout + never.stderr
