"""
A service is one record of the registry (mnemos_provision/stack.py), its templates and its
stand-in. A fake service added to the registry alone, with no template of its own, is rendered
into docker-compose.yml (the generic block), checked by scripts/health-check.sh, listed where
things are, and has its item in the host suite's checklist.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import warnings

import pytest
import yaml

from mnemos_provision import render, secret_store, stack
from mnemos_provision.settings import validate
from mnemos_provision.where import where_things_are
from tests.conftest import REPO

pytestmark = pytest.mark.unit

FAKE = stack.Service(
    "fake", "Fake service", "observability", ("data",), "example/fake:1.0",
    ports=(stack.Port("fake_http", 9999, 8080),),
    volume="fake-data", dirs=("config/fake", "data/fake"),
    health=stack.Health(http=("fake_http", "/healthz", "200")),
    where=stack.Where((("fake_http", "http://{host}:{port}"),), "docker compose exec fake true"),
    checklist="Fake container running and answering",
)


@pytest.fixture
def fake_registry(monkeypatch):
    monkeypatch.setattr(stack, "REGISTRY", stack.REGISTRY + (FAKE,))
    # its image and port are settings: a deployment names them (group_data), the registry gives
    # the defaults of the services it declared when the settings were
    return validate({"images": {"fake": FAKE.image}, "ports": {"fake_http": 9999}})


def rendered(settings) -> dict[str, bytes]:
    entries = render.render_tree(settings, "/home/dev", secret_store.complete({}, {}))
    return {e.path: e.content or b"" for e in entries}


def test_a_fake_service_is_rendered_into_compose(fake_registry):
    tree = rendered(fake_registry)
    compose = yaml.safe_load(tree["docker-compose.yml"])
    service = compose["services"]["fake"]
    assert service["image"] == "example/fake:1.0"
    assert service["container_name"] == "mnemos-fake"
    assert service["profiles"] == ["observability", "fake"]
    assert service["ports"] == ["127.0.0.1:9999:8080"]
    assert service["networks"] == ["data", "hostaccess"]
    assert "fake-data" in compose["volumes"]
    assert "data/fake" in tree and "config/fake" in tree


def test_a_fake_service_is_health_checked(fake_registry):
    script = rendered(fake_registry)["scripts/health-check.sh"].decode()
    assert "check_fake() {" in script
    assert "container_ok mnemos-fake" in script
    assert 'http_ok "http://127.0.0.1:9999/healthz"' in script
    assert 'report "Fake service"' in script


def test_a_fake_service_is_listed_where_things_are(fake_registry):
    text = where_things_are(fake_registry, "/home/dev/mnemos", "/k", "/s")
    assert "Fake service" in text and "http://127.0.0.1:9999" in text
    unpublished = validate({"images": {"fake": FAKE.image}, "ports": {"fake_http": 9999},
                            "publish_ports": False})
    text = where_things_are(unpublished, "/home/dev/mnemos", "/k", "/s")
    assert "cd /home/dev/mnemos && docker compose exec fake true" in text


def test_a_fake_service_is_checklisted(fake_registry):
    spec = importlib.util.spec_from_file_location(
        "checklist_of_the_host_suite", REPO / "tests" / "host" / "test_checklist.py")
    assert spec and spec.loader
    checklist = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():  # its marks (host, checklist) are the host suite's
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        spec.loader.exec_module(checklist)
    # every service of the registry has its item once: its own test's, or the generic test's
    assert checklist.generic_items() == [("fake", "Fake container running and answering")]
    assert checklist.dedicated_services() | {"fake"} == set(stack.names())


def test_a_fake_service_with_a_route_is_routed_by_the_rendered_file_routes(monkeypatch):
    """Its record's `route` alone gives it a Traefik router and service in dynamic/routes.yml (no
    Docker labels, no socket), to its container port by its compose name, without the excluded
    paths; only while it is enabled."""
    routed = dataclasses.replace(
        FAKE, networks=("backend",),
        route=stack.Route("fake.mnemos.local", "fake_http", ("/admin",)))
    monkeypatch.setattr(stack, "REGISTRY", stack.REGISTRY + (routed,))
    data = {"images": {"fake": FAKE.image}, "ports": {"fake_http": 9999}}
    http = yaml.safe_load(rendered(validate(data))["config/traefik/dynamic/routes.yml"])["http"]
    assert http["routers"]["fake"] == {
        "rule": "Host(`fake.mnemos.local`) && !PathPrefix(`/admin`)", "service": "fake"}
    assert http["services"]["fake"] == {"loadBalancer": {"servers": [{"url": "http://fake:8080"}]}}
    assert "traefik" in validate(data).enabled_services
    elsewhere = validate({**data, "compose_profiles": ["data", "traefik"]})
    http = yaml.safe_load(rendered(elsewhere)["config/traefik/dynamic/routes.yml"])["http"]
    assert "fake" not in http["routers"] and "fake" not in (http.get("services") or {})
    assert http["routers"]["dashboard"]["service"] == "api@internal"
