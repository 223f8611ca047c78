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
from typing import Any, Callable

import pyinfra.operations.server
from pyinfra.api import deploy
from pyinfra.facts.files import File

from mnemos_provision import secret_store
from mnemos_provision.context import HostContext, fail
from mnemos_provision.fact_batch import later
from mnemos_provision.operations import files
from mnemos_provision.operations.util import StateSwap
from mnemos_provision.render import TRAEFIK_UID, RenderError, render_tree
from mnemos_provision.secret_store.load import secret_decision


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
    files.secret(name="Keep the secret state file (0600, outside git)",
                path=ctx.secrets_state_path, content=secret_store.serialize(values),
                user=ctx.user, group=ctx.group,
                swap=StateSwap(expected=decision.expected, lock=ctx.secrets_state_path + ".lock",
                               holder=_holder(), keep_damaged=decision.damaged),
                create_dirs=decision.state_dir_missing)
    files.tree(name=f"Lay out and render the MNEMOS tree at {ctx.root}",
              root=ctx.root, entries=entries,
              user=ctx.user, group=ctx.group)
    certificates(ctx=ctx)


# The official Vault image runs as the user vault, group 1000: its key must be readable by that
# group. Traefik runs as root in its container.
VAULT_IMAGE_GID = 1000


# Traefik's self-signed certificate (traefik_tls): every *.mnemos.local router host, and localhost.
TRAEFIK_CERT_CN = "mnemos.local"
TRAEFIK_CERT_SANS = "DNS:mnemos.local,DNS:*.mnemos.local,DNS:localhost,IP:127.0.0.1"


# the names Vault's certificate is made for: its service name, and the host's loopback
VAULT_CERT_SANS = "DNS:vault,DNS:localhost,IP:127.0.0.1"


def openssl_self_signed(crt: str, key: str, cn: str, sans: str) -> str:
    """The openssl command that writes a self-signed certificate (the unit tests run it too)."""
    q = shlex.quote
    return (f"openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj {q('/CN=' + cn)} "
            f"-addext {q('subjectAltName=' + sans)} -keyout {q(key)} -out {q(crt)} 2>/dev/null")


def self_signed(ctx: HostContext, directory: str, name: str, cn: str, sans: str, key_group: str,
                key_mode: str) -> Callable[[], Any]:
    """Make the certificate and its key once; returns the key's File fact (read when asked)."""
    crt, key = f"{directory}/{name}.crt", f"{directory}/{name}.key"
    crt_file, key_file = later(File, path=crt), later(File, path=key)
    q = shlex.quote
    pyinfra.operations.server.shell(
        name=f"Self-signed certificate {crt}",
        commands=[
            f"install -d -m 755 -o {q(ctx.user)} -g {q(ctx.group)} {q(directory)} && "
            f"{openssl_self_signed(crt, key, cn, sans)} && "
            f"chown {q(ctx.user)}:{q(ctx.group)} {q(crt)} && chmod 644 {q(crt)} && "
            f"chown {q(ctx.user)}:{key_group} {q(key)} && chmod {key_mode} {q(key)}"
        ],
        _if=lambda: not crt_file() or not key_file(),
    )
    return key_file


@deploy("TLS certificates")
def certificates(ctx: HostContext):
    s = ctx.settings
    if s.vault_tls:
        self_signed(ctx, f"{ctx.root}/config/vault/tls", "vault", "vault",
                    VAULT_CERT_SANS, str(VAULT_IMAGE_GID), "640")
    if s.traefik_tls:
        # Traefik runs as TRAEFIK_UID:TRAEFIK_UID (not root): it reads the key through its group.
        key_file = self_signed(ctx, f"{ctx.root}/config/traefik/certs", "mnemos",
                               TRAEFIK_CERT_CN, TRAEFIK_CERT_SANS, str(TRAEFIK_UID), "640")
        key = shlex.quote(f"{ctx.root}/config/traefik/certs/mnemos.key")
        pyinfra.operations.server.shell(
            name="Traefik's TLS key readable by its group (a key made when Traefik ran as root)",
            commands=[f"chgrp {TRAEFIK_UID} {key} && chmod 640 {key}"],
            _if=lambda: bool(key_file()) and key_file()["mode"] != 640,
        )
