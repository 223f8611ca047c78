"""
Rotation: a secret's new value set in the service that holds it (deploys/rotate.py,
docs/rotation.md). `rotation.postgres_password` (ALTER ROLE with a SCRAM-SHA-256 verifier),
`rotation.redis_password` (Redis's running requirepass), `rotation.grafana_password` (`grafana cli
admin reset-admin-password`), `rotation.check_password` (the new value accepted by the service,
the old one refused). Each is called only while a rotation is in progress,
so each changes the host; none reads a fact.

No value is ever on a command line: root stages it in a 0700 directory of its own (as
files.secret does) and the container's shell reads it on its standard input; the clients get it in
their environment (PGPASSWORD, REDISCLI_AUTH), readable by their own account only, or on their
standard input (redis-cli -x). PostgreSQL gets a SCRAM verifier, not the password (what psql's
\\password sends): a logged statement shows no password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as csprng
import shlex

from pyinfra import host

from mnemos_provision.fact_batch import DeclaredFacts, batched_operation
from mnemos_provision.operations.files import staged_uploads
from mnemos_provision.operations.util import stage_dir, staged_run


def scram_sha_256(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of `password` (RFC 5802/7677; the format of
    pg_authid.rolpassword, as libpq's PQencryptPasswordConn makes it). The deploy's secrets are
    letters and digits, which SASLprep leaves as they are."""
    salt = salt if salt is not None else csprng.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _running(container: str, root: str, service: str) -> str:
    """Shell: the service's container running (started by compose with the tree's current .env
    when it is not), then up to 60 s for it to answer `probe`."""
    q = shlex.quote
    return (f"{{ [ \"$(docker inspect -f '{{{{.State.Running}}}}' {q(container)} 2>/dev/null)\" "
            f"= true ] || ( cd {q(root)} && docker compose up -d --wait {q(service)} >&2 ) || "
            f"{{ echo {q(f'mnemos: {container} is not running and could not be started: start it (docker compose up -d {service} in {root}) and run again; the rotation stays recorded in the secret state')} >&2; exit 1; }}; }}")  # noqa: E501


def running(container: str, root: str, service: str) -> str:
    """_running, for operations of other modules (vault.rotate_token)."""
    return _running(container, root, service)


def _wait(container: str, probe: str) -> str:
    q = shlex.quote
    return (f"{{ i=0; until docker exec {q(container)} sh -c {q(probe)} >/dev/null 2>&1; do "
            f"i=$((i+1)); [ $i -lt 60 ] || {{ echo {q(f'mnemos: {container} did not answer')} "
            ">&2; exit 1; }; sleep 1; done; }")


def _in_container(stage: str, container: str, script: str) -> str:
    """Shell: `script` run by sh in `container`, its standard input root's staged file 0."""
    q = shlex.quote
    return f"docker exec -i {q(container)} sh -c {q(script)} < {q(stage + '/0')}"


@batched_operation(lambda **_: {})
def postgres_password(facts: DeclaredFacts, container: str, root: str, service: str, role: str,
                      verifier: str):
    """
    Set a PostgreSQL role's password (ALTER ROLE ... PASSWORD '<SCRAM verifier>'), as the
    superuser over the container's local socket (pg_hba.conf: local trust), so it works whatever
    password the role had. The container is started first when it is not running.

    + container: the PostgreSQL container
    + root: the compose project's directory (the tree)
    + service: its compose service
    + role: the role whose password changes
    + verifier: the new password's SCRAM-SHA-256 verifier (rotation.scram_sha_256)

    **Example:**

    .. code:: python

        rotation.postgres_password(container="mnemos-postgres", root="/home/dev/mnemos",
                                   service="postgres", role="mnemos",
                                   verifier=rotation.scram_sha_256(new_password))
    """
    stage = stage_dir()
    ident = '"' + role.replace('"', '""') + '"'
    sql = f"ALTER ROLE {ident} PASSWORD '{verifier}';\n".encode()
    yield from staged_uploads(stage, [sql], target=host)
    script = (f'psql -X -q -v ON_ERROR_STOP=1 -U {shlex.quote(role)} -d postgres >/dev/null || '
              '{ echo "mnemos: ALTER ROLE failed" >&2; exit 1; }')
    yield staged_run(stage, [_running(container, root, service),
                             _wait(container, "pg_isready -q"),
                             _in_container(stage, container, script)])


# sh in the Redis container, stdin: the new password, then the old one. Authenticates with
# whichever the server holds (a run killed after the change holds the new one; a restarted
# container, the one of its environment) and sets the new one in the running config.
_REDIS_SET = (
    'IFS= read -r new; IFS= read -r old; '
    'for p in "$new" "$old"; do '
    'if REDISCLI_AUTH="$p" redis-cli ping 2>/dev/null | grep -q PONG; then '
    'if printf %s "$new" | REDISCLI_AUTH="$p" redis-cli -x CONFIG SET requirepass '
    '| grep -q OK; then exit 0; fi; echo "mnemos: CONFIG SET requirepass failed" >&2; exit 1; '
    'fi; done; '
    'echo "mnemos: Redis accepts neither the old nor the new password" >&2; exit 1')


@batched_operation(lambda **_: {})
def redis_password(facts: DeclaredFacts, container: str, root: str, service: str, new: str,
                   old: str):
    """
    Set Redis's password in its running config (CONFIG SET requirepass, which replaces the
    default user's passwords), authenticated with the new password or the old one, whichever
    the server holds. Its configuration is the container's environment (REDIS_PASSWORD from
    .env, given to redis-server on stdin at start): the tree role writes .env, and compose
    recreates the container with it. The container is started first when it is not running.

    + container: the Redis container
    + root: the compose project's directory (the tree)
    + service: its compose service
    + new: the new password
    + old: the password before the rotation

    **Example:**

    .. code:: python

        rotation.redis_password(container="mnemos-redis", root="/home/dev/mnemos",
                                service="redis", new=new_password, old=old_password)
    """
    stage = stage_dir()
    yield from staged_uploads(stage, [f"{new}\n{old}\n".encode()], target=host)
    yield staged_run(stage, [_running(container, root, service),
                             _wait(container, "redis-cli ping | grep -q -e PONG -e NOAUTH"),
                             _in_container(stage, container, _REDIS_SET)])


# Grafana 13's CLI (pkg/cmd/grafana-cli/commands/reset_password_command.go): the admin user (id 1,
# created at the first start) gets the password read from stdin, written to grafana.db with the
# user's salt; it works whatever password the admin has, as ALTER ROLE over the local socket does.
# The image's GF_PATHS_* environment and its config file give the CLI the server's grafana.db.
_GRAFANA_SET = (
    'grafana cli --homepath "$GF_PATHS_HOME" --config "$GF_PATHS_CONFIG" '
    'admin reset-admin-password --password-from-stdin >/dev/null 2>&1 '
    '|| { echo "mnemos: grafana cli admin reset-admin-password failed" >&2; exit 1; }')


@batched_operation(lambda **_: {})
def grafana_password(facts: DeclaredFacts, container: str, root: str, service: str, new: str):
    """
    Set Grafana's admin password in grafana.db with `grafana cli admin reset-admin-password
    --password-from-stdin` in its container (as its own user), whatever password the admin has.
    GF_SECURITY_ADMIN_PASSWORD is read only at the first start (when grafana.db has no user), so
    the container's environment is not what holds it. The container is started first when it is
    not running.

    + container: the Grafana container
    + root: the compose project's directory (the tree)
    + service: its compose service
    + new: the new password

    **Example:**

    .. code:: python

        rotation.grafana_password(container="mnemos-grafana", root="/home/dev/mnemos",
                                  service="grafana", new=new_password)
    """
    stage = stage_dir()
    yield from staged_uploads(stage, [f"{new}\n".encode()], target=host)
    yield staged_run(stage, [_running(container, root, service),
                             _wait(container, "wget -q --spider http://127.0.0.1:3000/api/health"),
                             _in_container(stage, container, _GRAFANA_SET)])


# sh in the container, stdin: the new password, then the old one; $1 the service's login check
# run with $P holding a password
_CHECK = (
    'IFS= read -r new; IFS= read -r old; '
    'P=$new; export P; sh -c "$1" >/dev/null 2>&1 '
    '|| { echo "mnemos: $2 refuses the new password" >&2; exit 1; }; '
    'P=$old; sh -c "$1" >/dev/null 2>&1 '
    '&& { echo "mnemos: $2 still accepts the old password" >&2; exit 1; }; exit 0')

LOGIN_CHECKS = {
    # over TCP (pg_hba.conf: scram-sha-256), as the application connects
    "postgres": 'PGPASSWORD="$P" psql -X -h 127.0.0.1 -U "$USER_NAME" -d postgres -tAc "select 1"'
                ' | grep -q 1',
    "redis": 'REDISCLI_AUTH="$P" redis-cli ping | grep -q PONG',
    # Grafana's API with basic auth (the signed-in user); curl reads the credentials from its
    # config on stdin (printf is sh's builtin): no password on a command line
    "grafana": 'printf \'user = "%s:%s"\\n\' "$USER_NAME" "$P" | curl -fsS -o /dev/null -K - '
               'http://127.0.0.1:3000/api/user',
    # MinIO's S3 API as the root (ListBuckets, signed with the password: MinIO verifies the
    # signature), with mc and an alias in the environment, as the image's healthcheck uses mc
    "minio-root": 'MC_HOST_rotation="http://$USER_NAME:$P@127.0.0.1:9000" mc ls rotation',
}


@batched_operation(lambda **_: {})
def check_password(facts: DeclaredFacts, kind: str, container: str, user: str, new: str,
                   old: str):
    """
    Check a rotation in the service itself: the new password accepted (PostgreSQL over TCP with
    scram-sha-256; Redis's AUTH; Grafana's API with basic auth; MinIO's S3 API signed as the
    root), the old one refused. Fails naming the service otherwise.

    + kind: a key of LOGIN_CHECKS ("postgres", "redis", "grafana", "minio-root")
    + container: the service's container
    + user: the account that logs in (PostgreSQL's role, Grafana's admin, MinIO's root user;
      ignored by Redis)
    + new: the new password
    + old: the password before the rotation

    **Example:**

    .. code:: python

        rotation.check_password(kind="redis", container="mnemos-redis", user="",
                                new=new_password, old=old_password)
    """
    if kind not in LOGIN_CHECKS:
        raise ValueError(f"kind = {kind!r}: expected one of {', '.join(LOGIN_CHECKS)}")
    q = shlex.quote
    stage = stage_dir()
    yield from staged_uploads(stage, [f"{new}\n{old}\n".encode()], target=host)
    run = (f"docker exec -i -e USER_NAME={q(user)} {q(container)} sh -c {q(_CHECK)} - "
           f"{q(LOGIN_CHECKS[kind])} {q(container)} < {q(stage + '/0')}")
    yield staged_run(stage, [run])
