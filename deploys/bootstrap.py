"""
The whole converge of a MNEMOS Phase 1 host:
    pyinfra @local deploys/bootstrap.py                  (this machine, group_data/all.py defaults)
    pyinfra inventories/staging.py deploys/bootstrap.py  (an environment)
Settings are validated and the host checked before the first operation.
"""

from mnemos_provision.context import for_each_host, host_context
from mnemos_provision.where import announce
from roles.backup import backup
from roles.docker_engine import docker_engine
from roles.minio import minio_init
from roles.packages import packages
from roles.preflight import preflight
from roles.rotation import rotation_checks, rotation_start
from roles.stack import stack
from roles.tools import tools
from roles.tree import tree
from roles.vault import vault_init, vault_token_rotation

with for_each_host():  # a host that cannot go on is named and left out; the others go on
    ctx = host_context()
    preflight(ctx=ctx)
    packages(ctx=ctx)
    docker_engine(ctx=ctx)
    tools(ctx=ctx)
    rotation_start(ctx=ctx, services=[])  # only a rotation the state records as in progress
    vault_token_rotation(ctx=ctx)  # a VAULT_TOKEN rotation: the new token in Vault first
    tree(ctx=ctx)
    stack(ctx=ctx)
    rotation_checks(ctx=ctx)
    vault_init(ctx=ctx)
    minio_init(ctx=ctx)
    backup(ctx=ctx)
    announce(ctx)  # after the last operation: where things are, when something changed
