"""
The MNEMOS tree: secrets (read from the host's state file, completed, written back only when
new), then every directory and rendered file of the design in one batched operation.
"""

from __future__ import annotations

import base64
import posixpath
import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import server

from mnemos_provision import secret_store
from mnemos_provision.context import HostContext, fail
from mnemos_provision.fact_batch import later
from mnemos_provision.operations import secret_file, sync_tree
from mnemos_provision.render import render_tree


def read_remote_file(path: str) -> bytes | None:
    """
    A (secret) file's bytes in one command, None when it does not exist. Run with
    print_output=False: its text never reaches pyinfra's output, whatever the verbosity.
    """
    q = shlex.quote(path)
    ok, output = host.run_shell_command(
        f"if [ -f {q} ]; then echo PRESENT; base64 {q}; else echo MISSING; fi",
        print_output=False, print_input=False)
    lines = output.stdout_lines
    if not ok or not lines:
        raise OSError(f"cannot read {path} on {host.name}: {' '.join(output.stderr_lines)}")
    if lines[0] == "MISSING":
        return None
    return base64.b64decode("".join(lines[1:]))


# Secrets of this run, per host: decided once (read, completed with new ones where missing) and
# shared by every role, so that roles never generate different values for the same secret.
_RUN_SECRETS: dict[str, dict[str, str]] = {}


def load_secrets(ctx: HostContext) -> dict[str, str]:
    if host.name not in _RUN_SECRETS:
        _RUN_SECRETS[host.name] = _read_and_complete(ctx)
    return _RUN_SECRETS[host.name]


def _read_and_complete(ctx: HostContext) -> dict[str, str]:
    try:
        stored = secret_store.parse(read_remote_file(ctx.secrets_state_path))
    except ValueError as exc:
        fail("the secret state file cannot be read; nothing on the host was changed:",
             [f"{ctx.secrets_state_path}: {exc}. Restore it from a backup; deleting it rotates "
              "every secret and locks the stack out of its existing data"])
    return secret_store.complete(stored, ctx.settings.secrets)


@deploy("MNEMOS tree")
def tree(ctx: HostContext):
    values = load_secrets(ctx)
    staging = posixpath.dirname(ctx.secrets_state_path)
    secret_file(name="Keep the secret state file (0600, outside git)",
                path=ctx.secrets_state_path, content=secret_store.serialize(values),
                user=ctx.user, group=ctx.group, staging_dir=staging)
    sync_tree(name=f"Lay out and render the MNEMOS tree at {ctx.root}",
              root=ctx.root, entries=render_tree(ctx.settings, ctx.home, values),
              user=ctx.user, group=ctx.group, staging_dir=staging)
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
