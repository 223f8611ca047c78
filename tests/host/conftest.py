"""
Options of the host suite. It reads the same settings as the deploy: group_data/all.py, then
group_data/<--mnemos-group>.py, then each --mnemos-data key=value (JSON values allowed).

    pytest tests/host --hosts=local://                        # this machine, development defaults
    pytest tests/host --hosts=ssh://deploy@staging --mnemos-group=staging
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def pytest_addoption(parser):
    parser.addoption("--mnemos-group", default="dev",
                     help="group_data/<group>.py layered over group_data/all.py (dev, staging, production, ci)")
    parser.addoption("--mnemos-data", action="append", default=[],
                     help="key=value overriding a setting, as pyinfra's --data (JSON values allowed)")


@pytest.fixture(scope="session")
def settings(request):
    from mnemos_provision.settings import validate
    group = request.config.getoption("--mnemos-group")
    data = {}
    path = REPO / "group_data" / f"{group}.py"
    if group != "all":
        if not path.exists():
            pytest.exit(f"--mnemos-group={group}: no such file {path}", returncode=2)
        data = {k: v for k, v in runpy.run_path(str(path)).items()
                if not k.startswith("__") and not hasattr(v, "__spec__")}
    for item in request.config.getoption("--mnemos-data"):
        key, _, value = item.partition("=")
        try:
            data[key] = json.loads(value)
        except json.JSONDecodeError:
            data[key] = value
    # the host suite checks the host, not the controller's files
    return validate(data, controller_path_exists=lambda p: True)


@pytest.fixture(scope="module")
def account(host, settings):
    name = settings.mnemos_user or host.user().name
    user = host.user(name)
    assert user.exists, f"the MNEMOS user {name} does not exist"
    return {"name": name, "group": user.group, "home": user.home}


@pytest.fixture(scope="module")
def paths(settings, account):
    home = account["home"]
    return {
        "root": settings.home_path(settings.mnemos_root, home),
        "secrets": settings.home_path(settings.secrets_state_path, home),
    }
