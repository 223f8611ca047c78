"""
The whole converge of a MNEMOS Phase 1 host:
    pyinfra @local deploys/bootstrap.py                    (this machine, defaults of group_data/all.py)
    pyinfra inventories/staging.py deploys/bootstrap.py    (an environment)
Settings are validated and the host checked before the first operation.
"""

from mnemos_provision.context import for_each_host, host_context
from roles.backup import backup
from roles.docker_engine import docker_engine
from roles.minio import minio_init
from roles.packages import packages
from roles.preflight import preflight
from roles.stack import stack
from roles.tools import tools
from roles.tree import tree
from roles.vault import vault_init

with for_each_host():  # a host that cannot go on is named and left out; the others go on
    ctx = host_context()
    preflight(ctx)
    packages(ctx)
    docker_engine(ctx)
    tools(ctx)
    tree(ctx)
    stack(ctx)
    vault_init(ctx)
    minio_init(ctx)
    backup(ctx)
