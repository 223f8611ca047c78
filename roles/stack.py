"""The compose stack: started, converged and healthy (launch_stack)."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from mnemos_provision.context import HostContext
from mnemos_provision.operations import compose_up


@deploy("MNEMOS stack")
def stack(ctx: HostContext):
    s = ctx.settings
    if not s.launch_stack:
        host.noop("launch_stack is false: the stack is rendered, not started")
        return
    services = s.enabled_services
    compose_up(name=f"Converge the compose stack ({', '.join(services)})", root=ctx.root,
               project=s.compose_project, images={k: s.images[k] for k in services},
               services=services, timeout=s.stack_wait_timeout)
