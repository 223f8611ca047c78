"""The versions the upgrade guard reads from image tags (mnemos_provision/operations/upgrade.py);
the guard's decisions themselves are the compose.stack fixtures (tests/operations)."""

from __future__ import annotations

import pytest

from mnemos_provision.operations.upgrade import pg_major, release_version, tag_of

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("image,tag", [
    ("postgres:16.11-alpine", "16.11-alpine"),
    ("registry.local:5000/postgres:17", "17"),
    ("registry.local:5000/postgres", ""),
    ("postgres:16@sha256:" + "a" * 64, "16"),
])
def test_tag_of(image, tag):
    assert tag_of(image) == tag


@pytest.mark.parametrize("image,major", [
    ("postgres:16.11-alpine", "16"), ("postgres:17-alpine", "17"), ("postgres:17", "17"),
    ("postgres:9.6", "9"), ("mnemos-standin/postgres:15-next", "15"),
    ("mnemos-standin/postgres:debian12", None), ("postgres:latest", None),
    ("postgres:alpine3.20", None), ("registry.local:5000/postgres", None),
])
def test_pg_major(image, major):
    assert pg_major(image) == major


def test_release_versions_compare_as_upstream_orders_them():
    assert release_version("hashicorp/vault:1.20.4") < release_version("hashicorp/vault:1.21.0")
    assert release_version("hashicorp/vault:1.9.0") < release_version("hashicorp/vault:1.10.0")
    older = release_version("quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z")
    newer = release_version("quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z")
    assert older is not None and newer is not None and older < newer
    assert release_version("hashicorp/vault:latest") is None
