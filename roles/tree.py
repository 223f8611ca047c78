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

import pyinfra.operations.server
from pyinfra.api import deploy
from pyinfra.facts.files import File

from mnemos_provision.context import HostContext, fail
from mnemos_provision.fact_batch import later
from mnemos_provision.operations import files
from mnemos_provision.operations.util import AS_USER, StateSwap, as_user
from mnemos_provision.render import TRAEFIK_UID, RenderError, render_tree
from mnemos_provision.secret_store.load import secret_decision


def _holder() -> str:
    return (f"{socket.gethostname()} pid {os.getpid()} at "
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")


@deploy("MNEMOS tree")
def tree(ctx: HostContext):
    decision = secret_decision(ctx)
    values = decision.effective()  # a recorded rotation's new values once this run applies it
    try:
        entries = render_tree(ctx.settings, ctx.home, values, decision.backup_keyring())
    except RenderError as exc:
        fail("a rendered file would be invalid; nothing on the host was changed:", [str(exc)])
    files.secret(name="Keep the secret state file (0600, outside git)",
                path=ctx.secrets_state_path, content=decision.state_file(),
                user=ctx.user, group=ctx.group,
                swap=StateSwap(expected=decision.expected, lock=ctx.secrets_state_path + ".lock",
                               holder=_holder(), keep_damaged=decision.damaged),
                create_dirs=decision.state_dir_missing)
    files.tree(name=f"Lay out and render the MNEMOS tree at {ctx.root}",
              root=ctx.root, entries=entries,
              user=ctx.user, group=ctx.group)
    certificates(ctx=ctx)


# The official Vault image (hashicorp/vault, Dockerfile: `addgroup vault && adduser -S -G vault
# vault` on alpine) runs Vault as uid 100, group 1000. Its TLS key is given to that uid alone
# (0400) in config/vault/tls, a directory of root (0755, so that uid can traverse it): no other
# host account can read it, and only root can change what is in it (docs/security.md).
VAULT_IMAGE_UID = 100


# Traefik's self-signed certificate (traefik_tls): every *.mnemos.local router host, and localhost;
# its key is given to TRAEFIK_UID alone (0400) in config/traefik/certs, a directory of root, as
# Vault's is (Traefik runs as that uid: docs/cis-docker-benchmark.md).
TRAEFIK_CERT_CN = "mnemos.local"
TRAEFIK_CERT_SANS = "DNS:mnemos.local,DNS:*.mnemos.local,DNS:localhost,IP:127.0.0.1"


# the names Vault's certificate is made for: its service name, and the host's loopback
VAULT_CERT_SANS = "DNS:vault,DNS:localhost,IP:127.0.0.1"


def openssl_self_signed(crt: str, key: str, cn: str, sans: str) -> str:
    """The openssl command that writes a self-signed certificate (the unit tests run it too)."""
    q = shlex.quote
    return (f"openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj {q('/CN=' + cn)} "
            f"-addext {q('subjectAltName=' + sans)} -keyout {q(key)} -out {q(crt)} 2>/dev/null")


def root_self_signed(ctx: HostContext, parent: str, sub: str, name: str, cn: str, sans: str,
                     key_uid: int) -> None:
    """
    A certificate and key in `parent`/`sub` (parent: a directory of the tree), `sub` a directory
    of root (0755) there: made there by root (the user may remove the directory, never change
    what is in it), entered with cd -P and checked (root's, only root can write it, in a
    directory of the user); the key owned by `key_uid` (the uid the container's server runs as),
    0400 (read by that server and by root, by no other account). A directory of the user there
    (an earlier deploy's) is removed by the user first. When the deploy is not root, the key
    stays the running account's, 0400.
    """
    directory = f"{parent}/{sub}"
    crt, key = f"{directory}/{name}.crt", f"{directory}/{name}.key"
    crt_file, key_file = later(File, path=crt), later(File, path=key)
    q = shlex.quote
    user, d = q(ctx.user), q(sub)
    enter = (f'cd -P {d} && [ "$(stat -c %u:%a .)" = "$(id -u):755" ] && '
             f'[ "$(stat -c %U ..)" = {user} ] || {{ echo "mnemos: {directory} is not a '
             'directory of $(id -un) (0755) in a directory of ' + ctx.user + '; nothing was '
             'written" >&2; exit 1; }')
    new_crt, new_key = f".{name}.crt.new", f".{name}.key.new"
    openssl = openssl_self_signed(new_crt, new_key, cn, sans)
    make = (f"umask 077 && {openssl} && "
            f"{{ [ \"$(id -u)\" -ne 0 ] || chown {key_uid}:0 {new_key}; }} && "
            f"chmod 400 {new_key} && chmod 644 {new_crt} && "
            f"mv -f {new_key} {q(name + '.key')} && mv -f {new_crt} {q(name + '.crt')}")
    pyinfra.operations.server.shell(
        name=f"Self-signed certificate {crt}",
        commands=[
            f"{AS_USER}; cd -P {q(parent)} && [ \"$(stat -c %U .)\" = {user} ] || {{ echo "
            f"\"mnemos: {parent} is not a directory of {ctx.user}\" >&2; exit 1; }}; "
            # an earlier deploy's directory (the user's) is removed by the user
            f'if [ -e {d} ] || [ -L {d} ]; then [ "$(stat -c %u {d})" = "$(id -u)" ] || '
            f"{as_user(ctx.user, ctx.group, 'rm', '-rf', sub)} || exit 1; fi; "
            f"{{ mkdir -m 755 {d} 2>/dev/null || [ -d {d} ]; }} && {enter} && {make}"
        ],
        _if=lambda: not crt_file() or not key_file() or key_file()["mode"] != 400,
    )


def vault_self_signed(ctx: HostContext) -> None:
    """Vault's certificate and key in config/vault/tls (root_self_signed), the key the image's
    vault uid's (VAULT_IMAGE_UID)."""
    root_self_signed(ctx, f"{ctx.root}/config/vault", "tls", "vault", "vault", VAULT_CERT_SANS,
                     VAULT_IMAGE_UID)


def traefik_self_signed(ctx: HostContext) -> None:
    """Traefik's certificate and key in config/traefik/certs (root_self_signed), the key
    TRAEFIK_UID's: Traefik runs as that uid (CIS 4.1, docs/cis-docker-benchmark.md)."""
    root_self_signed(ctx, f"{ctx.root}/config/traefik", "certs", "mnemos", TRAEFIK_CERT_CN,
                     TRAEFIK_CERT_SANS, TRAEFIK_UID)


@deploy("TLS certificates")
def certificates(ctx: HostContext):
    s = ctx.settings
    if s.vault_tls:
        vault_self_signed(ctx)
    if s.traefik_tls:
        traefik_self_signed(ctx)
