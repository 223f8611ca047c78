"""
Fact tests as data, in pyinfra's own style: each tests/facts/<module>.<Fact>/<case>.json gives

    "arg":     the fact's arguments
    "command": the exact command it runs with them (left out for HostSnapshot's long script,
               which tests/unit/test_decisions.py runs for real)
    "output":  the lines that command printed
    "fact":    the value process() makes of them, as JSON (dataclasses as objects, sets as
               sorted lists, networks as strings)
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from importlib import import_module
from pathlib import Path

import pytest
from pyinfra.api import StringCommand

from tests.conftest import data_cases

pytestmark = pytest.mark.unit

HERE = Path(__file__).resolve().parent.parent / "facts"
FACT_MODULES = ("files", "apt", "docker", "server")


def to_json(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(to_json(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return str(value)
    return value


@pytest.mark.parametrize("fact_path,case", data_cases(HERE))
def test_fact(fact_path, case):
    spec = json.loads(case.read_text())
    module_name, class_name = fact_path.split(".")
    fact = getattr(import_module(f"mnemos_provision.facts.{module_name}"), class_name)()
    if "command" in spec:
        command = fact.command(**spec.get("arg", {}))
        raw = command.get_raw_value() if isinstance(command, StringCommand) else command
        assert raw == spec["command"]
    assert to_json(fact.process(spec["output"])) == spec["fact"]


def test_every_fact_has_fixtures():
    from pyinfra.api import FactBase
    facts = {f"{m}.{n}" for m in FACT_MODULES
             for n, v in vars(import_module(f"mnemos_provision.facts.{m}")).items()
             if isinstance(v, type) and issubclass(v, FactBase) and v is not FactBase
             and v.__module__ == f"mnemos_provision.facts.{m}"}
    covered = {p.name for p in HERE.iterdir() if p.is_dir() and any(p.glob("*.json"))}
    assert facts - covered == set(), f"facts without fixtures: {sorted(facts - covered)}"
