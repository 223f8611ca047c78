"""
MinIO (ENGRAM) set-up, idempotent: private buckets, versioning where declared, lifecycle expiry
(current and noncurrent versions) where declared, and an application user whose policy reaches
only those buckets; its credentials are the AWS_* of .env, so the services never use the root
credentials.

`plan` reads only and says what differs; `apply` makes it so. The S3 part uses a minio.Minio
client, the admin part a minio.MinioAdmin client (both sent from the host, see host_http).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from minio import Minio, MinioAdmin
from minio.commonconfig import ENABLED, Filter
from minio.error import MinioAdminException, S3Error
from minio.lifecycleconfig import Expiration, LifecycleConfig, NoncurrentVersionExpiration, Rule
from minio.versioningconfig import VersioningConfig

RULE_ID = "mnemos-expiry"


@dataclass
class Bucket:
    name: str
    versioning: bool = False
    expire_days: int | None = None


@dataclass
class Desired:
    buckets: list[Bucket]
    app_user: str
    app_secret: str
    app_policy: str = "mnemos-app"
    region: str = "us-east-1"
    # a rotation of app_secret runs (deploys/rotate.py): the key is set whatever the credentials
    # check says (a server that does not verify signatures would accept the old one)
    set_app_secret: bool = False


def app_policy_document(buckets: list[Bucket]) -> dict:
    """Read and write objects of the MNEMOS buckets, and nothing else."""
    arns = [f"arn:aws:s3:::{b.name}" for b in buckets]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow",
             "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads",
                        "s3:ListBucketVersions"],
             "Resource": arns},
            {"Effect": "Allow",
             "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:DeleteObject",
                        "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
             "Resource": [f"{arn}/*" for arn in arns]},
        ],
    }


def _lifecycle(bucket: Bucket) -> LifecycleConfig:
    return LifecycleConfig([Rule(
        ENABLED, rule_filter=Filter(prefix=""), rule_id=RULE_ID,
        expiration=Expiration(days=bucket.expire_days),
        noncurrent_version_expiration=NoncurrentVersionExpiration(noncurrent_days=bucket.expire_days),
    )])


def _lifecycle_matches(current: LifecycleConfig | None, bucket: Bucket) -> bool:
    if bucket.expire_days is None:
        return current is None or not current.rules
    if current is None or len(current.rules) != 1:
        return False
    rule = current.rules[0]
    return (rule.status == ENABLED and rule.expiration is not None
            and rule.expiration.days == bucket.expire_days
            and rule.noncurrent_version_expiration is not None
            and rule.noncurrent_version_expiration.noncurrent_days == bucket.expire_days)


def _has_policy(s3: Minio, name: str) -> bool:
    try:
        return bool(s3.get_bucket_policy(name))
    except S3Error as exc:
        if exc.code == "NoSuchBucketPolicy":
            return False
        raise


def bucket_differences(s3: Minio, desired: Desired) -> list[str]:
    diffs = []
    for bucket in desired.buckets:
        if not s3.bucket_exists(bucket.name):
            diffs.append(f"bucket {bucket.name}")
            continue
        if _has_policy(s3, bucket.name):
            diffs.append(f"{bucket.name}: make private (remove its bucket policy)")
        status = s3.get_bucket_versioning(bucket.name).status
        if bucket.versioning and status != ENABLED:
            diffs.append(f"{bucket.name}: versioning")
        if not _lifecycle_matches(s3.get_bucket_lifecycle(bucket.name), bucket):
            diffs.append(f"{bucket.name}: lifecycle")
    return diffs


def apply_buckets(s3: Minio, desired: Desired) -> list[str]:
    done = []
    for bucket in desired.buckets:
        if not s3.bucket_exists(bucket.name):
            s3.make_bucket(bucket.name, location=desired.region)
            done.append(f"created {bucket.name}")
        if _has_policy(s3, bucket.name):
            s3.delete_bucket_policy(bucket.name)
            done.append(f"{bucket.name} made private")
        if bucket.versioning and s3.get_bucket_versioning(bucket.name).status != ENABLED:
            s3.set_bucket_versioning(bucket.name, VersioningConfig(ENABLED))
            done.append(f"{bucket.name} versioning on")
        current = s3.get_bucket_lifecycle(bucket.name)
        if not _lifecycle_matches(current, bucket):
            if bucket.expire_days is None:
                s3.delete_bucket_lifecycle(bucket.name)
            else:
                s3.set_bucket_lifecycle(bucket.name, _lifecycle(bucket))
            done.append(f"{bucket.name} lifecycle")
    return done


def _user_policies(admin: MinioAdmin, user: str) -> list[str] | None:
    try:
        info = json.loads(admin.user_info(user))
    except MinioAdminException as exc:
        if "NoSuchUser" in str(exc) or getattr(exc, "_code", None) == "404":
            return None
        raise
    names = info.get("policyName") or ""
    return [n for n in names.split(",") if n]


def _app_credentials_work(app_s3: Minio, desired: Desired) -> bool:
    try:
        app_s3.bucket_exists(desired.buckets[0].name)
        return True
    except S3Error as exc:
        if exc.code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
            return False
        raise


def _comparable(document: dict) -> dict:
    """
    A policy document as MinIO means it: Action and Resource (and their Not- forms) are sets,
    which MinIO serialises from Go maps in any order (minio/pkg policy ActionSet and ResourceSet,
    MarshalJSON); a single string is the one-element list it stands for; statement order does not
    matter.
    """
    def statement(st: dict) -> str:
        return json.dumps({k: sorted([v] if isinstance(v, str) else v or [])
                           if k in ("Action", "NotAction", "Resource", "NotResource") else v
                           for k, v in st.items()}, sort_keys=True)
    statements = document.get("Statement") or []
    if isinstance(statements, dict):  # one statement may stand alone, as one string may
        statements = [statements]
    return {"Version": document.get("Version"), "Statement": sorted(map(statement, statements))}


def _policy_current(admin: MinioAdmin, desired: Desired) -> bool:
    try:
        current = json.loads(admin.policy_info(desired.app_policy))
    except MinioAdminException:
        return False
    wanted = app_policy_document(desired.buckets)
    return _comparable(current.get("Policy", current)) == _comparable(wanted)


def user_differences(admin: MinioAdmin, app_s3: Minio, desired: Desired) -> list[str]:
    diffs = []
    policies = _user_policies(admin, desired.app_user)
    if policies is None:
        return [f"user {desired.app_user}", f"policy {desired.app_policy}"]
    if not _policy_current(admin, desired):
        diffs.append(f"policy {desired.app_policy}")
    if desired.app_policy not in policies:
        diffs.append(f"{desired.app_user}: attach {desired.app_policy}")
    if desired.set_app_secret or not _app_credentials_work(app_s3, desired):
        diffs.append(f"{desired.app_user}: secret key")
    return diffs


def apply_user(admin: MinioAdmin, app_s3: Minio, desired: Desired) -> list[str]:
    done = []
    policies = _user_policies(admin, desired.app_user)
    if policies is None or desired.set_app_secret or not _app_credentials_work(app_s3, desired):
        admin.user_add(desired.app_user, desired.app_secret)
        done.append(f"user {desired.app_user}")
        policies = policies or []
    if not _policy_current(admin, desired):
        admin.policy_add(desired.app_policy, policy=app_policy_document(desired.buckets))
        done.append(f"policy {desired.app_policy}")
    if desired.app_policy not in policies:
        admin.attach_policy([desired.app_policy], user=desired.app_user)
        done.append(f"attached {desired.app_policy}")
    return done


def planned_reads(s3: Minio, admin: MinioAdmin, app_s3: Minio,
                  desired: Desired) -> list[Callable[[], object]]:
    """
    The reads `plan` makes of a converged MinIO, as calls for `prefetch` to record and send in one
    batch before plan runs: each is the helper plan calls, so the requests are the same. A read
    not here is still made, one host command later (the converge test counts them).
    """
    reads: list[Callable[[], object]] = []
    for bucket in desired.buckets:
        reads += [partial(s3.bucket_exists, bucket.name), partial(_has_policy, s3, bucket.name),
                  partial(s3.get_bucket_versioning, bucket.name),
                  partial(s3.get_bucket_lifecycle, bucket.name)]
    reads += [partial(_user_policies, admin, desired.app_user),
              partial(_policy_current, admin, desired)]
    if desired.buckets:
        reads.append(partial(_app_credentials_work, app_s3, desired))
    return reads


def plan(s3: Minio, admin: MinioAdmin, app_s3: Minio, desired: Desired,
         prefetch: Callable[[list[Callable[[], object]]], None] | None = None) -> list[str]:
    """
    What `apply_buckets` and `apply_user` would change, read-only; [] on a converged MinIO. With
    `prefetch` (host_http.HostHTTP.prefetch), the reads of a converged MinIO go out first, in one
    batch, whatever the number of buckets.
    """
    if prefetch is not None:
        prefetch(planned_reads(s3, admin, app_s3, desired))
    return bucket_differences(s3, desired) + user_differences(admin, app_s3, desired)
