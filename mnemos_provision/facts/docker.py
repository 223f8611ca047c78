"""
Facts about Docker Engine and Compose: ComposeStatus (what the compose file wants and what runs),
DockerAnswers, DockerImagesPresent.

Every command is POSIX sh with tools a minimal Debian/Ubuntu has (coreutils, mawk, getent).
"""

from __future__ import annotations

import shlex
from typing import TypedDict

from pyinfra.api import FactBase


class ContainerState(TypedDict):
    hash: str  # com.docker.compose.config-hash of the running container
    state: str  # running, exited, ...
    health: str  # healthy, unhealthy, starting, or none (no health check)


class ComposeState(TypedDict):
    wanted: dict[str, str] | None  # service -> config hash; None: no compose file or no Docker
    running: dict[str, ContainerState] | None  # None: Docker does not answer


# The Compose plugin that `docker compose` runs, found as the docker CLI finds it (docker/cli
# cli-plugins/manager: the `cli-plugins` directory of $DOCKER_CONFIG or ~/.docker, then
# /usr/local/lib, /usr/local/libexec, /usr/lib and /usr/libexec's docker/cli-plugins; the first
# directory holding a docker-compose entry wins), into $c; empty, leaving it to `docker compose`,
# when the CLI's configuration adds plugin directories (cliPluginsExtraDirs) or the entry found is
# not an executable file. Run directly, the plugin answers `config --hash` as `docker compose`
# does in half the time: the docker CLI starts the 76 MB plugin twice, once for its metadata
# (47 ms against 90 ms, docs/performance.md).
COMPOSE_PLUGIN_SH = (
    'c=; cfg=${DOCKER_CONFIG:-${HOME:-/nonexistent}/.docker}; '
    'grep -qs cliPluginsExtraDirs "$cfg/config.json" || '
    'for p in "$cfg/cli-plugins" /usr/local/lib/docker/cli-plugins '
    '/usr/local/libexec/docker/cli-plugins /usr/lib/docker/cli-plugins '
    '/usr/libexec/docker/cli-plugins; do '
    'if [ -e "$p/docker-compose" ] || [ -L "$p/docker-compose" ]; then '
    '[ -f "$p/docker-compose" ] && [ -x "$p/docker-compose" ] && c=$p/docker-compose; break; fi; '
    'done; true'
)


class ComposeStatus(FactBase[ComposeState]):
    """
    What the rendered compose file wants and what runs, in one command:
    {"wanted": {service: config hash} | None,
     "running": {service: {"hash", "state", "health"}} | None}.
    `wanted` comes from `docker compose config --hash '*'` in the tree (active profiles only);
    either is None when Docker does not answer or the file is not there.
    """

    def requires_command(self, *args, **kwargs) -> str:
        return "docker"

    @staticmethod
    def default() -> ComposeState:
        return {"wanted": None, "running": None}

    def command(self, root: str, project: str):
        fmt = (
            'R|{{.Label "com.docker.compose.service"}}|{{.Label "com.docker.compose.config-hash"}}|'
            "{{.State}}|{{.Status}}"
        )
        return (
            f"docker ps -a --filter label=com.docker.compose.project={shlex.quote(project)} "
            f"--format {shlex.quote(fmt)} 2>/dev/null || {{ echo DOCKER_DOWN; exit 0; }}; "
            f"cd {shlex.quote(root)} 2>/dev/null && [ -f docker-compose.yml ] && "
            f"{{ {COMPOSE_PLUGIN_SH}; }} && "
            "{ if [ -n \"$c\" ]; then \"$c\" config --hash '*'; "
            "else docker compose config --hash '*'; fi; } 2>/dev/null | sed 's/^/W|/' "
            "|| echo NO_COMPOSE_FILE"
        )

    def process(self, output) -> ComposeState:
        if output and output[0] == "DOCKER_DOWN":
            return {"wanted": None, "running": None}
        wanted: dict[str, str] | None = {}
        running: dict[str, ContainerState] = {}
        for line in output:
            if line == "NO_COMPOSE_FILE":
                wanted = None
            elif line.startswith("W|"):
                parts = line[2:].split()
                if len(parts) == 2 and wanted is not None:
                    wanted[parts[0]] = parts[1]
            elif line.startswith("R|"):
                parts = line[2:].split("|")
                if len(parts) != 4:
                    continue
                service, config_hash, state, status = parts
                health = "none"
                for word in ("healthy", "unhealthy", "health: starting"):
                    if f"({word})" in status:
                        health = word.replace("health: ", "")
                running[service] = {"hash": config_hash, "state": state, "health": health}
        return {"wanted": wanted, "running": running}


class DockerAnswers(FactBase[bool]):
    """Whether the engine is up and reachable: `docker version` answers (cheaper than
    `docker info`)."""

    def command(self):
        return "docker version --format x >/dev/null 2>&1 && echo yes || echo no"

    def process(self, output):
        return bool(output) and output[0] == "yes"


class DockerImagesPresent(FactBase[set[str] | None]):
    """Which of `images` the engine has locally. Returns a set; None when Docker does not answer."""

    def requires_command(self, *args, **kwargs) -> str:
        return "docker"

    def command(self, images: list[str]):
        quoted = " ".join(shlex.quote(i) for i in images)
        # one Docker call when every image is there (a converged host): `docker image inspect`
        # of them all succeeds only then; otherwise each is asked on its own
        return (f"docker image inspect --format x {quoted} >/dev/null 2>&1 && "
                f"{{ printf '%s\\n' {quoted}; exit 0; }}; "
                "docker version --format x >/dev/null 2>&1 || { echo DOCKER_DOWN; exit 0; }; "
                f"for i in {quoted}; do docker image inspect \"$i\" >/dev/null 2>&1 "
                "&& echo \"$i\"; done; true")

    def process(self, output):
        if output and output[0] == "DOCKER_DOWN":
            return None
        return set(output)
