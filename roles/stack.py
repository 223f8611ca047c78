"""The compose stack: started, converged and healthy (launch_stack)."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from mnemos_provision.context import HostContext
from mnemos_provision.operations import compose, docker


@deploy("MNEMOS stack")
def stack(ctx: HostContext):
    s = ctx.settings
    if not s.launch_stack:
        host.noop("launch_stack is false: the stack is rendered, not started")
        return
    services = s.enabled_services
    if s.image_archives:
        docker.image_archives(name="Load the image archives (missing images only)",
                            archives=s.image_archives, images=[s.images[k] for k in services])
    compose.stack(name=f"Converge the compose stack ({', '.join(services)})", root=ctx.root,
               project=s.compose_project, images={k: s.images[k] for k in services},
               services=services, timeout=s.stack_wait_timeout)
