"""
The settings specification (`Settings` in mnemos_provision/settings.py) is the one place a setting
is declared: group_data/all.py and docs/settings.md's block are written from it, every setting's
type is checked from it, and dict settings are merged key by key across pyinfra's data layers.
"""

from __future__ import annotations

import os
import re
import runpy
import types

import pytest

from mnemos_provision import settings_doc
from mnemos_provision.settings import (
    DICT_SETTINGS,
    SPEC,
    SettingsError,
    host_layers,
    load_defaults,
    merge_layers,
    validate,
    validate_layers,
)
from tests.conftest import REPO, run

pytestmark = pytest.mark.unit

PYINFRA = str(REPO / ".venv/bin/pyinfra")
STANDINS = {"postgres": "mnemos-standin/postgres:debian12",
            "redis": "mnemos-standin/redis:debian12",
            "prometheus": "mnemos-standin/prometheus:debian12",
            "traefik": "mnemos-standin/traefik:debian12"}


# ---------------------------------------------------------------- one declaration, three copies
def test_group_data_all_is_written_from_the_spec():
    assert (REPO / "group_data/all.py").read_text() == settings_doc.render_defaults(), \
        "group_data/all.py differs from the spec: run scripts/sync-readme-defaults"


def test_settings_doc_block_is_written_from_the_spec():
    doc = (REPO / "docs/settings.md").read_text()
    quoted = re.search(r"<!-- defaults:begin -->\n```python\n(.*)```\n<!-- defaults:end -->",
                       doc, re.S)
    assert quoted, "docs/settings.md has no defaults block"
    assert quoted.group(1) == settings_doc.render_defaults(), \
        "docs/settings.md's settings block differs from the spec: run scripts/sync-readme-defaults"


def test_all_py_as_pyinfra_reads_it_holds_every_default_with_its_doc():
    """pyinfra reads group_data/all.py's module-level names as data: they are the spec's defaults,
    each with its one-line doc next to or just above it."""
    data = {k: v for k, v in runpy.run_path(str(REPO / "group_data/all.py")).items()
            if not k.startswith("__")}
    assert data == load_defaults()
    lines = (REPO / "group_data/all.py").read_text().splitlines()
    for s in SPEC:
        assert s.doc.strip(), f"{s.name}: no doc"
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{s.name} = "))
        comment = [lines[at].partition("  # ")[2]]
        above = at - 1
        while lines[above].startswith("# ") and not lines[above].startswith("# ---"):
            comment.insert(0, lines[above][2:])
            above -= 1
        assert s.doc in " ".join(c for c in comment if c), f"{s.name}: doc missing in all.py"


def test_defaults_are_valid():
    settings = validate({})
    for s in SPEC:
        assert getattr(settings, s.name) == s.default or s.name == "secrets"


def test_every_setting_has_its_type_checked():
    """A value of the wrong type for any setting of the spec is refused, naming the key."""
    wrong = {bool: "maybe", int: "soon", str: 5, list: {"a": 1}, dict: "a string"}
    for s in SPEC:
        base = s.type
        if isinstance(base, types.UnionType):  # str | None
            base = next(a for a in base.__args__ if a is not type(None))
        value = wrong[getattr(base, "__origin__", base)]
        with pytest.raises(SettingsError) as err:
            validate({s.name: value}, controller_path_exists=lambda p: True)
        assert any(p.startswith(f"{s.name} = ") for p in err.value.problems), \
            f"{s.name} accepted {value!r}: {err.value.problems}"


# ---------------------------------------------------------------- the merge rule
def test_a_dict_setting_is_merged_key_by_key():
    images = validate({"images": {"redis": "redis:7.4.7-alpine"}}).images
    assert images["redis"] == "redis:7.4.7-alpine"
    assert {k: v for k, v in images.items() if k != "redis"} == \
        {k: v for k, v in load_defaults()["images"].items() if k != "redis"}


def test_an_entry_set_to_none_is_removed():
    buckets = validate({"minio_buckets": {"mnemos-uploads": None}}).minio_buckets
    assert "mnemos-uploads" not in buckets and "mnemos-models" in buckets
    with pytest.raises(SettingsError) as err:
        validate({"images": {"vault": None}})
    assert "missing an image for 'vault'" in str(err.value)


def test_the_merge_is_one_level_deep_and_other_settings_are_replaced():
    merged = merge_layers(
        {"docker_daemon_config": {"log-driver": "json-file", "log-opts": {"max-size": "10m"}},
         "apt_packages": ["git", "curl"]},
        {"docker_daemon_config": {"log-opts": {"max-file": "5"}}, "apt_packages": ["jq"]},
    )
    assert merged["docker_daemon_config"] == {"log-driver": "json-file",
                                              "log-opts": {"max-file": "5"}}
    assert merged["apt_packages"] == ["jq"]
    # a dict setting given as something else replaces it (and is then refused by its check)
    assert merge_layers({"images": {"redis": "r:1"}}, {"images": "x"})["images"] == "x"
    assert DICT_SETTINGS == {s.name for s in SPEC if isinstance(s.default, dict)}


def test_ci_group_data_changes_only_the_images_it_runs():
    ci = runpy.run_path(str(REPO / "group_data/ci.py"))
    assert ci["images"] == STANDINS


def _inventory(path: str, override_data: dict | None = None):
    """An inventory built by pyinfra's CLI code, group_data/ included, as `pyinfra <path>` does."""
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory
    with ctx_state.use(types.SimpleNamespace(current_exec_filename=None)):
        return make_inventory(path, override_data=override_data or {}, cwd=str(REPO))


def test_layers_of_a_pyinfra_host_are_merged_key_by_key(monkeypatch):
    """inventories/ci.py: all.py's nine images, ci.py's three stand-ins over them, one image from
    --data over those; every other setting as pyinfra's own host.data has it."""
    monkeypatch.chdir(REPO)
    host = list(_inventory("inventories/ci.py", {"images": {"redis": "redis:7.4.7-alpine"}}))[0]
    settings = validate_layers(host_layers(host), controller_path_exists=lambda p: True)
    defaults = load_defaults()["images"]
    assert settings.images == {**defaults, **STANDINS, "redis": "redis:7.4.7-alpine"}
    assert settings.mnemos_user == "dev" and settings.docker_source == "distro"  # ci.py
    merged = merge_layers(*host_layers(host))
    pyinfra_data = host.data.dict()
    for key, value in pyinfra_data.items():
        if key not in DICT_SETTINGS:
            assert merged[key] == value, key
    assert pyinfra_data["images"] == {"redis": "redis:7.4.7-alpine"}  # pyinfra alone: replaced


def test_one_image_from_the_command_line_reaches_the_rendered_tree(tmp_path):
    """The whole CLI path (pyinfra, group_data/all.py and ci.py, --data, load_settings): a host in
    the `ci` group given one image with --data renders ci's stand-ins for the others it changes,
    all.py's images for the rest, and the one image given."""
    inventory = tmp_path / "ci.py"  # the file's name puts @local in the group `ci`
    inventory.write_text('hosts = ["@local"]\n')
    root = tmp_path / "mnemos"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNEMOS_TEST_")}
    result = run([PYINFRA, str(inventory), "deploys/tree.py", "-y",
                  "--data", f"mnemos_root={root}",
                  "--data", f"secrets_state_path={tmp_path}/state/s.json",
                  "--data", "mnemos_user=null",  # ci.py's `dev` is not an account here
                  "--data", 'images={"redis": "redis:7.4.7-alpine"}'],
                 cwd=REPO, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    compose = (root / "docker-compose.yml").read_text()
    used = set(re.findall(r"^\s+image: (\S+)$", compose, re.M))
    assert "redis:7.4.7-alpine" in used
    assert STANDINS["postgres"] in used and STANDINS["prometheus"] in used
    assert load_defaults()["images"]["vault"] in used
    assert STANDINS["redis"] not in used and load_defaults()["images"]["redis"] not in used


def test_a_secrets_value_of_the_wrong_type_is_not_printed():
    secret = "Zq9xW2vB7nM4kL8pR3tYa81"
    with pytest.raises(SettingsError) as err:
        validate({"secrets": secret})
    assert "secrets = '<hidden>': expected a dict" in str(err.value)
    assert secret not in str(err.value)
