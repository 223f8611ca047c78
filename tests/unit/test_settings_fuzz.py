"""
Hostile strings in every setting (issue 22, item 6), enumerated from the settings' specification:
each value either validates or is refused with SettingsError (never another exception), a value
with a control character is always refused, and nothing validated holds one.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from mnemos_provision import dotenv
from mnemos_provision.settings import SECRET_NAMES, SPEC, SettingsError, validate

pytestmark = pytest.mark.unit

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

HOSTILE = [
    "line\nbreak", "carriage\rreturn", "nul\0byte", "tab\tbed", "del\x7f", "nel\x85", "ls\u2028",
    "A=1\nB=2\n@reboot root /tmp/x", "0 3 * * *\n* * * * * root /tmp/x", "/srv/m\n", "~/m\r",
    "${X}", "${HOME}/m", "{nosuch}", "{}", "{0}", "{", "}", "'", '"', "it's \"q\"", "\\",
    "trailing\\", "a\\\\b", "$(id)", "`id`", "; rm -rf /", "%", "*", "@reboot", "@daily",
    "x" * 10000, "/" + "a/" * 2000, "ünïcödé ✓", "日本語", "🙂", "", " ", "-", "--help", "..",
    "/../etc", "/srv/./m//", "~", "~/", "~root/x", "/", "1", "-1", "١٢", "true", "None",
]


def _string_leaves(value: Any, path: tuple = ()) -> list[tuple]:
    """The paths of every string (and every dict key) inside a default value."""
    found: list[tuple] = []
    if isinstance(value, str):
        found.append(path)
    elif isinstance(value, dict):
        for key, inner in value.items():
            found.append(path + (("key", key),))
            found += _string_leaves(inner, path + (key,))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found += _string_leaves(inner, path + (i,))
    return found


def _replace(value: Any, path: tuple, hostile: str) -> Any:
    if not path:
        return hostile
    head, rest = path[0], path[1:]
    if isinstance(head, tuple):  # ("key", key): the dict key itself
        out = {(hostile if k == head[1] else k): v for k, v in value.items()}
        return out
    out = copy.copy(value)
    out[head] = _replace(value[head], rest, hostile)
    return out


def _variants(spec) -> list[Any]:
    """The setting's value with each string in it (or in a new entry) made `hostile`."""
    default = spec.default
    variants: list[Any] = [lambda h: h]  # the value itself a string (all --data values are)
    if isinstance(default, list):
        variants.append(lambda h: [h])
        variants.append(lambda h, d=default: list(d) + [h])
    if isinstance(default, dict):
        for path in _string_leaves(default):
            variants.append(lambda h, p=path, d=default: _replace(d, p, h))
        # an entry of its own: under a hostile name, and under a name the setting knows
        for key in (None, dotenv.NAMES[0], SECRET_NAMES[0]):
            variants.append(lambda h, k=key: {h if k is None else k: h})
    return variants


CASES = [pytest.param(spec.name, i, id=f"{spec.name}-{i}")
         for spec in SPEC for i in range(len(_variants(spec)))]


def _controls(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if CONTROL.search(value) else []
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in _controls(k) + _controls(v)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _controls(v)]
    return []


@pytest.mark.parametrize("name,variant", CASES)
def test_hostile_strings_validate_cleanly_or_are_refused(name, variant):
    spec = next(s for s in SPEC if s.name == name)
    make = _variants(spec)[variant]
    for hostile in HOSTILE:
        value = make(hostile)
        try:
            settings = validate({name: value}, controller_path_exists=lambda p: False)
        except SettingsError as exc:
            assert exc.problems, "a SettingsError without a problem"
            assert any(name in p for p in exc.problems), \
                f"{name} = {value!r}: refused without naming the setting: {exc.problems}"
            continue
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{name} = {value!r}: {type(exc).__name__}: {exc}")
        assert not _controls(value), \
            f"{name} = {value!r} holds a control character and was accepted"
        assert not _controls(getattr(settings, name)), \
            f"{name} = {value!r} gave a setting with a control character"
