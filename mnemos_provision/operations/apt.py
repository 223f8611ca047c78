"""
apt: `apt.packages` (installed or removed, in one apt-get call) and `apt.update` (the cache
refreshed when stale), as pyinfra's operations/apt.py names them.
"""

from __future__ import annotations

from typing import Callable

from pyinfra import host
from pyinfra.api import OperationValueError, StringCommand

from mnemos_provision.fact_batch import DeclaredFacts, batched_operation
from mnemos_provision.facts.apt import AptListsAge, AptPackages
from mnemos_provision.operations import progress

# Wait for a lock held by another apt (unattended-upgrades on a fresh Ubuntu) instead of failing.
APT_LOCK_WAIT = ("-o", "DPkg::Lock::Timeout=300")


def _apt_names(packages: list[str], optional: list[str] | None = None, **_) -> list[str]:
    return [p.split("=", 1)[0] for p in list(packages) + list(optional or [])]


@batched_operation(lambda **kw: {"packages": (AptPackages, {"names": _apt_names(**kw)})})
def packages(facts: DeclaredFacts, packages: list[str], optional: list[str] | None = None,
             present: bool = True):
    """
    Install apt packages that are missing, in one apt-get call, or remove those installed
    (``present=False``). `optional` packages are installed only where the distribution has them
    (e.g. python3.11), and are skipped silently otherwise. A dpkg run that was interrupted is
    finished first (``dpkg --configure -a``) before anything is installed.

    + packages: names that must be installed, or name=version to pin (unknown names fail the run);
      with ``present=False``, names to remove when installed
    + optional: names installed only when apt has a candidate for them (not with ``present=False``)
    + present: whether the packages should be installed

    **Example:**

    .. code:: python

        apt.packages(packages=["git", "jq"], optional=["python3.11"])
        apt.packages(packages=["docker.io", "podman-docker"], present=False)
    """
    optional = optional or []
    if not present:
        if optional:
            raise OperationValueError(
                "apt.packages: optional= is only for installing (present=True); "
                "give the packages to remove in packages=")
        yield from _remove(facts, packages)
        return
    state = facts["packages"]

    def satisfied(spec: str) -> bool:
        name, _, version = spec.partition("=")
        info = state.get(name)
        return info["installed"] and (not version or info["version"] == version)

    missing = [p for p in packages if not satisfied(p)]
    missing += [p for p in optional if not state.get(p)["installed"] and state.get(p)["candidate"]]
    interrupted = state.dpkg_interrupted
    if not missing and not interrupted:
        host.noop(f"{len(packages)} packages already installed")
        return
    if interrupted:  # a run was killed while dpkg worked: finish its configuration first
        yield StringCommand("DEBIAN_FRONTEND=noninteractive dpkg --configure -a")
    if missing:
        yield progress.shown_alive(
            f"apt-get install of {len(missing)} packages ({', '.join(missing)})",
            "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
            "--no-install-recommends", *APT_LOCK_WAIT, *missing)


def _remove(facts: DeclaredFacts, packages: list[str]):
    state = facts["packages"]
    installed = [p for p in packages if state.get(p)["installed"]]
    if not installed:
        host.noop(f"none of {', '.join(packages)} is installed")
        return
    yield progress.shown_alive(
        f"apt-get remove of {len(installed)} packages ({', '.join(installed)})",
        "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "remove", "-y", "-q", *APT_LOCK_WAIT,
        *installed)


@batched_operation(lambda **_: {"lists_age": (AptListsAge, {})})
def update(facts: DeclaredFacts, cache_time: int, force: bool | Callable[[], bool] = False):
    """
    Refresh the apt cache when it is older than `cache_time` seconds (or empty), or when `force`.
    A converged host within that age changes nothing.

    + cache_time: how old (seconds) the package lists may be
    + force: refresh regardless (after adding an apt source); a callable is asked when the
      operation runs, e.g. ``force=changes(source_list)``

    **Example:**

    .. code:: python

        source = files.system_files(files=[("/etc/apt/sources.list.d/docker.list", line, "644")])
        apt.update(cache_time=3600, force=changes(source))
    """
    if callable(force):
        force = force()
    age = facts["lists_age"]
    if not force and age is not None and age <= cache_time:
        host.noop(f"apt lists are {age} s old (fresh within {cache_time} s)")
        return
    yield progress.shown_alive("apt-get update", "apt-get", "update", "-q", *APT_LOCK_WAIT)
