"""PostgreSQL's data moved to the major version of images["postgres"] (deploys/upgrade_postgres.py,
docs/upgrading.md)."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from mnemos_provision.context import HostContext
from mnemos_provision.operations import upgrade


@deploy("PostgreSQL major upgrade")
def postgres_upgrade(ctx: HostContext):
    s = ctx.settings
    if "postgres" not in s.enabled_services:
        host.noop("postgres is not enabled (compose_profiles): nothing to upgrade")
        return
    upgrade.postgres_major(name=f"Move PostgreSQL's data to {s.images['postgres']}",
                           root=ctx.root, project=s.compose_project, user=ctx.user,
                           group=ctx.group, image=s.images["postgres"],
                           timeout=s.stack_wait_timeout)
