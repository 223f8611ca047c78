"""
Image upgrades of the compose stack (docs/upgrading.md), called by `compose.stack`:

- `image_changes`: the services whose running container was made from another image than the
  one now wanted (each is recreated alone; the run logs each before it does);
- `guard_problems`: the stateful versions a new image must not cross (PostgreSQL's major, read
  from PG_VERSION in its volume; a Vault or MinIO downgrade, which their upstreams do not
  support), checked before anything is pulled or stopped;
- `recreate_script`: the shell that recreates one service on its new image, waits for its health,
  and otherwise puts the previous image and configuration back, waits again and fails naming all
  of it;
- `keep_last_good`: the shell that keeps, after a healthy converge, the resolved compose
  configuration a later rollback puts back (root's own directory LAST_GOOD_DIR, 0700, the file
  0600: it holds the interpolated secrets).
"""

from __future__ import annotations

import posixpath
import re
import shlex

from pyinfra import host
from pyinfra.api import StringCommand

from mnemos_provision import stack
from mnemos_provision.fact_batch import DeclaredFacts, batched_operation
from mnemos_provision.facts.upgrade import ImagesState, ServiceImages
from mnemos_provision.operations.util import (
    AS_USER,
    ROOT_ONLY_CWD,
    as_user,
    fail_command,
    in_root_only_dir,
    stage_dir,
)

# How a service's data limits its image (docs/upgrading.md cites each upstream):
# - postgres: a major version opens only a data directory of its own major (PG_VERSION);
# - vault: "Vault does not make backward-compatibility guarantees for its data store" (Vault's
#   upgrade guide): an older version over data a newer one has written is refused;
# - minio: "Rollback is never supported ... we always move forward" (MinIO's maintainers,
#   minio/minio#7069): an older release over newer data is refused.
PG_MAJOR = "postgres"
NO_DOWNGRADE = ("vault", "minio")
UPGRADE_DEPLOY = "deploys/upgrade_postgres.py"
# Root's own directory (made 0700 by root in /var/lib, which only root can write): per compose
# project, the configuration of its last healthy converge (`docker compose config`: every value
# interpolated, paths absolute), which a rollback puts back for the one service it restarts.
LAST_GOOD_DIR = "/var/lib/mnemos/compose"


def last_good(project: str) -> str:
    """The last healthy compose configuration of `project` (root's, 0600)."""
    return f"{LAST_GOOD_DIR}/{project}/docker-compose.yml"


def keep_last_good(saved: str) -> str:
    """
    sh, in the compose project's directory, after its stack became healthy: `docker compose
    config` written to `saved` (last_good(project)) through a new name renamed into place, in
    root's directory (made `mkdir -m 700`, entered with cd -P and checked root-only; umask 077,
    so the copy, which holds the interpolated secrets, is 0600 from its first byte). A run that
    is not root keeps none (a rollback then restores the image only). Its failure is a warning:
    the stack is healthy.
    """
    q = shlex.quote
    directory, name = posixpath.split(saved)
    save = in_root_only_dir(directory, (
        'umask 077 && rm -f .last-good.new && docker compose -f "$here/docker-compose.yml" '
        f"config > .last-good.new 2>/dev/null && mv -f .last-good.new {q(name)} "
        "|| { rm -f .last-good.new; exit 1; }"))
    warn = q(f"mnemos: warning: the configuration of this healthy stack could not be kept in "
             f"{saved}: a rollback of a later image change will put back the "
             "image only")
    return (f'if [ "$(id -u)" = 0 ]; then here=$(pwd -P); '
            f"( umask 077 && mkdir -p -m 700 {q(directory)} ) 2>/dev/null; "
            f"{save} 2>/dev/null || echo {warn} >&2; fi; true")


def facts_args(project: str) -> tuple:
    """The ServiceImages declaration of `compose.stack` for `project`."""
    pg = stack.service(PG_MAJOR)
    return (ServiceImages, {"project": project,
                            "pg_container": pg.container_name(project),
                            "pg_volume": f"{project}_{pg.volume}"})


def tag_of(image: str) -> str:
    """The tag of an image reference ("" when it has none)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else ""


def pg_major(image: str) -> str | None:
    """The PostgreSQL major an image's tag names: `16.11-alpine` -> 16; None when the tag does not
    start with one (`latest`, `debian12`)."""
    found = re.match(r"(\d+)(?:\.|-|$)", tag_of(image))
    return found.group(1) if found else None


def release_version(image: str) -> tuple[int, ...] | None:
    """A comparable version of a Vault (`1.21.0`) or MinIO (`RELEASE.2025-09-07T16-13-09Z`) tag;
    None when the tag is neither."""
    tag = tag_of(image)
    if re.fullmatch(r"\d+(\.\d+)*", tag):
        return tuple(int(p) for p in tag.split("."))
    found = re.fullmatch(r"RELEASE\.(\d{4})-(\d\d)-(\d\d)T(\d\d)-(\d\d)-(\d\d)Z", tag)
    return tuple(int(p) for p in found.groups()) if found else None


def image_changes(images: dict[str, str], state: ImagesState | None) -> dict[str, str]:
    """{service: the image its container runs now} for every wanted service whose existing
    container was made from another image reference than `images` wants."""
    if state is None:
        return {}
    running = state["containers"]
    return {name: running[name]["image"] for name, image in images.items()
            if name in running and running[name]["image"] != image}


def guard_problems(images: dict[str, str], state: ImagesState | None, project: str) -> list[str]:
    """Why the wanted images must not start on the data there (nothing pulled or stopped yet)."""
    if state is None:
        return []
    problems = []
    changes = image_changes(images, state)
    if PG_MAJOR in images and state["pg_version"]:
        data, new = state["pg_version"], images[PG_MAJOR]
        major = pg_major(new)
        volume = f"{project}_{stack.service(PG_MAJOR).volume}"
        way = (f"upgrade with `pyinfra <inventory> {UPGRADE_DEPLOY}` (a verified backup, the new "
               "major on a new volume, every table's rows counted, then the switch; "
               f'docs/upgrading.md), or set images["{PG_MAJOR}"] back to an image of '
               f"PostgreSQL {data}")
        if major is not None and major != data:
            problems.append(
                f"{PG_MAJOR}: the data in volume {volume} was written by PostgreSQL {data} and "
                f'images["{PG_MAJOR}"] is {new} (PostgreSQL {major}); a major version cannot open '
                f"another major's data. Nothing was pulled or stopped: {way}")
        elif major is None and PG_MAJOR in changes:
            problems.append(
                f'{PG_MAJOR}: images["{PG_MAJOR}"] is {new}, whose tag does not name its major '
                f"version, and the data in volume {volume} was written by PostgreSQL {data}. "
                f"Nothing was pulled or stopped: use a tag that starts with the major (e.g. "
                f"{data}-alpine) if it is PostgreSQL {data}; otherwise {way}")
    for name in NO_DOWNGRADE:
        if name not in changes:
            continue
        old, new = changes[name], images[name]
        before, after = release_version(old), release_version(new)
        if before is not None and after is not None and after < before:
            problems.append(
                f'{name}: images["{name}"] is {new}, older than {old} which runs on its data; '
                f"{stack.service(name).label} does not support a downgrade over data a newer "
                "version has written (docs/upgrading.md). Nothing was pulled or stopped: set "
                f'images["{name}"] to {old} or newer, or restore a backup taken before the '
                "upgrade with the older version")
    return problems


def recreate_script(service: str, new_image: str, previous: dict[str, str], timeout: int,
                    stage: str, saved: str) -> str:
    """
    sh (in the compose project's directory): recreate `service` alone on `new_image` and wait
    for it to be healthy; otherwise keep its health output and last log lines, start it again
    from `previous` (the image ID it ran, so a moved tag cannot change it) with the
    configuration of the last healthy converge (`saved`: last_good(project), when root kept one
    that has the service in a directory only root can write; else this run's docker-
    compose.yml), through a compose override file written in root's new directory `stage`, wait
    again, and fail naming the service, the new image, its health output, its log lines and the
    rollback. Volumes are never removed (`docker compose up` keeps named volumes).
    """
    q = shlex.quote
    wait = f"--wait --wait-timeout {int(timeout)}"
    override = f"services:\n  {service}:\n    image: {previous['id']}\n"
    health_fmt = ("{{if .State.Health}}{{.State.Health.Status}}: {{range .State.Health.Log}}"
                  "{{.Output}}{{end}}{{else}}{{.State.Status}}{{end}}")
    back = (f"it was rolled back to the image it ran before, {previous['image']} "
            f"({previous['id'][:19]}), ")
    rolled_config = back + ("and to its configuration of the last healthy converge "
                            f"({saved}), and is healthy again")
    rolled_image = back + ("with this run's configuration (no configuration of a healthy "
                           "converge was kept), and is healthy again")
    not_rolled = (f"the rollback to {previous['image']} ({previous['id'][:19]}) did NOT become "
                  "healthy either: see `docker compose ps` and `docker compose logs`")
    head = (f"mnemos: {service}: the new image {new_image} did not become healthy within "
            f"{int(timeout)} s; ")
    tail = (f". Its volumes were not touched. Set images[\"{service}\"] to an image that "
            "starts, or back to the one it ran. Health output of the new container:")
    # the kept configuration is read only from root's own directory, and only when it has the
    # service (its YAML, from `docker compose config`, names each service at two spaces)
    directory, name = posixpath.split(saved)
    pick = (f"if ( cd -P -- {q(directory)} 2>/dev/null && {ROOT_ONLY_CWD} && "
            f"[ -f {q(name)} ] && [ ! -L {q(name)} ] && "
            f"grep -qx {q(f'  {service}:')} {q(name)} ); then "
            f"f={q(saved)}; r={q(rolled_config)}; else f=docker-compose.yml; r={q(rolled_image)}; "
            "fi; ")
    return (
        f"if ! docker compose up -d --no-deps {wait} {q(service)} >/dev/null 2>&1; then "
        f"h=$(docker inspect -f {q(health_fmt)} \"$(docker compose ps -a -q {q(service)})\" "
        "2>&1 | tail -n 5); "
        f"l=$(docker compose logs --no-color --tail 20 {q(service)} 2>&1); {pick}"
        f"mkdir -m 700 {q(stage)} && printf %s {q(override)} > {q(stage + '/rollback.yml')} && "
        f"docker compose -f \"$f\" -f {q(stage + '/rollback.yml')} up -d --no-deps "
        f"{wait} {q(service)} >/dev/null 2>&1 || r={q(not_rolled)}; "
        f"rm -rf {q(stage)}; "
        f"echo {q(head)}\"$r\"{q(tail)} >&2; printf '%s\\n' \"$h\" >&2; "
        f"echo {q(f'--- {service} ({new_image}): last log lines')} >&2; "
        "printf '%s\\n' \"$l\" >&2; exit 1; fi"
    )


# ---------------------------------------------------------------- deploys/upgrade_postgres.py

# Each table's exact row count, one "schema.table|count" line per table, in one query.
COUNT_SQL = (
    "select n.nspname || '.' || c.relname || '|' || (xpath('/row/c/text()', query_to_xml("
    "format('select count(*) as c from %I.%I', n.nspname, c.relname), false, true, '')))[1]"
    "::text from pg_class c join pg_namespace n on n.oid = c.relnamespace "
    "where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema') "
    "and n.nspname not like 'pg_toast%' order by 1"
)
DATABASES_SQL = ("select datname from pg_database where datallowconn and not datistemplate "
                 "order by 1")


def postgres_upgrade_script(root: str, project: str, user: str, group: str, old: dict[str, str],
                            new_image: str, data_major: str, timeout: int, stage: str) -> str:
    """
    sh (needs AS_USER) of deploys/upgrade_postgres.py, each step checked, the first failure
    stopping it with what is where: a verified backup (scripts/backup/backup-all.sh as `user`,
    the archive's checksum checked), `new_image` started on a new volume (no network) and every
    database restored into it with pg_dumpall, every table's rows counted in both, then the
    switch (the service stopped, its data copied into a kept volume, the new data put in its
    place, the service started on `new_image` and counted again). A failure after the switch puts
    the kept data back and starts the service on the image it ran (`old`).
    """
    q = shlex.quote
    pg = stack.service(PG_MAJOR)
    container = pg.container_name(project)
    volume = f"{project}_{pg.volume}"
    nxt, keep = f"{volume}-next", f"{volume}-pg{data_major}"
    temp = f"{container}-upgrade"
    backup = as_user(user, group, "sh", f"{root}/scripts/backup/backup-all.sh")
    verify = as_user(user, group, "sh", "-c",
                     'cd "$(dirname "$1")" && sha256sum -c --status "$(basename "$1").sha256"',
                     "-") + ' "$A"'
    override = f"services:\n  {PG_MAJOR}:\n    image: {old['id']}\n"
    psql = 'psql -X -v ON_ERROR_STOP=0 -q -U "$POSTGRES_USER" -d postgres'
    count = ('for db in $(psql -XAt -U "$POSTGRES_USER" -d postgres -c "$1"); do '
             'psql -XAt -U "$POSTGRES_USER" -d "$db" -c "$2" | sed "s/^/$db./"; done')
    copy = "rm -rf /to/pgdata && cp -a /from/pgdata /to/pgdata"
    return "\n".join([
        f"cd {q(root)} || exit 1",
        f"C={q(container)}; V={q(volume)}; NV={q(nxt)}; KEEP={q(keep)}; T={q(temp)}",
        f"OLD={q(old['id'])}; NEW={q(new_image)}; S={q(stage)}",
        'say() { echo "upgrade_postgres: $*"; }',
        'die() { docker rm -f "$T" >/dev/null 2>&1; rm -rf "$S"; '
        'echo "mnemos: upgrade_postgres: $*" >&2; exit 1; }',
        f"counts() {{ docker exec \"$1\" sh -c {q(count)} - {q(DATABASES_SQL)} "
        f"{q(COUNT_SQL)} | sort; }}",
        f'wait_ready() {{ i=0; until docker exec "$1" pg_isready -q -h 127.0.0.1 '
        f'-U "$(docker exec "$1" printenv POSTGRES_USER)" >/dev/null 2>&1; do i=$((i+1)); '
        f'[ $i -lt {int(timeout)} ] || return 1; sleep 1; done; }}',
        # nothing kept from an earlier upgrade is overwritten
        'docker volume inspect "$KEEP" >/dev/null 2>&1 && die "volume $KEEP exists (the data '
        'kept by an earlier upgrade): remove it (docker volume rm $KEEP) or rename it first; '
        'nothing was changed"',
        '[ "$(docker inspect -f \'{{.State.Running}}\' "$C" 2>/dev/null)" = true ] || '
        'die "container $C is not running: start it on its current image (a converge with the '
        'image it ran) first; nothing was changed"',
        'mkdir -m 700 "$S" || die "cannot make $S; nothing was changed"',
        'say "1/5 a verified backup (scripts/backup/backup-all.sh)"',
        f"out=$({backup} 2>&1) || die \"the backup failed, nothing was changed: $out\"",
        'A=$(printf "%s\\n" "$out" | sed -n "s/^backup: wrote //p" | tail -n 1)',
        f'[ -n "$A" ] && {verify} || die "the backup archive '
        '$A does not match its checksum; nothing was changed"',
        'say "backup: $A (checksum verified)"',
        'say "2/5 PostgreSQL $NEW on the new volume $NV"',
        'docker image inspect "$NEW" >/dev/null 2>&1 || docker pull -q "$NEW" >/dev/null || '
        'die "image $NEW cannot be pulled; nothing was changed"',
        'docker rm -f "$T" >/dev/null 2>&1; docker volume rm "$NV" >/dev/null 2>&1',
        'docker volume create --label mnemos.upgrade=next "$NV" >/dev/null || die "cannot '
        'create volume $NV; nothing was changed"',
        # the password goes through the docker client's environment, never a command line
        'POSTGRES_USER=$(docker exec "$C" printenv POSTGRES_USER) && '
        'POSTGRES_PASSWORD=$(docker exec "$C" printenv POSTGRES_PASSWORD) && '
        'export POSTGRES_USER POSTGRES_PASSWORD || die "cannot read the account of $C"',
        'docker run -d --name "$T" --network none -v "$NV:/var/lib/postgresql/data" '
        '-e POSTGRES_USER -e POSTGRES_PASSWORD -e PGDATA=/var/lib/postgresql/data/pgdata '
        '-e POSTGRES_INITDB_ARGS="-E UTF8 --locale=C.UTF-8" "$NEW" >/dev/null '
        '|| die "cannot start $NEW; nothing was changed"',
        'unset POSTGRES_PASSWORD',
        'wait_ready "$T" || die "$NEW did not become ready on $NV: $(docker logs --tail 20 '
        '"$T" 2>&1); nothing was changed"',
        'say "3/5 every database restored into it (pg_dumpall)"',
        f"docker exec \"$C\" sh -c 'pg_dumpall -U \"$POSTGRES_USER\"' | docker exec -i \"$T\" "
        f"sh -c {q(psql)} > /dev/null 2> \"$S/err\"; "
        'errors=$(grep "ERROR" "$S/err" | grep -v "already exists")',
        '[ -z "$errors" ] || die "the restore into $NEW failed: $errors; nothing was changed"',
        'say "4/5 every table\'s rows counted in both"',
        'before=$(counts "$C") && after=$(counts "$T") || die "cannot count the rows; nothing '
        'was changed"',
        '[ "$before" = "$after" ] || die "the row counts differ (was anything writing to the '
        'database?), nothing was changed: $(printf "%s\\n" "$before" > "$S/a"; '
        'printf "%s\\n" "$after" > "$S/b"; diff "$S/a" "$S/b" | head -n 20)"',
        'say "rows: $(printf "%s\\n" "$before" | grep -c .) tables, the same count in each"',
        'say "5/5 the switch: $C stopped, its data kept in $KEEP, the new data in $V"',
        'docker stop "$T" >/dev/null; docker rm "$T" >/dev/null',
        f'docker compose stop {PG_MAJOR} >/dev/null 2>&1 || die "cannot stop {PG_MAJOR}"',
        'docker volume create --label mnemos.upgrade=kept "$KEEP" >/dev/null && '
        'docker run --rm --network none -v "$V:/from:ro" -v "$KEEP:/to" --entrypoint sh "$OLD" '
        f'-c {q(copy)} || {{ docker compose start {PG_MAJOR} >/dev/null 2>&1; die "cannot '
        f'copy the data into $KEEP; {PG_MAJOR} was started again on its own data"; }}',
        'docker run --rm --network none -v "$NV:/from:ro" -v "$V:/to" --entrypoint sh "$OLD" '
        f'-c {q(copy)} || die "the switch failed half-way: the old data is in $KEEP"',
        f'printf %s {q(override)} > "$S/old.yml"',
        f'if ! docker compose up -d --no-deps --wait --wait-timeout {int(timeout)} '
        f'{PG_MAJOR} >/dev/null 2>&1 || [ "$(counts "$C")" != "$before" ]; then '
        f'docker compose stop {PG_MAJOR} >/dev/null 2>&1; '
        'docker run --rm --network none -v "$KEEP:/from:ro" -v "$V:/to" --entrypoint sh "$OLD" '
        f'-c {q(copy)} && docker compose -f docker-compose.yml -f "$S/old.yml" up -d --no-deps '
        f'--wait --wait-timeout {int(timeout)} {PG_MAJOR} >/dev/null 2>&1 && '
        'die "$NEW did not come up healthy with every row on $V: the old data was put back and '
        f'{PG_MAJOR} runs the image it ran ({old["image"]}); the new data is in $NV"; '
        'die "$NEW did not come up healthy with every row, and putting the old data back failed: '
        'it is in $KEEP"; fi',
        'docker volume rm "$NV" >/dev/null 2>&1; rm -rf "$S"',
        f'say "done: {PG_MAJOR} runs $NEW with every row; the data of PostgreSQL {data_major} is '
        'kept in volume $KEEP: once you are satisfied, remove it with docker volume rm $KEEP"',
    ])


@batched_operation(lambda project, **_: {"images": facts_args(project)})
def postgres_major(facts: DeclaredFacts, root: str, project: str, user: str, group: str,
                   image: str, timeout: int):
    """
    Move the PostgreSQL data of a compose stack to the major version of `image`: a verified
    backup, `image` on a new volume with every database restored into it, every table's rows
    counted in both, then the switch; the old data is kept in volume
    `<project>_postgres-data-pg<old major>` (docs/upgrading.md). A no-op when the data was
    written by the major of `image` already and the service runs `image`.

    + root: directory of docker-compose.yml and .env (rendered with `image` already)
    + project: compose project name
    + user: the account that runs scripts/backup/backup-all.sh (mnemos_user)
    + group: its group
    + image: the new PostgreSQL image (its tag starts with its major: `17.2-alpine`)
    + timeout: seconds each start may take to become ready

    **Example:**

    .. code:: python

        upgrade.postgres_major(root="/home/dev/mnemos", project="mnemos", user="dev",
                               group="dev", image="postgres:17.2-alpine", timeout=300)
    """
    state = facts["images"]
    running = (state or {}).get("containers", {}).get(PG_MAJOR)
    data = (state or {}).get("pg_version")
    if state is None or running is None or not data:
        yield fail_command(f"upgrade_postgres: no {PG_MAJOR} container with data in project "
                           f"{project} (Docker down, or the stack never started): a converge "
                           "starts it on the image you set; there is nothing to upgrade")
        return
    major = pg_major(image)
    if major is None:
        yield fail_command(f'upgrade_postgres: images["{PG_MAJOR}"] is {image}, whose tag does '
                           "not start with its major version (e.g. 17.2-alpine): set one that "
                           "does; nothing was changed")
        return
    if major == data and running["image"] == image:
        host.noop(f"{PG_MAJOR} runs {image} on data of PostgreSQL {data}: nothing to upgrade")
        return
    keep = f"{project}_{stack.service(PG_MAJOR).volume}-pg{data}"
    host.log(f"Will move {PG_MAJOR}'s data (PostgreSQL {data}, {running['image']}) to {image} "
             f"(PostgreSQL {major}) after a verified backup; the data of PostgreSQL {data} "
             f"will be kept in volume {keep}: once you are satisfied, remove it with "
             f"`docker volume rm {keep}`")
    yield StringCommand(f"{AS_USER}\n" + postgres_upgrade_script(
        root, project, user, group, running, image, data, timeout, stage_dir()))
