"""
"Where things are": the short block a bootstrap that launched the stack prints at its end. Each
enabled service with its address on bind_address (or the `docker compose exec` command where it
publishes nothing), where the credentials are (never a value), and the steps left to the user.

`where_things_are()` is a pure function of the settings and the host's paths. `announce()` is the
one call in deploys/bootstrap.py: it prints the block after the run's last operation, only for a
host where an operation changed something, or always with MNEMOS_WHERE=always (never with
MNEMOS_WHERE=never), so a no-op converge stays quiet.
"""

from __future__ import annotations

import os

from pyinfra import host, logger
from pyinfra.api.state import BaseStateCallback

from mnemos_provision import stack
from mnemos_provision.settings import Settings

ENV_VAR = "MNEMOS_WHERE"
MODES = ("changed", "always", "never")
TITLE = "Where things are"


def traefik_routes() -> dict[str, str]:
    """The Traefik routers, {service: host name}, from the registry (tests/unit/test_where.py
    checks them against the rendered config/traefik/dynamic/routes.yml), in the order
    shown: the services' own pages first, those on the frontend network first among them, the
    gateway's dashboard last."""
    routed = sorted((s for s in stack.REGISTRY if s.route),
                    key=lambda s: (s.layer == "gateway", not s.frontend))
    return {s.name: route.host for s in routed if (route := s.route)}


def url_host(bind_address: str) -> str:
    """The host part of a URL on bind_address; an unspecified address is reached on loopback."""
    if bind_address in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{bind_address}]" if ":" in bind_address else bind_address


def _port_suffix(port: int, default: int) -> str:
    return "" if port == default else f":{port}"


def where_things_are(settings: Settings, root: str, vault_keys_path: str,
                     secrets_state_path: str) -> str:
    """The block, as printed (no secret: paths and variable names only)."""
    s = settings
    address = url_host(s.bind_address)
    published = s.published_ports
    lines = [f"{TITLE} (the stack in {root}):"]
    records = [stack.service(name) for name in s.enabled_services]
    width = max((len(record.label) for record in records), default=0)
    for record in records:
        entry = record.where
        shown = [fmt.format(host=address, port=published[key],
                            vault_scheme="https" if s.vault_tls else "http")
                 for key, fmt in entry.published if key in published]
        where = ", ".join(shown) if shown else f"cd {root} && {entry.exec_command}"
        lines.append(f"  {record.label:<{width}}  {where}")
    if s.bind_address in ("0.0.0.0", "::"):
        lines.append(f"  (bind_address = {s.bind_address}: the ports are open on every address "
                     "of this host, not only on loopback)")

    all_routes = traefik_routes()
    routes = ([n for n in all_routes if n in s.enabled_services]
              if "traefik" in s.enabled_services else [])
    if routes and "traefik_http" in published:
        names = [all_routes[n] for n in routes]
        via = [f"http://{{name}}{_port_suffix(published['traefik_http'], 80)}/"]
        if s.traefik_tls and "traefik_https" in published:
            via.append(f"https://{{name}}{_port_suffix(published['traefik_https'], 443)}/ "
                       f"(certificate: {root}/config/traefik/certs/mnemos.crt)")
        lines.append("  Through Traefik: " + ", ".join(
            v.format(name=names[0]) for v in via)
            + (f"; also {', '.join(names[1:])}" if len(names) > 1 else ""))
        lines.append(f"    (these names must resolve to {address}: e.g. a line "
                     f"\"{address} {' '.join(names)}\" in /etc/hosts)")

    lines.append("Credentials (not shown here):")
    creds = [f"{record.label}: {record.where.credentials}" for record in records
             if record.where.credentials]
    lines.append(f"  {root}/.env (0600)" + (": " + "; ".join(creds) if creds else ""))
    lines.append(f"  {secrets_state_path} (0600): every generated secret; .env is rendered from "
                 "it. Back it up")
    if _set_up_by_deploy(s, "vault", s.vault_init):
        lines.append(f"  {vault_keys_path} (0600): Vault's unseal keys and root token. Keep a copy "
                     "off this host")

    lines.append("Next steps:")
    if "claude-code" in s.tools:
        lines.append("  log in to Claude Code once: run `claude`")
    lines.append(f"  check the stack: cd {root} && make health")
    for service, enabled, manual in (
            ("vault", s.vault_init, "docker compose exec vault vault operator init"),
            ("minio", s.minio_init, "docker compose exec minio mc ...")):
        if service in s.enabled_services and enabled and not s.publish_ports:
            lines.append(f"  {stack.service(service).label} publishes no port "
                         f"(publish_ports = False), so "
                         f"the deploy left its set-up to you: cd {root} && {manual}")
    return "\n".join(lines)


def _set_up_by_deploy(s: Settings, service: str, enabled: bool) -> bool:
    """Whether the deploy sets `service` up (mnemos_provision.context.skip_setup's conditions)."""
    return s.launch_stack and enabled and service in s.enabled_services and s.publish_ports


def mode_from_environment() -> str:
    """MNEMOS_WHERE: changed (default), always or never; anything else is an error naming it."""
    value = os.environ.get(ENV_VAR, "changed").strip().lower() or "changed"
    if value not in MODES:
        raise ValueError(f"{ENV_VAR}={value!r}: expected one of {', '.join(MODES)}")
    return value


# ------------------------------------------------------------------ printing at the end of a run

def announce(ctx) -> None:
    """Print the block for this host after the run's last operation (see the module's docstring).
    `ctx` is a HostContext (settings, root, vault_keys_path, secrets_state_path)."""
    s = ctx.settings
    if not s.launch_stack or not s.enabled_services:
        return
    try:
        mode = mode_from_environment()
    except ValueError as exc:
        logger.warning(f"[{host.name}] {exc}: the where-things-are block is not shown")
        return
    if mode == "never":
        return
    text = where_things_are(s, ctx.root, ctx.vault_keys_path, ctx.secrets_state_path)
    # the Host itself, not pyinfra's context proxy of the moment (typed as a Host for mypy)
    target = getattr(host, "_get_module")()
    _handler(target.state).hosts[target] = (text, mode)


def _handler(state):
    for handler in state.callback_handlers:
        if getattr(handler, "is_where_handler", False):
            return handler

    class WhereHandler(BaseStateCallback):
        is_where_handler = True

        def __init__(self):
            self.hosts: dict = {}
            self.last: str | None = None

        def operation_end(self, state, op_hash):  # type: ignore[override]
            if self.last is None:
                order = state.get_op_order()
                self.last = order[-1] if order else ""
            if op_hash != self.last:
                return
            for target, (text, mode) in self.hosts.items():
                if target in state.failed_hosts:
                    continue
                if mode == "always" or host_changed(state, target):
                    logger.info(f"[{target.name}] " + text)

    handler = WhereHandler()
    state.add_callback_handler(handler)
    return handler


def host_changed(state, target) -> bool:
    """Whether an operation of this run changed something on `target` (pyinfra's own count:
    an operation that ran commands)."""
    for op_data in state.ops.get(target, {}).values():
        meta = op_data.operation_meta
        if meta.is_complete() and meta.did_change():
            return True
    return False
