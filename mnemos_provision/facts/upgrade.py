"""
Facts for image upgrades (docs/upgrading.md): ServiceImages, the image each compose service's
container runs and the PostgreSQL major its data was written by, in one command.
"""

from __future__ import annotations

import shlex
from typing import TypedDict

from pyinfra.api import FactBase

from mnemos_provision.facts.docker import (
    ENGINE_API_SH,
    ENGINE_CURL,
    engine_url,
    project_containers,
)

# Where the compose block of postgres keeps its data (templates/services/postgres.yml.j2):
# the volume is mounted at MOUNT, PGDATA is MOUNT/pgdata, and initdb writes PG_VERSION there.
PG_MOUNT = "/var/lib/postgresql/data"
PG_VERSION_IN_VOLUME = "pgdata/PG_VERSION"


class ServiceImage(TypedDict):
    image: str  # the reference the container was created from (Config.Image)
    id: str  # the image ID it runs (sha256:...)


class ImagesState(TypedDict):
    containers: dict[str, ServiceImage]  # compose service -> its container's image
    pg_version: str | None  # PG_VERSION of the postgres volume (digits), None: no data read


class ServiceImages(FactBase[ImagesState | None]):
    """
    The image of every container of compose project `project` ({service: {"image", "id"}}),
    and the PostgreSQL major version the data of `pg_volume` was written by: PG_VERSION read
    from container `pg_container` with `docker cp` (a symlink there is archived, never
    followed), or, with no such container, from the volume's mount point when it is a regular
    file. Only digits are kept. None when Docker does not answer. Empty `pg_container`: no
    PostgreSQL to read.
    """

    def requires_command(self, *args, **kwargs) -> str:
        return "docker"

    def command(self, project: str, pg_container: str, pg_volume: str):
        q = shlex.quote
        fmt = ('I|{{index .Config.Labels "com.docker.compose.service"}}|{{.Config.Image}}|'
               "{{.Image}}")
        # the project's container IDs: from the Engine API's list (facts/docker.py, engine_api),
        # where each container's object starts with its Id, or from the CLI; then the CLI's
        # inspect, which alone reads Config.Image without the rest of the config (its env)
        listing = project_containers(project)
        # (an answer that lists containers but gives no ID this way goes to the CLI too)
        command = (
            f"if engine_api && j=$({ENGINE_CURL} {listing} 2>/dev/null </dev/null) && "
            """ids=$(printf '%s\\n' "$j" | grep -oE '(\\[|\\},)\\{"Id":"[0-9a-f]{64}"' """
            "| cut -d'\"' -f4) && { [ -n \"$ids\" ] || [ \"$j\" = '[]' ]; }; then :; "
            f"else ids=$(docker ps -aq --filter label=com.docker.compose.project={q(project)} "
            "2>/dev/null </dev/null) || { echo DOCKER_DOWN; exit 0; }; fi; "
            f'[ -z "$ids" ] || docker inspect -f {q(fmt)} $ids 2>/dev/null </dev/null; '
        )
        if not pg_container:
            return f"{ENGINE_API_SH}; " + command + "true"
        # PG_VERSION is copied out (the Engine API's archive, as `docker cp` reads it) while the
        # containers are listed and inspected: the copy is the left side of a pipe whose right
        # side reads it (cat) only after its own output
        archive = engine_url(f"/containers/{pg_container}/archive",
                             path=f"{PG_MOUNT}/{PG_VERSION_IN_VOLUME}")
        return (
            f"{ENGINE_API_SH}; "
            f"{{ {{ engine_api && {ENGINE_CURL} {archive}; }} || "
            f"docker cp {q(pg_container + ':' + PG_MOUNT + '/' + PG_VERSION_IN_VOLUME)} -; }} "
            "2>/dev/null </dev/null | tar -xOf - 2>/dev/null | head -c 16 | { " + command
            + 'v=$(cat); '
            f'[ -n "$v" ] || {{ mp=$(docker volume inspect -f \'{{{{.Mountpoint}}}}\' '
            f'{q(pg_volume)} 2>/dev/null) && f="$mp/{PG_VERSION_IN_VOLUME}" && [ -f "$f" ] && '
            '[ ! -L "$f" ] && v=$(head -c 16 "$f"); }; '
            'echo "PG|$v" | head -n 1; }'
        )

    def process(self, output) -> ImagesState | None:
        if output and output[0] == "DOCKER_DOWN":
            return None
        containers: dict[str, ServiceImage] = {}
        pg_version = None
        for line in output:
            parts = line.split("|")
            if parts[0] == "I" and len(parts) == 4 and parts[1]:
                containers[parts[1]] = {"image": parts[2], "id": parts[3]}
            elif parts[0] == "PG" and len(parts) == 2 and parts[1].strip().isdigit():
                pg_version = parts[1].strip()
        return {"containers": containers, "pg_version": pg_version}
