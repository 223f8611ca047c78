"""
Facts about Docker Engine and Compose: ComposeStatus (what the compose file wants and what runs),
DockerAnswers, DockerImagesPresent.

Every command is POSIX sh with tools a minimal Debian/Ubuntu has (coreutils, mawk, getent).
"""

from __future__ import annotations

import json
import shlex
from typing import TypedDict
from urllib.parse import quote

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


# The Engine API, read with curl over the engine's default socket, where the docker CLI would use
# that same socket: no DOCKER_HOST, no DOCKER_CONTEXT, no context chosen in the CLI's config
# (DOCKER_CONFIG or ~/.docker), and curl installed (`engine_api`). A docker CLI call costs a Go
# program's start, 15-20 ms of CPU, and these reads are on every run's path (docs/performance.md).
# Elsewhere, or when curl gets no answer (no engine, no permission, an HTTP error: -f), each fact
# asks the docker CLI as before. curl reads no .curlrc (-q first), uses no proxy, never globs.
DOCKER_SOCKET = "/var/run/docker.sock"
ENGINE_API_SH = (
    'engine_api() { [ -z "${DOCKER_HOST:-}${DOCKER_CONTEXT:-}" ] && '
    f"[ -S {DOCKER_SOCKET} ] && command -v curl >/dev/null 2>&1 && "
    """! grep -qs '"currentContext"' """
    '"${DOCKER_CONFIG:-${HOME:-/nonexistent}/.docker}/config.json"; }'
)
ENGINE_CURL = f"curl -q -sf -g --noproxy '*' --unix-socket {DOCKER_SOCKET}"


def engine_url(endpoint: str, **query: str) -> str:
    """The Engine API's URL of `endpoint` (percent-encoded) with `query`, quoted for sh."""
    url = "http://localhost" + quote(endpoint, safe="/:@")
    if query:
        url += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    return shlex.quote(url)


def project_containers(project: str, stopped: bool = True) -> str:
    """The Engine API's URL listing the containers of compose project `project`, the stopped ones
    too (as `docker ps -a`) unless `stopped` is False; quoted for sh."""
    filters = json.dumps({"label": [f"com.docker.compose.project={project}"]},
                         separators=(",", ":"))
    return (engine_url("/containers/json", all="1", filters=filters) if stopped
            else engine_url("/containers/json", filters=filters))


def json_list(value: str) -> list[dict]:
    """The objects of a JSON list (an Engine API answer); [] for anything else."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return []
    return [item for item in parsed if isinstance(item, dict)] if isinstance(parsed, list) else []


def _container_state(config_hash: str, state: str, status: str) -> ContainerState:
    health = "none"
    for word in ("healthy", "unhealthy", "health: starting"):
        if f"({word})" in status:
            health = word.replace("health: ", "")
    return {"hash": config_hash, "state": state, "health": health}


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
        # the Engine API's list (a line J|<json>) or the CLI's (lines R|...)
        listing = project_containers(project)
        return (
            f"{ENGINE_API_SH}; "
            f"if engine_api && j=$({ENGINE_CURL} {listing} 2>/dev/null </dev/null); "
            "then printf 'J|%s\\n' \"$j\"; "
            f"else docker ps -a --filter label=com.docker.compose.project={shlex.quote(project)} "
            f"--format {shlex.quote(fmt)} 2>/dev/null || {{ echo DOCKER_DOWN; exit 0; }}; fi; "
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
                running[service] = _container_state(config_hash, state, status)
            elif line.startswith("J|"):
                for container in json_list(line[2:]):
                    labels = container.get("Labels")
                    labels = labels if isinstance(labels, dict) else {}
                    running[str(labels.get("com.docker.compose.service", ""))] = _container_state(
                        str(labels.get("com.docker.compose.config-hash", "")),
                        str(container.get("State", "")), str(container.get("Status", "")))
        return {"wanted": wanted, "running": running}


class DockerAnswers(FactBase[bool]):
    """Whether the engine is up and reachable: the Engine API's /_ping answers, or, where the API
    is not read (engine_api), `docker version` (cheaper than `docker info`)."""

    def command(self):
        return (f"{ENGINE_API_SH}; {{ {{ engine_api && {ENGINE_CURL} {engine_url('/_ping')}; }} || "
                "docker version --format x; } >/dev/null 2>&1 </dev/null && echo yes || echo no")

    def process(self, output):
        return bool(output) and output[0] == "yes"


class DockerImagesPresent(FactBase[set[str] | None]):
    """Which of `images` the engine has locally. Returns a set; None when Docker does not answer."""

    def requires_command(self, *args, **kwargs) -> str:
        return "docker"

    def command(self, images: list[str]):
        quoted = " ".join(shlex.quote(i) for i in images)
        # a converged host has every image: through the Engine API one curl, every answer 200
        # (curl prints one code a line); else one `docker image inspect` of them all, which
        # succeeds only then; otherwise each is asked on its own
        urls = " ".join(f"-o /dev/null {engine_url(f'/images/{i}/json')}" for i in images)
        return (f"{ENGINE_API_SH}; if engine_api && codes=$({ENGINE_CURL} -w '%{{http_code}}\\n' "
                f"{urls} 2>/dev/null </dev/null; true) && [ -n \"$codes\" ] && "
                "[ -z \"$(printf '%s\\n' \"$codes\" | grep -vx 200)\" ] && "
                f"[ \"$(printf '%s\\n' \"$codes\" | wc -l)\" -eq {len(images)} ]; then "
                f"printf '%s\\n' {quoted}; exit 0; fi; "
                f"docker image inspect --format x {quoted} >/dev/null 2>&1 && "
                f"{{ printf '%s\\n' {quoted}; exit 0; }}; "
                "docker version --format x >/dev/null 2>&1 || { echo DOCKER_DOWN; exit 0; }; "
                f"for i in {quoted}; do docker image inspect \"$i\" >/dev/null 2>&1 "
                "&& echo \"$i\"; done; true")

    def process(self, output):
        if output and output[0] == "DOCKER_DOWN":
            return None
        return set(output)
