"""
The test machines' images, checked before the converge tier spends ten minutes on them.

The engine inside a test machine uses the vfs storage driver, which unpacks an image's layers
one over the other into a plain directory: a mode or an owner that overlay2 (the engine outside)
hides is what the containers get inside. Once a base image whose `/` was 0700 (the mode of
`tempfile.mkdtemp()`) kept every non-root server of the stand-ins out of `/`, and only the
converge tier of a machine without a cached base image showed it ("permission denied").

Here each image of the stand-in archive (the one the converge tier hands to the deploy) is
unpacked as vfs does it, and each stand-in's server binary is run as the account it runs as.
Needs root and Docker Engine (the images are built by the harness, as for the converge tier).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from tests import harness
from tests.conftest import need

pytestmark = pytest.mark.unit


def _layers(archive: tarfile.TarFile, ref: str) -> list[str]:
    manifest = json.load(archive.extractfile("manifest.json"))
    for image in manifest:
        if ref in (image.get("RepoTags") or []):
            return image["Layers"]
    raise AssertionError(f"{ref} is not in the archive")


def unpack(archive: tarfile.TarFile, ref: str, dest: Path) -> None:
    """The layers of `ref`, in order, into `dest`, applying whiteouts (what vfs does)."""
    for layer in _layers(archive, ref):
        names = tarfile.open(fileobj=archive.extractfile(layer), mode="r|").getnames()
        for name in names:
            base = os.path.basename(name)
            parent = dest / os.path.dirname(name)
            if base == ".wh..wh..opq":
                for child in parent.iterdir() if parent.is_dir() else ():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            elif base.startswith(".wh."):
                gone = parent / base[len(".wh."):]
                if gone.is_dir() and not gone.is_symlink():
                    shutil.rmtree(gone)
                elif gone.exists() or gone.is_symlink():
                    gone.unlink()
        # GNU tar as root keeps modes and owners, and sets the mode of `./` like any directory
        with subprocess.Popen(["tar", "-x", "--numeric-owner", "-p", "--exclude=*/.wh.*",
                               "--exclude=.wh.*", "-C", str(dest)], stdin=subprocess.PIPE) as tar:
            shutil.copyfileobj(archive.extractfile(layer), tar.stdin)
            tar.stdin.close()
        assert tar.returncode == 0, f"tar could not unpack {layer} of {ref}"


def _account(rootfs: Path, name: str) -> tuple[int, int]:
    if re.fullmatch(r"\d+:\d+", name):  # a compose `user:` by number (Traefik's)
        uid, gid = name.split(":")
        return int(uid), int(gid)
    for line in (rootfs / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2]), int(fields[3])
    raise AssertionError(f"no account {name} in the image")


@pytest.fixture(scope="module")
def standin_archive() -> Path:
    need("docker")
    if os.geteuid() != 0:
        pytest.skip("unpacking images with their owners needs root (CI runs as root)")
    return harness.ensure_standin_archive()


def test_the_base_image_root_directory_is_0755(standin_archive):
    """Whatever the layer that last sets `./`, the merged `/` must let every account through."""
    with tarfile.open(standin_archive) as archive:
        base_layer = _layers(archive, harness.STANDINS["postgres"])[0]
        layer = tarfile.open(fileobj=archive.extractfile(base_layer), mode="r|")
        root_modes = [m.mode for m in layer if m.name in (".", "./")]
    assert root_modes, "the base layer has no entry for its root directory"
    assert oct(root_modes[-1]) == oct(harness.ROOT_MODE), (
        f"the base image's / has mode {oct(root_modes[-1])}: containers that run as a non-root "
        "user cannot start under the vfs storage driver")


@pytest.fixture(scope="module")
def service_standin_archive() -> Path:
    """Every stand-in's archive, the on-demand ones (Vault, MinIO, Loki, Grafana, the collector)
    included: the one the converge tier's second machine loads."""
    need("docker")
    if os.geteuid() != 0:
        pytest.skip("unpacking images with their owners needs root (CI runs as root)")
    return harness.ensure_standin_archive(tuple(harness.STANDINS) + tuple(harness.SERVICE_STANDINS))


@pytest.mark.parametrize("name", sorted(harness.STANDINS))
def test_each_standin_server_runs_as_its_own_account_on_vfs_layers(standin_archive, name):
    run_as_its_account(standin_archive, harness.STANDINS[name], name)


@pytest.mark.parametrize("name", sorted(harness.SERVICE_STANDINS))
def test_on_demand_standins_run_as_their_account_on_vfs_layers(service_standin_archive, name):
    run_as_its_account(service_standin_archive, harness.SERVICE_STANDINS[name], name)


def run_as_its_account(standin_archive: Path, ref: str, name: str) -> None:
    user, argv = harness.STANDIN_RUNS_AS[name]
    work = Path(tempfile.mkdtemp(prefix=f"vfs-{name}-", dir=harness.CACHE))
    rootfs = work / "rootfs"
    rootfs.mkdir()
    try:
        with tarfile.open(standin_archive) as archive:
            unpack(archive, ref, rootfs)
        mode = stat.S_IMODE(rootfs.stat().st_mode)
        assert mode & 0o005 == 0o005, f"{ref}: / has mode {oct(mode)}, {user} cannot traverse it"
        uid, gid = _account(rootfs, user)
        result = subprocess.run(["chroot", f"--userspec={uid}:{gid}", "--groups=", str(rootfs),
                                 *argv], capture_output=True, text=True, timeout=60,
                                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        assert result.returncode == 0, (
            f"{ref}: {' '.join(argv)} as {user} failed ({result.returncode}): {result.stderr}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
