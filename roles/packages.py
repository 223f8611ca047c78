"""Packages: the design's apt list (optional ones where the distribution has them)."""

from __future__ import annotations

from pyinfra.api import deploy

from mnemos_provision.context import HostContext
from mnemos_provision.operations import apt_install, apt_refresh


@deploy("Packages")
def packages(ctx: HostContext):
    s = ctx.settings
    apt_refresh(name="Refresh the apt cache when stale", max_age_seconds=s.apt_cache_valid_time)
    apt_install(name="Install the design's apt packages", packages=s.apt_packages,
                optional=s.apt_optional_packages)
