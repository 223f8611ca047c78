"""Packages: the design's apt list (optional ones where the distribution has them)."""

from __future__ import annotations

from pyinfra.api import deploy

from mnemos_provision.context import HostContext
from mnemos_provision.operations import apt


@deploy("Packages")
def packages(ctx: HostContext):
    s = ctx.settings
    apt.update(name="Refresh the apt cache when stale", cache_time=s.apt_cache_valid_time)
    apt.packages(name="Install the design's apt packages", packages=s.apt_packages,
                 optional=s.apt_optional_packages)
