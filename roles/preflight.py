"""
Preflight: decide whether the host can succeed, before anything changes. `evaluate` is pure
(settings + snapshot in, problems and warnings out); `preflight` prints and stops the run.
"""

from __future__ import annotations

import ipaddress

from pyinfra import host, logger
from pyinfra.api import deploy

from mnemos_provision import stack
from mnemos_provision.context import HostContext, fail
from mnemos_provision.facts.server import Snapshot
from mnemos_provision.settings import Settings, version_tuple

GIB_KIB = 1024 * 1024
# MemTotal is below the installed RAM (firmware and kernel reservations): an 8 GB machine
# reports about 7.6 GiB. Memory checks allow this much.
MEMORY_TOLERANCE = 0.9


def evaluate(settings: Settings, snap: Snapshot) -> tuple[list[str], list[str]]:
    """(problems, warnings) of this host for these settings: each check is a pure step."""
    problems = os_problems(settings, snap)
    resource_problems, warnings = resource_findings(settings, snap)
    problems += resource_problems
    problems += port_problems(settings, snap)
    problems += subnet_problems(settings, snap)
    problems += docker_desktop_problems(settings, snap)
    return problems, warnings


def os_problems(settings: Settings, snap: Snapshot) -> list[str]:
    found = []
    versions = settings.supported_os.get(snap.os_id)
    if versions is None or snap.os_version not in versions:
        supported = "; ".join(f"{k} {', '.join(v)}" for k, v in settings.supported_os.items())
        found.append(f"OS {snap.os_id or 'unknown'} {snap.os_version or ''} is not supported "
                     f"(supported: {supported}); extend supported_os to try anyway")
    if snap.wsl_version == 1:
        found.append(f"this is WSL1 (kernel {snap.kernel}): Docker cannot run there. Convert "
                     "the distribution in PowerShell: wsl --set-version <distro> 2")
    return found


def resource_findings(settings: Settings, snap: Snapshot) -> tuple[list[str], list[str]]:
    """Memory, CPUs and free disk against the design's minimum (a problem, or a warning without
    preflight_strict) and its recommendation (a warning)."""
    problems: list[str] = []
    warnings: list[str] = []
    resource_checks = [
        ("memory", snap.mem_kib / GIB_KIB, settings.min_memory_gib * MEMORY_TOLERANCE,
         settings.recommended_memory_gib * MEMORY_TOLERANCE, "min_memory_gib", "GiB"),
        ("CPUs", snap.cpus, settings.min_cpus, settings.recommended_cpus, "min_cpus", ""),
        (f"free disk at {snap.disk_path or '?'}", snap.disk_free_kib / GIB_KIB,
         settings.min_disk_gib, settings.recommended_disk_gib, "min_disk_gib", "GiB"),
    ]
    for label, have, minimum, recommended, key, unit in resource_checks:
        shown = f"{have:.1f}{' ' + unit if unit else ''}" if unit else f"{have}"
        if have < minimum:
            message = (f"{label}: {shown} is below the design minimum "
                       f"({key} = {getattr(settings, key)})")
            if settings.preflight_strict:
                problems.append(message + "; set preflight_strict = False to continue anyway")
            else:
                warnings.append(message + "; continuing (preflight_strict = False)")
        elif have < recommended:
            warnings.append(f"{label}: {shown} is below the recommended "
                            f"{key.replace('min_', 'recommended_')} = "
                            f"{getattr(settings, key.replace('min_', 'recommended_'))}")
    return problems, warnings


def port_problems(settings: Settings, snap: Snapshot) -> list[str]:
    """A port to publish that another process (not this stack) listens on."""
    return [f"port {port} (ports[{key!r}]) is already in use by another process; "
            f"stop it or choose another port in ports[{key!r}]"
            for key, port in sorted(settings.published_ports.items())
            if port in snap.listening_ports and port not in snap.project_ports]


def subnet_problems(settings: Settings, snap: Snapshot) -> list[str]:
    """A stack subnet that overlaps another Docker network or a route of the host (the stack's
    own networks and bridges, and the default route, aside)."""
    found = []
    ours = stack.network_names(settings.compose_project)
    our_bridges = {"br-" + net_id[:12] for net_id, name, _ in snap.docker_networks if name in ours}
    for name, cidr in settings.stack_subnets.items():
        net = ipaddress.ip_network(cidr)
        for net_id, other, subnets in snap.docker_networks:
            if other in ours:
                continue
            for subnet in subnets:
                try:
                    if net.overlaps(ipaddress.ip_network(subnet, strict=False)):
                        found.append(
                            f"stack_subnets[{name!r}] = {cidr!r} overlaps Docker network {other!r} "
                            f"({subnet}); choose a free range in stack_subnets[{name!r}]")
                except ValueError:
                    continue
        for iface, route in snap.routes:
            if iface in our_bridges or route.prefixlen == 0:
                continue
            if net.overlaps(route):
                found.append(f"stack_subnets[{name!r}] = {cidr!r} overlaps the host route "
                             f"{route} on {iface}; choose a free range in "
                             f"stack_subnets[{name!r}]")
    return found


def docker_desktop_problems(settings: Settings, snap: Snapshot) -> list[str]:
    found = []
    if settings.docker_source == "desktop" and not snap.docker_desktop:
        found.append("docker_source = 'desktop' but Docker Desktop's WSL integration was not "
                     "found; enable it in Docker Desktop (Settings > Resources > WSL "
                     "Integration) or use docker_source = 'docker-ce'")
    if settings.docker_source == "desktop" or (settings.docker_source == "auto"
                                               and snap.docker_desktop):
        found.extend(desktop_version_problems(settings, snap))
    return found


def desktop_version_problems(settings: Settings, snap: Snapshot) -> list[str]:
    found = []
    engine = version_tuple(snap.docker_server_version.split("-")[0].split("+")[0] or "0")
    # the minimum versions are checked by the settings: never None
    if engine is None or engine < (version_tuple(settings.docker_min_version) or ()):
        found.append(f"Docker Desktop's engine {snap.docker_server_version or 'does not answer'}; "
                     f"docker_min_version = {settings.docker_min_version!r}: update Docker Desktop")
    compose = version_tuple(snap.compose_version.lstrip("v").split("-")[0] or "0")
    if compose is None or compose < (version_tuple(settings.compose_min_version) or ()):
        found.append(f"Docker Desktop's Compose {snap.compose_version or 'is missing'}; "
                     f"compose_min_version = {settings.compose_min_version!r}: "
                     "update Docker Desktop")
    return found


@deploy("Preflight")
def preflight(ctx: HostContext):
    problems, warnings = evaluate(ctx.settings, ctx.snap)
    for warning in warnings:
        logger.warning(f"[{host.name}] preflight: {warning}")
    if problems:
        fail("preflight found problems; nothing on the host was changed:", problems)
