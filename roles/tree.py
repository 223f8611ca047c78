"""
The MNEMOS tree: secrets (read from the host's state file, completed, written back only when
new), then every directory and rendered file of the design in one batched operation.
"""

from __future__ import annotations

import posixpath
import tempfile
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File

from mnemos_provision import secret_store
from mnemos_provision.context import HostContext, fail
from mnemos_provision.operations import secret_file, sync_tree
from mnemos_provision.render import render_tree


def read_remote_file(path: str) -> bytes | None:
    """Fetch a (secret) file's bytes through the connector, so its text never reaches the output."""
    if not host.get_fact(File, path=path):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "state"
        host.get_file(path, str(local))
        return local.read_bytes()


def load_secrets(ctx: HostContext) -> dict[str, str]:
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
