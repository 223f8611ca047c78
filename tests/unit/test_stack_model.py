"""The service registry (mnemos_provision/stack.py) is the one settings, preflight and rendering
read: the settings' defaults and derived views are its."""

from __future__ import annotations

import pytest

from mnemos_provision import settings, stack
from mnemos_provision.settings import load_defaults, validate

pytestmark = pytest.mark.unit


def test_settings_use_the_stack_model():
    # settings.py declares none of the model's constants itself: it imports them from stack.py
    for name in ("SERVICES", "LAYERS", "NETWORKS"):
        assert getattr(settings, name) is getattr(stack, name), name
    defaults = load_defaults()
    assert defaults["images"] == stack.default_images()
    assert defaults["ports"] == stack.default_ports()


def test_each_record_is_whole():
    for s in stack.REGISTRY:
        assert s.layer in stack.LAYERS and set(s.networks) <= set(stack.NETWORKS), s.name
        assert s.label and s.checklist and s.where.exec_command, s.name
        assert s.image.rsplit("/", 1)[-1].count(":") == 1, s.name  # pinned
        for key, _ in s.where.published:
            assert key in {p.key for p in s.ports}, (s.name, key)
        if s.health.http:
            assert s.health.http[0] in {p.key for p in s.ports}, s.name
    assert len(set(stack.names())) == len(stack.REGISTRY)
    assert len(stack.port_services()) == sum(len(s.ports) for s in stack.REGISTRY)


def test_without_publish_ports_only_the_frontend_publishes():
    ports = stack.published_ports(validate({}).ports, ["data", "grafana"], publish_ports=False)
    assert ports == {"grafana": 3000}
    assert stack.network_names("mnemos") == {"mnemos_frontend", "mnemos_backend", "mnemos_data",
                                             "mnemos_hostaccess"}
