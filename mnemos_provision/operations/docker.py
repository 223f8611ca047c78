"""
Docker Engine: `docker.daemon` (the engine running and answering) and `docker.image_archives`
(`docker save` archives loaded when an image is missing).
"""

from __future__ import annotations

import hashlib

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand

from mnemos_provision.fact_batch import DeclaredFacts, batched_operation
from mnemos_provision.facts.docker import DockerAnswers, DockerImagesPresent


@batched_operation(lambda **_: {"answers": (DockerAnswers, {})})
def daemon(facts: DeclaredFacts, systemd: bool, timeout: int):
    """
    Start Docker Engine and wait until `docker version` answers. Under systemd it is enabled and
    started; without systemd (WSL's default) dockerd is started detached with its log in
    /var/log/dockerd.log. A daemon that does not answer is an error with its last log lines.

    + systemd: whether the host runs systemd
    + timeout: seconds to wait for the engine

    **Example:**

    .. code:: python

        docker.daemon(systemd=False, timeout=60)
    """
    if facts["answers"]:
        host.noop("Docker Engine answers")
        return
    if systemd:
        start = "systemctl enable --now docker.service"
        log = "journalctl -u docker.service -n 20 --no-pager"
    else:
        start = ("setsid nohup dockerd >>/var/log/dockerd.log 2>&1 </dev/null & ")
        log = "tail -n 20 /var/log/dockerd.log"
    yield StringCommand(
        f"{start}\n"
        f"i=0; while [ $i -lt {int(timeout)} ]; do "
        f"docker version --format x >/dev/null 2>&1 && exit 0; "
        f"i=$((i+1)); sleep 1; done; "
        f"echo 'Docker Engine did not answer within {int(timeout)} s; last log lines:' >&2; "
        f"{log} >&2; exit 1"
    )


@batched_operation(lambda images, **_: {"present": (DockerImagesPresent, {"images": images})})
def image_archives(facts: DeclaredFacts, archives: list[str], images: list[str]):
    """
    Load `docker save` archives into the engine when one of `images` is missing (air-gapped hosts,
    or the offline test images). Each archive is uploaded, loaded with `docker load` and removed.

    + archives: paths on the controller of `docker save` archives
    + images: the image references the stack needs

    **Example:**

    .. code:: python

        docker.image_archives(archives=["dist/mnemos-images.tar"],
                                      images=["redis:7.4.6-alpine", "postgres:16.11-alpine"])
    """
    if not archives:
        host.noop("no image archives configured (images are pulled from their registries)")
        return
    present = facts["present"]
    missing = [i for i in images if present is None or i not in present]
    if not missing:
        host.noop(f"all {len(images)} images are present")
        return
    for archive in archives:
        digest = hashlib.sha256(archive.encode()).hexdigest()[:12]
        remote = f"/tmp/mnemos-image-archive-{digest}.tar"
        yield FileUploadCommand(archive, remote)
        yield StringCommand("docker", "load", "-q", "-i", QuoteString(remote), "&&",
                            "rm", "-f", QuoteString(remote))
