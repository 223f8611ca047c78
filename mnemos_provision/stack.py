"""
The stack model: the services of the compose stack, their profiles (layers), networks and the
ports each publishes. Settings (validation and derived views), the preflight and the rendering
read it from here.
"""

from __future__ import annotations

SERVICES = (
    "postgres", "redis", "vault", "minio",
    "otel-collector", "prometheus", "loki", "grafana",
    "traefik",
)
# Compose profiles: each service is in its layer's profile and in one named after itself.
SERVICE_LAYERS = {
    "postgres": "data", "redis": "data", "vault": "data", "minio": "data",
    "otel-collector": "observability", "prometheus": "observability",
    "loki": "observability", "grafana": "observability",
    "traefik": "gateway",
}
LAYERS = ("data", "observability", "gateway")
NETWORKS = ("frontend", "backend", "data", "hostaccess")
FRONTEND_SERVICES = ("grafana", "traefik")  # on the non-internal frontend network by design
PORT_SERVICES = {  # which service publishes each port key
    "postgres": "postgres", "redis": "redis", "vault": "vault",
    "minio_api": "minio", "minio_console": "minio",
    "otel_grpc": "otel-collector", "otel_http": "otel-collector", "otel_metrics": "otel-collector",
    "otel_prometheus": "otel-collector", "otel_health": "otel-collector",
    "prometheus": "prometheus", "loki": "loki", "grafana": "grafana",
    "traefik_http": "traefik", "traefik_https": "traefik", "traefik_dashboard": "traefik",
}


def enabled_services(profiles: list[str]) -> list[str]:
    """Services whose layer or own name is in `profiles`, in design order."""
    active = set(profiles)
    return [s for s in SERVICES if s in active or SERVICE_LAYERS[s] in active]


def published_ports(ports: dict[str, int], profiles: list[str],
                    publish_ports: bool) -> dict[str, int]:
    """Port key -> host port, for the enabled services that publish on the host (all of them, or
    only the frontend services without `publish_ports`)."""
    enabled = enabled_services(profiles)
    return {key: port for key, port in ports.items()
            if PORT_SERVICES[key] in enabled
            and (publish_ports or PORT_SERVICES[key] in FRONTEND_SERVICES)}


def network_names(project: str) -> set[str]:
    """The Docker names of the stack's networks (compose prefixes them with the project)."""
    return {f"{project}_{n}" for n in NETWORKS}
