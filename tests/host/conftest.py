"""
Options of the host suite. It reads the same settings as the deploy: group_data/all.py, then
group_data/<--mnemos-group>.py, then each --mnemos-data key=value (JSON values allowed).

    pytest tests/host --hosts=local://                        # this machine, development defaults
    pytest tests/host --hosts=ssh://deploy@staging --mnemos-group=staging

test_checklist.py is the design's "Phase 1 Completion Checklist", one test per item a machine can
check (marked `checklist("<the item's text>")`); at the end of the run the checklist is printed
with each item's outcome: [x] passed, [-] skipped (with the reason), [!] failed.
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

# The items of the design's checklist that no machine can check: they stay the user's.
USERS_OWN = (
    "Claude Code CLI authenticated (run `claude` once and log in)",
    "Documentation reviewed and understood",
)


def pytest_addoption(parser):
    parser.addoption("--mnemos-group", default="dev",
                     help="group_data/<group>.py layered over group_data/all.py "
                          "(dev, staging, production, ci)")
    parser.addoption("--mnemos-data", action="append", default=[],
                     help="key=value overriding a setting, as pyinfra's --data "
                          "(JSON values allowed)")


def pytest_configure(config):
    config.addinivalue_line("markers",
                            "checklist(item): the design's Phase 1 checklist item a test checks")
    config._mnemos_checklist = {}  # nodeid -> [item, host, outcome, reason]


def _host_id(item) -> str:
    """The host a test ran on (testinfra's parameter), whatever else parametrizes it."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return ""
    backend = getattr(callspec.params.get("_testinfra_host"), "backend", None)
    return backend.get_pytest_id() if backend else callspec.id


def pytest_collection_modifyitems(config, items):
    for item in items:
        mark = item.get_closest_marker("checklist")
        if mark:
            config._mnemos_checklist[item.nodeid] = [mark.args[0], _host_id(item), None, ""]


def pytest_deselected(items):
    for item in items:  # -k, -m: not part of this run's checklist
        item.config._mnemos_checklist.pop(item.nodeid, None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    entry = item.config._mnemos_checklist.get(item.nodeid)
    if entry is None:
        return
    if report.skipped:
        entry[2] = "skipped"
        longrepr = report.longrepr
        entry[3] = (longrepr[2].removeprefix("Skipped: ") if isinstance(longrepr, tuple)
                    else str(longrepr))
    elif report.failed:
        entry[2] = "failed"
        text = call.excinfo.exconly() if call.excinfo else report.longreprtext
        # the assertion's own message, without pytest's rewritten expression after it
        entry[3] = " ".join(text.split("\nassert ")[0].split())[:300]
    elif report.when == "call" and entry[2] is None:
        entry[2] = "passed"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    entries = list(getattr(config, "_mnemos_checklist", {}).values())
    if not entries or config.option.collectonly:
        return
    tr = terminalreporter
    hosts = sorted({e[1] for e in entries})
    for host_id in hosts:
        tr.write_sep("=", f"Phase 1 completion checklist{' on ' + host_id if host_id else ''}")
        counts = {"passed": 0, "skipped": 0, "failed": 0, None: 0}
        for item, hid, outcome, reason in entries:
            if hid != host_id:
                continue
            counts[outcome] += 1
            mark = {"passed": "[x]", "skipped": "[-]", "failed": "[!]", None: "[ ]"}[outcome]
            line = f"{mark} {item}"
            if outcome == "skipped":
                line += f"  -- skipped: {reason}"
            elif outcome == "failed":
                line += f"  -- FAILED: {reason}"
            elif outcome is None:
                line += "  -- not run"
            tr.write_line(line, red=outcome == "failed", yellow=outcome == "skipped",
                          green=outcome == "passed")
        for item in USERS_OWN:
            tr.write_line(f"[ ] {item}  -- the user's own (no machine can check it)")
        tr.write_line(f"checklist: {counts['passed']} passed, {counts['skipped']} skipped, "
                      f"{counts['failed']} failed"
                      + (f", {counts[None]} not run" if counts[None] else "")
                      + f", {len(USERS_OWN)} left to the user")


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


@pytest.fixture(scope="module")
def secrets(host, paths):
    from mnemos_provision import secret_store
    state = host.file(paths["secrets"])
    assert state.exists, f"{paths['secrets']} is missing"
    return secret_store.parse(state.content)


@pytest.fixture(scope="module")
def expected_tree(settings, account, secrets):
    from mnemos_provision import render
    return render.render_tree(settings, account["home"], secrets)
