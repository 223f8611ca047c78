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
from dataclasses import dataclass

from mnemos_provision.settings import Settings

ENV_VAR = "MNEMOS_WHERE"
MODES = ("changed", "always", "never")
TITLE = "Where things are"

# The Traefik routers: {service: host name} (tests/unit/test_where.py checks them against the
# rendered config/traefik/dynamic/routes.yml).
TRAEFIK_ROUTES = {"grafana": "grafana.mnemos.local", "prometheus": "prometheus.mnemos.local",
                  "traefik": "traefik.mnemos.local"}


@dataclass(frozen=True)
class Entry:
    """A service line: published addresses (port key, how to show it) and the command otherwise."""
    label: str
    published: tuple[tuple[str, str], ...]  # (port key, format with {host} and {port})
    exec_command: str  # what to run in the tree where the service publishes nothing
    credentials: str = ""  # the .env variables that hold its credentials (names only)


ENTRIES = {
    "postgres": Entry("PostgreSQL", (("postgres", "postgresql://{host}:{port}/mnemos"),),
                      "docker compose exec postgres psql -U mnemos",
                      "POSTGRES_USER, POSTGRES_PASSWORD"),
    "redis": Entry("Redis", (("redis", "redis://{host}:{port}"),),
                   "docker compose exec redis sh -c 'REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli'",
                   "REDIS_PASSWORD"),
    "vault": Entry("Vault", (("vault", "{vault_scheme}://{host}:{port}"),),
                   "docker compose exec vault vault status", "VAULT_TOKEN (scoped)"),
    "minio": Entry("MinIO", (("minio_api", "API http://{host}:{port}"),
                             ("minio_console", "console http://{host}:{port}")),
                   "docker compose exec minio mc ready local",
                   "MINIO_ROOT_USER, MINIO_ROOT_PASSWORD; the application's: AWS_ACCESS_KEY_ID, "
                   "AWS_SECRET_ACCESS_KEY"),
    "otel-collector": Entry("OTel collector", (("otel_grpc", "OTLP gRPC {host}:{port}"),
                                               ("otel_http", "OTLP HTTP http://{host}:{port}"),
                                               ("otel_health", "health http://{host}:{port}/"),
                                               ("otel_metrics", "own metrics http://{host}:{port}/metrics"),
                                               ("otel_prometheus", "exported metrics http://{host}:{port}/metrics")),
                            "make health (its image has no shell: nothing runs inside it)"),
    "prometheus": Entry("Prometheus", (("prometheus", "http://{host}:{port}"),),
                        "docker compose exec prometheus wget -qO- localhost:9090/-/healthy"),
    "loki": Entry("Loki", (("loki", "http://{host}:{port}"),),
                  "docker compose exec loki /usr/bin/loki -health"),
    "grafana": Entry("Grafana", (("grafana", "http://{host}:{port}"),),
                     "docker compose exec grafana grafana cli admin --help",
                     "GRAFANA_ADMIN_USER, GRAFANA_ADMIN_PASSWORD"),
    "traefik": Entry("Traefik", (("traefik_dashboard", "dashboard http://{host}:{port}/dashboard/"),
                                 ("traefik_http", "entry points {host}:{port} (HTTP)"),
                                 ("traefik_https", "{host}:{port} (HTTPS)")),
                     "docker compose exec traefik traefik healthcheck --ping"),
}


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
    host = url_host(s.bind_address)
    published = s.published_ports
    lines = [f"{TITLE} (the stack in {root}):"]
    width = (max(len(ENTRIES[name].label) for name in s.enabled_services)
             if s.enabled_services else 0)
    for name in s.enabled_services:
        entry = ENTRIES[name]
        shown = [fmt.format(host=host, port=published[key],
                            vault_scheme="https" if s.vault_tls else "http")
                 for key, fmt in entry.published if key in published]
        where = ", ".join(shown) if shown else f"cd {root} && {entry.exec_command}"
        lines.append(f"  {entry.label:<{width}}  {where}")
    if s.bind_address in ("0.0.0.0", "::"):
        lines.append(f"  (bind_address = {s.bind_address}: the ports are open on every address "
                     "of this host, not only on loopback)")

    routes = ([n for n in TRAEFIK_ROUTES if n in s.enabled_services]
              if "traefik" in s.enabled_services else [])
    if routes and "traefik_http" in published:
        names = [TRAEFIK_ROUTES[n] for n in routes]
        via = [f"http://{{name}}{_port_suffix(published['traefik_http'], 80)}/"]
        if s.traefik_tls and "traefik_https" in published:
            via.append(f"https://{{name}}{_port_suffix(published['traefik_https'], 443)}/ "
                       f"(certificate: {root}/config/traefik/certs/mnemos.crt)")
        lines.append("  Through Traefik: " + ", ".join(
            v.format(name=names[0]) for v in via)
            + (f"; also {', '.join(names[1:])}" if len(names) > 1 else ""))
        lines.append(f"    (these names must resolve to {host}: e.g. a line "
                     f"\"{host} {' '.join(names)}\" in /etc/hosts)")

    lines.append("Credentials (not shown here):")
    creds = [f"{ENTRIES[n].label}: {ENTRIES[n].credentials}" for n in s.enabled_services
             if ENTRIES[n].credentials]
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
            lines.append(f"  {ENTRIES[service].label} publishes no port "
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
    from pyinfra import host, logger

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
    from pyinfra.api.state import BaseStateCallback

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
            from pyinfra import logger
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
