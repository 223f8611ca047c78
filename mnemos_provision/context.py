"""
HostContext: what every role reads. Built once per host at the top of a deploy (host_context(),
called by the deploy files, the entry points), before any operation: validated settings plus one
snapshot of the host (one command). The pyinfra plumbing that needs no settings (commands with
the operations' privileges, connector arguments, private upload directories) is
mnemos_provision/connection.py.
"""

from __future__ import annotations

import os
import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass

from pyinfra import host, logger, state

from mnemos_provision.facts.server import HostSnapshot, Snapshot
from mnemos_provision.settings import Settings, SettingsError, host_layers, validate_layers


@dataclass(frozen=True)
class HostContext:
    settings: Settings
    snap: Snapshot
    user: str
    group: str
    home: str

    @property
    def root(self) -> str:
        return self.settings.home_path(self.settings.mnemos_root, self.home)

    @property
    def secrets_state_path(self) -> str:
        return self.settings.home_path(self.settings.secrets_state_path, self.home)

    @property
    def vault_keys_path(self) -> str:
        return self.settings.home_path(self.settings.vault_keys_path, self.home)


class HostStopped(Exception):
    """This host's deploy stopped before any of its operations ran; the others go on."""


def fail(title: str, problems: list[str], code: int = 2) -> None:
    """
    Print every problem for this host and stop this host before any of its operations executes.
    With other hosts still in the run, only this one is left out (pyinfra's failed hosts: the run
    ends non-zero, naming it); alone, the run exits with `code`.
    """
    logger.error(f"[{host.name}] {title}")
    for problem in problems:
        logger.error(f"  - {problem}")
    state = host.state
    if state.active_hosts - {host}:
        state.fail_hosts({host})
        raise HostStopped(host.name)
    sys.exit(code)


def _register_deploy_file() -> None:
    """
    pyinfra orders operations by their call stack: inspect.stack() for every operation
    (pyinfra/api/util.py, get_operation_order_from_stack). For the frames of the deploy file it
    executes, which no module owns, inspect.getmodule goes through all of sys.modules on every
    call, its cache holding module files only: 17 ms of CPU in an all-services no-op
    (docs/performance.md). The file, registered once as a module of its own name, is found in that
    cache. Nothing imports it: the name is not an importable one.
    """
    filename = getattr(state, "current_exec_filename", None)
    if not filename:
        return
    path = os.path.abspath(filename)
    name = f"mnemos-deploy-file:{path}"
    if name not in sys.modules:
        module = types.ModuleType(name)
        module.__file__ = path
        sys.modules[name] = module


@contextmanager
def for_each_host():
    """The body of a deploy file: a host stopped by fail() ends its part, not the others'."""
    _register_deploy_file()
    try:
        yield
    except HostStopped:
        pass


def load_settings() -> Settings:
    try:
        return validate_layers(host_layers(host))  # dict settings merged key by key
    except SettingsError as exc:
        fail(f"{len(exc.problems)} problem(s) in the settings; nothing on the host was changed:",
             exc.problems)
        raise  # unreachable: fail() exits


def host_context() -> HostContext:
    settings = load_settings()
    snap = host.get_fact(HostSnapshot, user=settings.mnemos_user, path=settings.mnemos_root,
                         compose_project=settings.compose_project,
                         # only Docker Desktop's Compose is checked from the snapshot
                         compose_version=settings.docker_source in ("desktop", "auto"))
    if not snap.user_exists:
        fail("the MNEMOS user does not exist; nothing on the host was changed:", [
            f"mnemos_user = {settings.mnemos_user!r}: no such account on {host.name}; create it "
            "or set mnemos_user to an existing account",
        ])
    ctx = HostContext(settings=settings, snap=snap, user=snap.user, group=snap.user_group,
                      home=snap.user_home)
    _check_locations(ctx)
    return ctx


def _check_locations(ctx: HostContext) -> None:
    """What only the host can tell: paths given as absolute ones that are the home directory
    itself, or a state file inside the tree."""
    home = ctx.home.rstrip("/") or "/"
    problems = []
    for key, path in (("mnemos_root", ctx.root), ("secrets_state_path", ctx.secrets_state_path),
                      ("vault_keys_path", ctx.vault_keys_path)):
        if path.rstrip("/") in (home, "/"):
            problems.append(f"{key} = {path!r} is the home directory of {ctx.user} itself; "
                            "choose a directory of its own, e.g. ~/mnemos")
        elif key != "mnemos_root" and path.startswith(ctx.root.rstrip("/") + "/"):
            problems.append(f"{key} = {path!r} lies inside mnemos_root ({ctx.root}), a git "
                            "repository; keep it outside, e.g. ~/.config/mnemos/")
    if problems:
        fail(f"{len(problems)} problem(s) in the settings; nothing on the host was changed:",
             problems)


def skip_setup(ctx: HostContext, service: str, enabled: bool, manual: str) -> bool:
    """
    Whether the set-up of `service` (Vault, MinIO) does not run on this host; when it does not,
    says why with host.noop.
    """
    s = ctx.settings
    if not (s.launch_stack and enabled and s.service_enabled(service)):
        host.noop(f"{service} set-up is off (launch_stack, {service}_init or the {service} "
                  "profile)")
        return True
    if not s.publish_ports:
        host.noop(f"{service}'s port is not published (publish_ports is false): the deploy reaches "
                  f"it on the host's 127.0.0.1 only; set it up with {manual}")
        return True
    return False
