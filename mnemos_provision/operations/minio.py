"""
MinIO (ENGRAM): `minio.setup` converges buckets, versioning, lifecycle and the application user
(the plan and its steps: mnemos_provision/minio_setup.py). Like Vault, the clients run on the
controller and their requests go out from the host through the pyinfra connector.

This module loads the minio SDK and requests (start-up time): roles/minio.py imports it only when
MinIO is set up, the one lazy boundary; everything here is imported at the top.
"""

from __future__ import annotations

from xml.etree.ElementTree import ParseError  # a malformed answer from the server

from minio import Minio, MinioAdmin
from minio.credentials import StaticProvider
from minio.error import MinioAdminException, S3Error
from pyinfra import host
from pyinfra.api import FunctionCommand, OperationError, operation

from mnemos_provision import fact_batch, host_http, minio_setup


def clients(endpoint: str, root: tuple[str, str], app: tuple[str, str], region: str,
            runner=None, ahead: bool = False):
    # ahead: the plan's clients, whose prefetch takes the fact batch's answers while they hold
    http = host_http.HostHTTP(runner or host_http.PyinfraRunner(host),
                              ahead=fact_batch.planned_answers if ahead else None)
    pool = host_http.HostPoolManager(http)
    s3 = Minio(endpoint, access_key=root[0], secret_key=root[1], secure=False, region=region,
               http_client=pool)
    app_s3 = Minio(endpoint, access_key=app[0], secret_key=app[1], secure=False, region=region,
                   http_client=pool)
    admin = MinioAdmin(endpoint=endpoint, credentials=StaticProvider(*root), secure=False,
                       http_client=pool)
    return s3, app_s3, admin, http


def plan_ahead(endpoint: str, root: tuple[str, str], desired: "minio_setup.Desired") -> None:
    """
    At plan time (the role, before `setup` is called): register with the fact batch the reads
    `setup`'s plan sends first (minio_setup.planned_reads), so that the fact batch's command
    sends them and a converged MinIO costs no host command of its own
    (fact_batch.expect_http). They are signed when the batch is read; an answer is matched to the
    plan's request, signed again moments later, by its method, URL, body and access key
    (host_http.Request.key), not its date or signature.
    """
    s3, app_s3, admin, http = clients(endpoint, root, (desired.app_user, desired.app_secret),
                                      desired.region)
    fact_batch.expect_http(http, minio_setup.planned_reads(s3, admin, app_s3, desired))


@operation()
def setup(endpoint: str, root: tuple[str, str], desired: "minio_setup.Desired"):
    """
    Converge MinIO at `endpoint` (as seen from the host) to `desired`: buckets, privacy,
    versioning, lifecycle, and the application user with its bucket-scoped policy.

    + endpoint: host:port of MinIO's S3 API on the host, e.g. 127.0.0.1:9000
    + root: (root user, root password)
    + desired: minio_setup.Desired

    **Example:**

    .. code:: python

        minio.setup(
            endpoint="127.0.0.1:9000",
            root=("mnemos", root_password),
            desired=minio_setup.Desired(buckets=[minio_setup.Bucket("mnemos-artifacts")],
                                        app_user="mnemos-app", app_secret=app_secret),
        )
    """
    s3, app_s3, admin, http = clients(endpoint, root, (desired.app_user, desired.app_secret),
                                      desired.region, ahead=True)
    try:
        changes = minio_setup.plan(s3, admin, app_s3, desired, prefetch=http.prefetch)
    except (host_http.HostHTTPError, S3Error, MinioAdminException, ParseError, ValueError) as exc:
        if host.state.is_executing:
            raise OperationError(f"MinIO at {endpoint}: {exc}") from None
        changes = [f"converge once MinIO answers ({exc})"]
    finally:
        http.close()
    if not changes:
        host.noop(f"MinIO: {len(desired.buckets)} buckets and the user {desired.app_user} "
                  f"as declared")
        return

    def converge() -> None:
        s3, app_s3, admin, http = clients(endpoint, root, (desired.app_user, desired.app_secret),
                                          desired.region)
        try:
            done = (minio_setup.apply_buckets(s3, desired)
                    + minio_setup.apply_user(admin, app_s3, desired))
        except (host_http.HostHTTPError, S3Error, MinioAdminException, ParseError) as exc:
            raise OperationError(f"MinIO at {endpoint}: {exc}") from None
        finally:
            http.close()
        host.log(f"MinIO: {', '.join(done)}")

    yield FunctionCommand(converge, (), {})
