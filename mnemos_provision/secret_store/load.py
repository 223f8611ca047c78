"""
Loading the secret state for a run: one read of the host (with the operations' privileges), the
decision of mnemos_provision.secret_store, made once per host and shared by every role (the tree,
Vault and MinIO roles must never generate different values for the same secret). A state that
cannot be used stops this host before any change.
"""

from __future__ import annotations

import posixpath

from pyinfra import host, logger

from mnemos_provision import connection, context, dotenv
from mnemos_provision.context import HostContext
from mnemos_provision.render import dotenv_context
from mnemos_provision.secret_store.state import (
    Decision,
    HostFile,
    HostState,
    Secrets,
    StateError,
    VolumesNeeded,
    begin_rotation,
    decide,
    parse_read,
    read_command,
    state_dir_problem,
)

# The secret decision of this run, per host: made once (read, recovered, completed) and shared by
# every role, so that roles never generate different values for the same secret.
_RUN_SECRETS: dict[str, Decision] = {}
# What that read found of the other secret files it read (HostState.also), per host.
_RUN_ALSO: dict[str, dict[str, HostFile]] = {}


def load_secrets(ctx: HostContext) -> Secrets:
    """The secrets this run's roles use (Decision.effective: a recorded rotation's new values
    only once this run sets them in the services)."""
    return secret_decision(ctx).effective()


def found_with_secrets(ctx: HostContext, name: str) -> tuple[str, bytes | None] | None:
    """
    Another secret file as this run's secret read found it, (kind, bytes) with kind "file",
    "missing", "symlink", ... ; None when the read did not include it. `name`: "vault_keys" (the
    Vault keys file, read along when the vault service is enabled).
    """
    secret_decision(ctx)
    found = _RUN_ALSO.get(host.name, {}).get(name)
    return None if found is None else (found.kind, found.data)


def backup_locations(ctx: HostContext) -> list[str]:
    """
    Every directory the backups are written to: BACKUP_STORAGE_PATH as .env will hold it (its
    default, data/backups in the tree, or dotenv_overrides' value; scripts/backup/backup-all.sh
    reads it from .env, relative to the tree when it is not absolute), and the default as well
    (archives written before an override moved them).
    """
    default = f"{ctx.root}/data/backups"
    try:
        configured = dotenv.resolve(dotenv_context(ctx.settings, ctx.home), {},
                                    ctx.settings.dotenv_overrides,
                                    with_secrets=False)["BACKUP_STORAGE_PATH"]
    except dotenv.ResolveError:  # refused by the settings check before this runs
        configured = ""
    locations = [default]
    if configured:
        locations.append(posixpath.normpath(posixpath.join(ctx.root, configured)))
    return list(dict.fromkeys(locations))


def secret_decision(ctx: HostContext) -> Decision:
    if host.name not in _RUN_SECRETS:
        _RUN_SECRETS[host.name] = _decide(ctx)
    return _RUN_SECRETS[host.name]


def start_rotation(ctx: HostContext, names: list[str]) -> tuple[Decision, Decision]:
    """
    This run rotates the secrets `names`: (the decision as read, the decision every role reads
    from now on, whose values hold the new secrets and whose `expected` is the state that records
    the rotations in progress, Decision.in_progress, which the rotation role writes first).
    """
    read = secret_decision(ctx)
    started = begin_rotation(read, names)
    _RUN_SECRETS[host.name] = started
    return read, started


def _decide(ctx: HostContext) -> Decision:
    fail, run_as_operations = context.fail, connection.run_as_operations

    path = ctx.secrets_state_path
    env_path = f"{ctx.root}/.env"

    def read(volumes: bool) -> HostState:
        # Vault's keys file is read along (its plan then reads no file: one command fewer)
        also = {"vault_keys": ctx.vault_keys_path} if ctx.settings.service_enabled("vault") else {}
        # the tree's backup keyring: the earlier backup keys, recovered from it when the state
        # lost them (as .env's secrets are)
        also["backup_keys"] = f"{ctx.root}/.backup-keys"
        ok, lines, stderr = run_as_operations(read_command(
            path, env_path, backup_locations(ctx), ctx.settings.compose_project, volumes,
            also=also, user=ctx.user, group=ctx.group))
        if not ok:
            fail("the secret state could not be read; nothing on the host was changed:",
                 [f"{path}: {' '.join(stderr)[-300:] or 'the read command failed'}"])
        found = parse_read(lines)
        _RUN_ALSO[host.name] = found.also
        return found

    def decide_from(found: HostState) -> Decision:
        return decide(found, ctx.settings.secrets, state_path=path,
                      env_path=env_path, project=ctx.settings.compose_project)

    found = read(volumes=False)  # a converged host: one command, no Docker call
    problem = state_dir_problem(found.state_dir, path, ctx.user)
    if problem:
        fail("the secret state cannot be kept safely; nothing on the host was changed:", [problem])
    try:
        try:
            decision = decide_from(found)
        except VolumesNeeded:  # a secret is missing: which data depends on it?
            decision = decide_from(read(volumes=True))
    except StateError as exc:
        fail("the secret state cannot be used or recovered; nothing on the host was changed:",
             exc.problems)
        raise  # unreachable: fail() exits
    for note in decision.notes:
        logger.warning(f"[{host.name}] {note}")
    return decision
