"""The stack model (mnemos_provision/stack.py) is the one settings, preflight and rendering read."""

from __future__ import annotations

import pytest

from mnemos_provision import settings, stack
from mnemos_provision.settings import validate

pytestmark = pytest.mark.unit


def test_settings_use_the_stack_model():
    # settings.py declares none of the model's constants itself: it imports them from stack.py
    for name in ("SERVICES", "SERVICE_LAYERS", "LAYERS", "NETWORKS", "FRONTEND_SERVICES",
                 "PORT_SERVICES"):
        assert getattr(settings, name) is getattr(stack, name), name


@pytest.mark.parametrize("data", [
    {}, {"compose_profiles": ["data"]}, {"compose_profiles": ["redis", "grafana"]},
    {"publish_ports": False}, {"compose_profiles": ["gateway", "postgres"], "publish_ports": False},
])
def test_derived_views_are_the_model_s(data):
    s = validate(data)
    assert s.enabled_services == stack.enabled_services(s.compose_profiles)
    assert s.published_ports == stack.published_ports(s.ports, s.compose_profiles, s.publish_ports)


def test_without_publish_ports_only_the_frontend_publishes():
    ports = stack.published_ports(validate({}).ports, ["data", "grafana"], publish_ports=False)
    assert ports == {"grafana": 3000}
    assert stack.network_names("mnemos") == {"mnemos_frontend", "mnemos_backend", "mnemos_data",
                                             "mnemos_hostaccess"}
