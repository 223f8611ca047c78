"""
MinIO buckets, versioning and lifecycle against moto_server: a real S3-protocol HTTP server
(started here on 127.0.0.1) standing in for MinIO, whose image cannot be fetched here. Requests go
through the real transport (curl on the "host", here this machine) and the minio SDK.

Not tested against a server: the MinIO admin API (application user, its policy), which moto does
not implement; only the policy document is checked here (docs/testing.md).
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from minio import Minio
from minio.commonconfig import ENABLED
from minio.versioningconfig import SUSPENDED, VersioningConfig

from mnemos_provision import minio_setup
from mnemos_provision.host_http import HostHTTP, HostPoolManager, LocalRunner

pytestmark = pytest.mark.unit

DESIRED = minio_setup.Desired(
    buckets=[minio_setup.Bucket("mnemos-artifacts", versioning=True),
             minio_setup.Bucket("mnemos-models", versioning=True),
             minio_setup.Bucket("mnemos-backups", expire_days=60),
             minio_setup.Bucket("mnemos-uploads")],
    app_user="mnemos-app", app_secret="s" * 40)


@pytest.fixture(scope="module")
def s3():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    moto = Path(sys.executable).parent / "moto_server"
    server = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    http = HostHTTP(LocalRunner())
    client = Minio(f"127.0.0.1:{port}", access_key="mnemos", secret_key="m" * 32, secure=False,
                   region="us-east-1", http_client=HostPoolManager(http))
    for _ in range(50):
        try:
            client.list_buckets()
            break
        except Exception:
            time.sleep(0.2)
    yield client
    http.close()
    server.terminate()
    server.wait(timeout=30)


def test_buckets_are_created_versioned_and_expiring_then_left_alone(s3):
    assert set(minio_setup.bucket_differences(s3, DESIRED)) == {
        "bucket mnemos-artifacts", "bucket mnemos-models", "bucket mnemos-backups",
        "bucket mnemos-uploads"}
    minio_setup.apply_buckets(s3, DESIRED)
    assert {b.name for b in s3.list_buckets()} >= {b.name for b in DESIRED.buckets}
    assert s3.get_bucket_versioning("mnemos-artifacts").status == ENABLED
    assert s3.get_bucket_versioning("mnemos-models").status == ENABLED
    rule = s3.get_bucket_lifecycle("mnemos-backups").rules[0]
    assert rule.expiration.days == 60 and rule.noncurrent_version_expiration.noncurrent_days == 60
    assert s3.get_bucket_lifecycle("mnemos-uploads") is None
    assert minio_setup.bucket_differences(s3, DESIRED) == []
    assert minio_setup.apply_buckets(s3, DESIRED) == []


def test_a_bucket_with_other_settings_is_converged(s3):
    minio_setup.apply_buckets(s3, DESIRED)
    s3.set_bucket_versioning("mnemos-models", VersioningConfig(SUSPENDED))
    s3.delete_bucket_lifecycle("mnemos-backups")
    s3.set_bucket_policy("mnemos-uploads", '{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
                         '"Principal":{"AWS":["*"]},"Action":["s3:GetObject"],'
                         '"Resource":["arn:aws:s3:::mnemos-uploads/*"]}]}')
    assert set(minio_setup.bucket_differences(s3, DESIRED)) == {
        "mnemos-models: versioning", "mnemos-backups: lifecycle",
        "mnemos-uploads: make private (remove its bucket policy)"}
    minio_setup.apply_buckets(s3, DESIRED)
    assert minio_setup.bucket_differences(s3, DESIRED) == []


def test_application_policy_reaches_only_the_declared_buckets():
    doc = minio_setup.app_policy_document(DESIRED.buckets)
    resources = [r for statement in doc["Statement"] for r in statement["Resource"]]
    names = {r.split(":::")[1].split("/")[0] for r in resources}
    assert names == {b.name for b in DESIRED.buckets}
    actions = {a for statement in doc["Statement"] for a in statement["Action"]}
    assert not any(a.startswith("admin:") or a == "s3:*" for a in actions)
    assert "s3:DeleteBucket" not in actions and "s3:PutBucketPolicy" not in actions


class FakeAdmin:
    """MinIO's admin API as far as the user and policy checks read it."""

    def __init__(self, policy: dict):
        self.policy, self.added = policy, []

    def user_info(self, user):
        return json.dumps({"status": "enabled", "policyName": "mnemos-app"})

    def policy_info(self, name):
        return json.dumps(self.policy)

    def policy_add(self, name, policy):
        self.added.append(name)


class FakeAppS3:
    def bucket_exists(self, name):
        return True


def test_the_application_policy_as_minio_returns_it_in_any_order_is_not_applied_again():
    """MinIO serialises Action and Resource from Go maps (minio/pkg policy/actionset.go and
    resourceset.go, MarshalJSON over a map): they come back in any order. A single string is the
    one-element list it stands for."""
    shuffled = json.loads(json.dumps(minio_setup.app_policy_document(DESIRED.buckets)))
    rng = random.Random(7)
    for statement in shuffled["Statement"]:
        rng.shuffle(statement["Action"])
        statement["Resource"] = list(reversed(statement["Resource"]))
    shuffled["Statement"].reverse()
    assert shuffled != minio_setup.app_policy_document(DESIRED.buckets)
    admin = FakeAdmin(shuffled)
    assert minio_setup.user_differences(admin, FakeAppS3(), DESIRED) == []
    assert minio_setup.apply_user(admin, FakeAppS3(), DESIRED) == [] and admin.added == []
    one = minio_setup.Desired(buckets=DESIRED.buckets[:1], app_user="mnemos-app",
                              app_secret="s" * 40)
    single = minio_setup.app_policy_document(one.buckets)
    single["Statement"][0]["Resource"] = single["Statement"][0]["Resource"][0]
    assert minio_setup.user_differences(FakeAdmin(single), FakeAppS3(), one) == []
    wider = json.loads(json.dumps(shuffled))
    wider["Statement"][0]["Action"].append("s3:PutBucketPolicy")
    assert minio_setup.user_differences(FakeAdmin(wider), FakeAppS3(), DESIRED) \
        == ["policy mnemos-app"]



def test_reads_signed_at_plan_time_match_the_plans_requests_by_their_access_key(monkeypatch):
    """roles/minio.py registers the plan's reads with the fact batch at plan time
    (minio.plan_ahead), signed when the batch is read (AWS SigV4: a date and a signature in each
    request); the plan makes them again moments later, signed anew. Each answer is matched by
    host_http.Request.key: the same key for the same read whatever its date and signature, and a
    different one for the root's and the application user's requests (they get different
    answers)."""
    from mnemos_provision import fact_batch
    from mnemos_provision.host_http import Runner, identity
    from mnemos_provision.operations import minio

    registered: list = []
    monkeypatch.setattr(fact_batch, "expect_http", lambda client, calls: registered.append(
        (client, calls)))
    root, app = ("mnemos", "m" * 32), (DESIRED.app_user, DESIRED.app_secret)
    minio.plan_ahead("127.0.0.1:9000", root, DESIRED)
    [(client, calls)] = registered
    recorded = client.record(calls)  # as the fact batch's command does when it is read
    time.sleep(1.1)  # x-amz-date is to the second
    s3, app_s3, admin, http = minio.clients("127.0.0.1:9000", root, app, DESIRED.region,
                                            runner=Runner())
    later = http.record(minio_setup.planned_reads(s3, admin, app_s3, DESIRED))
    assert len(recorded) == len(later) == 4 * len(DESIRED.buckets) + 3
    assert [r.key() for r in recorded] == [r.key() for r in later]
    dates = [(r.headers.get("x-amz-date"), s.headers.get("x-amz-date"))
             for r, s in zip(recorded, later)]
    assert all(a and b and a != b for a, b in dates), dates  # signed anew, yet matched
    assert {identity(r.headers) for r in recorded} == {"aws:mnemos", "aws:mnemos-app"}
    # the same bucket read by the root and by the application user: two answers, never shared
    by_url: dict = {}
    for r in recorded:
        by_url.setdefault((r.method, r.url), set()).add(r.key())
    assert any(len(keys) == 2 for keys in by_url.values()), by_url
