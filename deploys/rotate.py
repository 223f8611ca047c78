"""
Rotate secrets (docs/rotation.md):
    pyinfra @local deploys/rotate.py --data rotate=postgres,redis
Each named service's secret gets a new value, set in the service itself, then in the secret state,
.env and Vault; the containers whose configuration holds it are recreated, and the new value is
checked against the service (accepted; the old one refused). A run killed part-way leaves the
rotation recorded in the state: the next `rotate` (with or without names) or the next converge
finishes it.
"""

from mnemos_provision.context import fail, for_each_host, host_context
from mnemos_provision.secret_store.load import secret_decision
from mnemos_provision.where import announce
from roles.minio import minio_init
from roles.rotation import rotation_checks, rotation_start
from roles.stack import stack
from roles.tree import tree
from roles.vault import vault_init, vault_token_rotation

with for_each_host():  # a host that cannot go on is named and left out; the others go on
    ctx = host_context()
    if not ctx.settings.rotate and not secret_decision(ctx).rotating:
        fail("nothing to rotate; nothing on the host was changed:", [
            "rotate = []: name the services whose secrets to rotate, e.g. "
            "`--data rotate=postgres,redis` (docs/rotation.md)"])
    rotation_start(ctx=ctx, services=ctx.settings.rotate)
    vault_token_rotation(ctx=ctx)  # a VAULT_TOKEN rotation: the new token in Vault first
    tree(ctx=ctx)
    stack(ctx=ctx)
    rotation_checks(ctx=ctx)
    vault_init(ctx=ctx)
    minio_init(ctx=ctx)
    announce(ctx)
