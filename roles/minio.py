"""
MinIO (ENGRAM): the buckets and application user of the settings, converged by `minio.setup`
(mnemos_provision/operations/minio.py).
"""

from __future__ import annotations

from pyinfra.api import deploy

from mnemos_provision.context import HostContext, skip_setup
from mnemos_provision.secret_store.load import load_secrets, secret_decision


@deploy("MinIO")
def minio_init(ctx: HostContext):
    s = ctx.settings
    if skip_setup(ctx, "minio", s.minio_init, "`docker compose exec minio mc ...`"):
        return
    # The one lazy boundary: the minio SDK and requests (start-up time) load only when MinIO is set
    # up; the modules behind it import everything at their top.
    from mnemos_provision import minio_setup
    from mnemos_provision.operations import minio

    secrets = load_secrets(ctx)
    decision = secret_decision(ctx)
    desired = minio_setup.Desired(
        buckets=[minio_setup.Bucket(name, **spec) for name, spec in s.minio_buckets.items()],
        app_user=s.minio_app_user, app_secret=secrets["MINIO_APP_SECRET_KEY"],
        # this run rotates the application user's key: set it (docs/rotation.md)
        set_app_secret=decision.applied and "MINIO_APP_SECRET_KEY" in decision.rotating)
    endpoint, root = f"127.0.0.1:{s.ports['minio_api']}", ("mnemos", secrets["MINIO_ROOT_PASSWORD"])
    # the plan's first reads go out with the fact batch (one host command fewer)
    minio.plan_ahead(endpoint, root, desired)
    minio.setup(name="Buckets, versioning, lifecycle and the application user of MinIO",
                endpoint=endpoint, root=root, desired=desired)
