"""
The MNEMOS tree: secrets (read from the host's state file, recovered or refused when it is lost,
completed, written back by compare-and-swap), then every directory and rendered file of the
design in one batched operation.
"""

from __future__ import annotations

import os
import shlex
import socket
import time

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import server

from mnemos_provision import secret_store
from mnemos_provision.context import HostContext, fail, run_as_operations
from mnemos_provision.fact_batch import later
from mnemos_provision.operations import StateSwap, secret_file, sync_tree
from mnemos_provision.render import RenderError, render_tree


# The secret decision of this run, per host: made once (read, recovered, completed) and shared by
# every role, so that roles never generate different values for the same secret.
_RUN_SECRETS: dict[str, secret_store.Decision] = {}


def load_secrets(ctx: HostContext) -> secret_store.Secrets:
    return secret_decision(ctx).values


def secret_decision(ctx: HostContext) -> secret_store.Decision:
    if host.name not in _RUN_SECRETS:
        _RUN_SECRETS[host.name] = _decide(ctx)
    return _RUN_SECRETS[host.name]


def _decide(ctx: HostContext) -> secret_store.Decision:
    path = ctx.secrets_state_path
    env_path = f"{ctx.root}/.env"

    def read(volumes: bool) -> secret_store.HostState:
        ok, lines, stderr = run_as_operations(secret_store.read_command(
            path, env_path, f"{ctx.root}/data/backups", ctx.settings.compose_project, volumes))
        if not ok:
            fail("the secret state could not be read; nothing on the host was changed:",
                 [f"{path}: {' '.join(stderr)[-300:] or 'the read command failed'}"])
        return secret_store.parse_read(lines)

    def decide(found: secret_store.HostState) -> secret_store.Decision:
        return secret_store.decide(found, ctx.settings.secrets, state_path=path,
                                   env_path=env_path, project=ctx.settings.compose_project)

    found = read(volumes=False)  # a converged host: one command, no Docker call
    problem = secret_store.state_dir_problem(found.state_dir, path, ctx.user)
    if problem:
        fail("the secret state cannot be kept safely; nothing on the host was changed:", [problem])
    try:
        try:
            decision = decide(found)
        except secret_store.VolumesNeeded:  # a secret is missing: which data depends on it?
            decision = decide(read(volumes=True))
    except secret_store.StateError as exc:
        fail("the secret state cannot be used or recovered; nothing on the host was changed:",
             exc.problems)
        raise  # unreachable: fail() exits
    for note in decision.notes:
        logger.warning(f"[{host.name}] {note}")
    return decision


def _holder() -> str:
    return (f"{socket.gethostname()} pid {os.getpid()} at "
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")


@deploy("MNEMOS tree")
def tree(ctx: HostContext):
    decision = secret_decision(ctx)
    values = decision.values
    try:
        entries = render_tree(ctx.settings, ctx.home, values)
    except RenderError as exc:
        fail("a rendered file would be invalid; nothing on the host was changed:", [str(exc)])
    secret_file(name="Keep the secret state file (0600, outside git)",
                path=ctx.secrets_state_path, content=secret_store.serialize(values),
                user=ctx.user, group=ctx.group,
                swap=StateSwap(expected=decision.expected, lock=ctx.secrets_state_path + ".lock",
                               holder=_holder(), keep_damaged=decision.damaged),
                create_dirs=decision.state_dir_missing)
    sync_tree(name=f"Lay out and render the MNEMOS tree at {ctx.root}",
              root=ctx.root, entries=entries,
              user=ctx.user, group=ctx.group)
    certificates(ctx)


# The official Vault image runs as the user vault, group 1000: its key must be readable by that
# group. Traefik runs as root in its container.
VAULT_IMAGE_GID = 1000


# Traefik's self-signed certificate (traefik_tls): every *.mnemos.local router host, and localhost.
TRAEFIK_CERT_CN = "mnemos.local"
TRAEFIK_CERT_SANS = "DNS:mnemos.local,DNS:*.mnemos.local,DNS:localhost,IP:127.0.0.1"


def openssl_self_signed(crt: str, key: str, cn: str, sans: str) -> str:
    """The openssl command that writes a self-signed certificate (the unit tests run it too)."""
    q = shlex.quote
    return (f"openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj {q('/CN=' + cn)} "
            f"-addext {q('subjectAltName=' + sans)} -keyout {q(key)} -out {q(crt)} 2>/dev/null")


def self_signed(ctx: HostContext, directory: str, name: str, cn: str, sans: str, key_group: str,
                key_mode: str) -> None:
    crt, key = f"{directory}/{name}.crt", f"{directory}/{name}.key"
    crt_file, key_file = later(File, path=crt), later(File, path=key)
    q = shlex.quote
    server.shell(
        name=f"Self-signed certificate {crt}",
        commands=[
            f"install -d -m 755 -o {q(ctx.user)} -g {q(ctx.group)} {q(directory)} && "
            f"{openssl_self_signed(crt, key, cn, sans)} && "
            f"chown {q(ctx.user)}:{q(ctx.group)} {q(crt)} && chmod 644 {q(crt)} && "
            f"chown {q(ctx.user)}:{key_group} {q(key)} && chmod {key_mode} {q(key)}"
        ],
        _if=lambda: not crt_file() or not key_file(),
    )


@deploy("TLS certificates")
def certificates(ctx: HostContext):
    s = ctx.settings
    if s.vault_tls:
        self_signed(ctx, f"{ctx.root}/config/vault/tls", "vault", "vault",
                    "DNS:vault,DNS:localhost,IP:127.0.0.1", str(VAULT_IMAGE_GID), "640")
    if s.traefik_tls:
        self_signed(ctx, f"{ctx.root}/config/traefik/certs", "mnemos", TRAEFIK_CERT_CN,
                    TRAEFIK_CERT_SANS, shlex.quote(ctx.group), "600")
