"""
Operation tests as data, in pyinfra's own style (its tests/test_operations.py): each
tests/operations/<module>.<operation>/<case>.json gives

    "kwargs":  the operation's arguments
    "facts":   {"<module>.<Fact>": {"<arguments key>": answer}}, each answer keyed by the exact
               arguments the operation must ask it with ("" for none; otherwise
               "name=value, ..." sorted by name, values as JSON)
    "commands": the exact commands it yields (a string per shell command; ["upload", <text>,
               <dest>] per upload; ["function", <name>] per function command)
    "noop_description": the noop text, when it changes nothing
    "exception": {"name": ..., "message": ...} when it must refuse its arguments

A fact asked with other arguments than the fixture has is a failure (the operation would read
the wrong thing), and so is a fact read other than through the operation's declaration
(batched_operation): the batch would not have it.

Values that JSON has no type for: {"$bytes": "text"}, {"$path": "file beside the fixture"},
{"$TreeEntry": {...}}, {"$StateSwap": {...}}; typed fact answers are built by FACT_TYPES.
"""

from __future__ import annotations

import json
from importlib import import_module
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyinfra.api import FileUploadCommand, FunctionCommand, StringCommand

from mnemos_provision import fact_batch
from mnemos_provision.facts.apt import AptState
from mnemos_provision.facts.files import PathState
from mnemos_provision.operations import util
from mnemos_provision.operations.util import StateSwap
from mnemos_provision.render import TreeEntry

pytestmark = pytest.mark.unit

HERE = Path(__file__).resolve().parent.parent / "operations"

FACT_TYPES = {
    "apt.AptPackages": lambda v: AptState(v["packages"], v.get("dpkg_interrupted", False)),
    "files.TreeState": lambda v: {k: PathState(**s) for k, s in v.items()},
    "docker.DockerImagesPresent": lambda v: None if v is None else set(v),
}


def fact_key(kwargs: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(kwargs.items()))


def fact_name(cls) -> str:
    return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"


def decode(value, base: Path):
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return value["$bytes"].encode()
        if set(value) == {"$path"}:
            return base / value["$path"]
        if set(value) == {"$TreeEntry"}:
            spec = dict(value["$TreeEntry"])
            if spec.get("content") is not None:
                spec["content"] = spec["content"].encode()
            return TreeEntry(**spec)
        if set(value) == {"$StateSwap"}:
            return StateSwap(**value["$StateSwap"])
        return {k: decode(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v, base) for v in value]
    return value


class FixtureHost:
    """pyinfra's `host` for one fixture: facts answered only for the arguments the fixture has."""

    def __init__(self, facts: dict, reads: list, direct: bool):
        self.facts, self.reads, self.direct = facts, reads, direct
        self.noops: list[str] = []
        self.name = "fixture"
        self.state = SimpleNamespace(config=SimpleNamespace(DIFF=False))

    def get_fact(self, cls, **kwargs):
        name, key = fact_name(cls), fact_key(kwargs)
        self.reads.append((cls, kwargs, self.direct))
        answers = self.facts.get(name)
        if answers is None or key not in answers:
            raise AssertionError(f"the operation asked {name} with ({key}); the fixture has "
                                 f"{sorted(answers or {})}")
        value = answers[key]
        return FACT_TYPES[name](value) if name in FACT_TYPES else value

    def noop(self, text):
        self.noops.append(text)


def command_json(command):
    if isinstance(command, StringCommand):
        return command.get_raw_value()
    if isinstance(command, FileUploadCommand):
        src = command.src
        text = src.getvalue().decode() if hasattr(src, "getvalue") else str(src)
        return ["upload", text, command.dest]
    if isinstance(command, FunctionCommand):
        return ["function", command.function.__name__]
    return str(command)


def cases():
    for directory in sorted(p for p in HERE.iterdir() if p.is_dir()):
        for case in sorted(directory.glob("*.json")):
            yield pytest.param(directory.name, case, id=f"{directory.name}/{case.stem}")


@pytest.mark.parametrize("op_path,case", list(cases()))
def test_operation(op_path, case, monkeypatch):
    spec = json.loads(case.read_text())
    module_name, op_name = op_path.split(".")
    module = import_module(f"mnemos_provision.operations.{module_name}")
    op = getattr(module, op_name)
    kwargs = decode(spec.get("kwargs", {}), case.parent)
    reads: list = []
    batch_host = FixtureHost(spec.get("facts", {}), reads, direct=False)
    direct_host = FixtureHost(spec.get("facts", {}), reads, direct=True)
    monkeypatch.setattr(fact_batch, "host", batch_host)
    monkeypatch.setattr(module, "host", direct_host)
    # the staging names are 128 random bits: fixed here so that commands can be compared
    monkeypatch.setattr(util, "secrets", SimpleNamespace(token_hex=lambda n: "0" * 2 * n))

    if "exception" in spec:
        expected = spec["exception"]
        with pytest.raises(Exception) as raised:
            list(op._inner(**kwargs))
        assert type(raised.value).__name__ == expected["name"]
        assert str(raised.value) == expected["message"]
        return

    commands = [command_json(c) for c in op._inner(**kwargs)]
    assert commands == spec["commands"]
    noops = batch_host.noops + direct_host.noops
    if "noop_description" in spec:
        assert spec["commands"] == []
        assert noops == [spec["noop_description"]]
    else:
        assert noops == [], f"a noop while commands were expected: {noops}"

    declared = getattr(op, "facts", None)
    declared_specs = list(declared(**kwargs).values()) if declared else []
    for cls, fact_kwargs, direct in reads:
        assert not direct, (f"{op_path} read {fact_name(cls)} ({fact_key(fact_kwargs)}) outside "
                            "its declaration: the run's batch would not have it")
        assert (cls, fact_kwargs) in declared_specs


def test_every_operation_has_fixtures():
    """vault.setup and minio.setup are left out: they plan by asking Vault's and MinIO's HTTP
    APIs, not facts; tests/unit/test_vault_simulated.py and test_minio_moto.py run them."""
    from mnemos_provision import operations
    ops = set()
    for name in ("files", "apt", "docker", "compose", "server"):
        module = import_module(f"{operations.__name__}.{name}")
        ops |= {f"{name}.{n}" for n, v in vars(module).items()
                if callable(v) and hasattr(v, "_inner") and v.__module__ == module.__name__}
    covered = {p.name for p in HERE.iterdir() if p.is_dir() and any(p.glob("*.json"))}
    assert ops - covered == set(), f"operations without fixtures: {sorted(ops - covered)}"
