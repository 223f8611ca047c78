"""
Operations pyinfra does not have, written the way pyinfra writes its own (operations/files.py):
facts first, commands only for what differs, `host.noop` saying why otherwise.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import secrets
import shlex
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Callable

from pyinfra import host, logger
from pyinfra.api import FileUploadCommand, FunctionCommand, StringCommand, operation
from pyinfra.operations.util.files import generate_color_diff
from pyinfra.facts.files import FileContents

from mnemos_provision import fact_batch
from mnemos_provision.fact_batch import batched_operation
from mnemos_provision.facts import (
    AptListsAge, AptPackages, ComposeStatus, DockerAnswers, DockerImagesPresent, LineInFile,
    ProcessRunning, TreeState, UserGroups,
)
from mnemos_provision.render import TreeEntry


# Wait for a lock held by another apt (unattended-upgrades on a fresh Ubuntu) instead of failing.
APT_LOCK_WAIT = "-o DPkg::Lock::Timeout=300"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def changes(op) -> Callable[[], bool]:
    """
    For `force=`: whether operation `op` (the result of an operation call) changes the host,
    asked when the operation that depends on it runs: `did_change()` once `op` has run,
    `will_change` while pyinfra plans (change detection, --dry). pyinfra's `op.will_change`
    passed directly is decided at plan time, at the cost of running `op`'s facts twice a run.
    """
    return lambda: op.did_change() if op.is_complete() else op.will_change


def _fact(cls, **kwargs):
    """A fact for the current host: from the run's batch while it holds, else read on its own."""
    return fact_batch.read(host, cls, **kwargs)


def private_upload_dir(target) -> str | None:
    """For an SSH host whose operations run under sudo/su/doas: a new directory name (128 random
    bits) in /tmp for the login account's own uploads; None where uploads need none."""
    from pyinfra.connectors.ssh import SSHConnector
    from mnemos_provision.context import connector_arguments
    if not isinstance(getattr(target, "connector", None), SSHConnector):
        return None
    args = connector_arguments(target)
    if not any(args.get(k) for k in ("_sudo", "_su_user", "_doas", "_dzdo")):
        return None
    return f"/tmp/mnemos-upload-{secrets.token_hex(16)}"


def make_private_upload_dir(state, host, path: str) -> None:
    """mkdir -m 700 as the login account itself (no sudo): only it and root can enter."""
    ok, output = host.run_shell_command(StringCommand("mkdir", "-m", "700", path),
                                        print_output=False, print_input=False)
    if not ok:
        raise OSError(f"cannot create {path} on {host.name}: {' '.join(output.stderr_lines)}")


def _staged_name(directory: str, dest: str) -> str:
    """An unpredictable name beside nothing anyone could have planted: 128 random bits."""
    return posixpath.join(directory, f".{posixpath.basename(dest)}.mnemos-{secrets.token_hex(16)}")


def _secret_upload(content: bytes, dest: str, user: str, group: str, swap: StateSwap | None = None):
    """
    Commands that write a secret file without it ever being readable by another account: a new
    0700 directory under an unpredictable name beside `dest` (same filesystem: the final rename is
    atomic), the upload into it, mode 0600 and the owner set there, then the rename into place
    (a rename never follows a symlink at `dest`; a full disk leaves no half file at `dest`).
    With `swap`, the rename happens only while `dest` is still the file the run read, under flock
    on `swap.lock`.
    """
    q = shlex.quote
    stage = _staged_name(posixpath.dirname(dest), dest)
    staged = posixpath.join(stage, posixpath.basename(dest))
    yield StringCommand(f"mkdir -m 700 {q(stage)}")
    private = private_upload_dir(host)
    if private:
        # over SSH with sudo, pyinfra uploads as the login account first (to /tmp/pyinfra-<sha1>,
        # the server's default mode): into a 0700 directory of that account instead
        yield FunctionCommand(make_private_upload_dir, (private,), {})
    yield FileUploadCommand(BytesIO(content), staged,
                            remote_temp_filename=f"{private}/upload" if private else None)
    if private:
        yield StringCommand(f"rm -rf {q(private)}")
    prepare = f"chmod 600 {q(staged)} && chown {q(user)}:{q(group)} {q(staged)}"
    if swap is None:
        yield StringCommand(f"{prepare} && mv -f {q(staged)} {q(dest)} && rmdir {q(stage)}")
        return
    keep = 'mv -f "$d" "$d.damaged-$(date -u +%Y%m%dT%H%M%SZ)" && ' if swap.keep_damaged else ""
    yield StringCommand(
        f"t={q(stage)}; s={q(staged)}; d={q(dest)}; l={q(swap.lock)}; {prepare} && ( "
        f'exec 9>>"$l" && chown {q(user)}:{q(group)} "$l" && chmod 600 "$l" || exit 1; '
        f'if ! flock -w {swap.wait} 9; then rm -rf "$t"; echo "mnemos: another run has held $l for '
        f'{swap.wait} s (last holder: $(head -c 200 "$l")); try again once it has finished" >&2; '
        "exit 1; fi; "
        'if [ -e "$d" ]; then cur=$(sha256sum < "$d" | cut -c1-64); else cur=absent; fi; '
        f'if [ "$cur" != {q(swap.expected)} ]; then rm -rf "$t"; echo "mnemos: $d was written by '
        'another run after this run read it (that run: $(head -c 200 "$l")); this run stopped '
        'before writing anything from it: run again" >&2; exit 1; fi; '
        f'{keep}mv -f "$s" "$d" && rmdir "$t" && printf \'%s\\n\' {q(swap.holder)} > "$l" )'
    )


@dataclass(frozen=True)
class StateSwap:
    """A compare-and-swap of a state file: written only while it is still the file read."""
    expected: str  # sha256 of the file read, or "absent"
    lock: str  # the flock file
    holder: str  # who writes (shown to a run that waits or loses)
    keep_damaged: bool = False  # move the file read aside instead of replacing it
    wait: int = 60  # seconds a run waits for the lock


def make_dirs(path: str, user: str, group: str, last_mode: str, private: bool) -> StringCommand:
    """
    Each missing directory down to `path`, top down, made for `user` (parents 0755, `path` itself
    `last_mode`): unlike `mkdir -p` under sudo, no directory the deploy makes in a home is root's.
    An existing directory is never changed. With `private`, `path` (also one another run made
    meanwhile) must end up a directory of `user` that no other account can write.
    """
    q = shlex.quote
    check = (
        'if [ -L "$last" ] || [ ! -d "$last" ] || '
        f'[ "$(stat -c %U "$last")" != {q(user)} ] || '
        '[ $(( 0$(stat -c %a "$last") & 022 )) -ne 0 ]; then '
        'echo "mnemos: $last appeared meanwhile and is not a directory of '
        f'{user} that only {user} can write; nothing was written" >&2; exit 1; fi'
    ) if private else "true"
    return StringCommand(
        f"d={q(path)}; last=$d; set --; "
        'while [ ! -e "$d" ] && [ ! -L "$d" ]; do set -- "$d" "$@"; d=$(dirname "$d"); done; '
        f'for d; do if [ "$d" = "$last" ]; then m={last_mode}; else m=755; fi; '
        'if mkdir -m $m "$d" 2>/dev/null; then '
        f'chown {q(user)}:{q(group)} "$d" || exit 1; fi; done; {check}')


def _secret_file_facts(path: str, **_):
    return [(TreeState, {"root": posixpath.dirname(path), "dirs": [], "files": [posixpath.basename(path)]})]


@batched_operation(_secret_file_facts)
@operation()
def secret_file(path: str, content: bytes, user: str, group: str,
                swap: StateSwap | None = None, create_dirs: bool = False):
    """
    Write a file that holds secrets: mode 0600, compared by sha256, its text never handed to the
    diff printer or the output (unlike files.put/files.template under --diff).

    + path: remote path of the file
    + content: the bytes it must hold
    + user, group: its owner
    + swap: write only while the file is still the one read (StateSwap), under flock
    + create_dirs: create the missing directories above `path` for `user` (the last one 0700);
      an existing directory is never changed

    **Example:**

    .. code:: python

        secret_file(path="/home/dev/.config/mnemos/secrets.json", content=b"{...}",
                    user="dev", group="dev", swap=StateSwap(expected="absent", lock="/home/dev/.config/mnemos/secrets.json.lock",
                                   holder="laptop pid 4242"), create_dirs=True)
    """
    name = posixpath.basename(path)
    state = _fact(TreeState, root=posixpath.dirname(path), dirs=[], files=[name]).get(name)
    q = shlex.quote
    if state is not None and state.sha256 == _sha256(content):
        if state.mode == "600" and (state.owner, state.group) == (user, group):
            host.noop(f"secret file {path} is up to date (0600, {user}:{group})")
            return
        yield StringCommand(f"chmod 600 {q(path)} && chown {q(user)}:{q(group)} {q(path)}")
        return
    if create_dirs:
        yield make_dirs(posixpath.dirname(path), user, group, last_mode="700", private=True)
    yield from _secret_upload(content, path, user, group, swap)


def _print_diffs(root: str, uploads: list[TreeEntry], state: dict) -> None:
    """What pyinfra's --diff shows for files.put, except for secret files: never their text."""
    for entry in uploads:
        full = posixpath.join(root, entry.path)
        if entry.secret:
            host.log(f"Will modify {full} (holds secrets: diff not shown)", logger.info)
            continue
        current = host.get_fact(FileContents, path=full) if entry.path in state else None
        current_lines = [line + "\n" for line in current] if current else []
        desired_lines = (entry.content or b"").decode(errors="replace").splitlines(keepends=True)
        host.log(f"Will modify {full}", logger.info)
        for line in generate_color_diff(current_lines, desired_lines):
            logger.info("  %s", line)
        logger.info("")


def _foreign_path(full: str, kind: str, current) -> str | None:
    """Why a managed path cannot be written: a symlink, another type, or a second name of a file
    elsewhere (None: it can). Nothing is ever written through such a path."""
    if current.kind == "symbolic link":
        return f"{full} is a symbolic link; the deploy never writes through one"
    if kind == "directory" and current.kind != "directory":
        return f"{full} should be a directory but is a {current.kind}"
    if kind != "directory" and not current.kind.startswith("regular"):
        return f"{full} should be a regular file but is a {current.kind}"
    if kind != "directory" and current.links > 1:
        return (f"{full} is a hard link ({current.links} names for one file): writing it would "
                "change the other names too")
    return None


def fail_command(message: str) -> StringCommand:
    """A command that fails with `message` on stderr: pyinfra reports it as the operation's error
    for this host (no traceback), and the host's later operations do not run."""
    return StringCommand(f"echo {shlex.quote('mnemos: ' + message)} >&2; exit 1")


def _tree_probe(entries: list[TreeEntry], git_init: bool) -> tuple[list[str], list[str]]:
    """(directories, files) the TreeState fact of sync_tree reads."""
    dirs = [e.path for e in entries if e.kind == "directory"]
    files = [e.path for e in entries if e.kind == "file"]
    return ([".", ".git"] if git_init else ["."]) + dirs, files


def _sync_tree_facts(root: str, entries: list[TreeEntry], git_init: bool = True, **_):
    dirs, files = _tree_probe(entries, git_init)
    return [(TreeState, {"root": root, "dirs": dirs, "files": files})]


@batched_operation(_sync_tree_facts)
@operation()
def sync_tree(root: str, entries: list[TreeEntry], user: str, group: str,
              git_init: bool = True):
    """
    Converge a whole rendered tree in a bounded number of round trips: one fact reads type, mode,
    owner and sha256 of every managed path; only what differs is created, uploaded or fixed.
    Every file is written under a temporary name and renamed into place; secret entries through a
    new 0700 directory beside them, never shown in a diff.

    + root: absolute path of the tree
    + entries: TreeEntry list from mnemos_provision.render.render_tree
    + user, group: owner of every managed path
    + git_init: run ``git init -b main`` when ``root/.git`` does not exist

    **Example:**

    .. code:: python

        sync_tree(root="/home/dev/mnemos", entries=render_tree(settings, "/home/dev", secrets),
                  user="dev", group="dev")
    """
    probe_dirs, files = _tree_probe(entries, git_init)
    state = _fact(TreeState, root=root, dirs=probe_dirs, files=files)
    q = shlex.quote

    mkdirs: list[str] = []
    uploads: list[TreeEntry] = []
    chmods: dict[str, list[str]] = {}
    chowns: list[str] = []

    def want(path: str, mode: str) -> None:
        current = state.get(path)
        full = posixpath.normpath(posixpath.join(root, path))
        if current is None:
            return
        if current.mode != mode:
            chmods.setdefault(mode, []).append(full)
        if (current.owner, current.group) != (user, group):
            chowns.append(full)

    make_root = "." not in state
    if not make_root:
        want(".", state["."].mode)  # the root keeps its mode; only the owner is ours
    foreign = [reason for entry in entries if entry.path in state
               for reason in [_foreign_path(posixpath.join(root, entry.path), entry.kind,
                                            state[entry.path])] if reason]
    if foreign:
        yield fail_command("; ".join(foreign) + ". Nothing was written: move "
                           f"{'it' if len(foreign) == 1 else 'them'} away and run again")
        return
    for entry in entries:
        full = posixpath.join(root, entry.path)
        current = state.get(entry.path)
        if entry.kind == "directory":
            if current is None:
                mkdirs.append(full)
                chmods.setdefault(entry.mode, []).append(full)
                chowns.append(full)
            else:
                want(entry.path, entry.mode)
            continue
        if current is None or current.sha256 != _sha256(entry.content or b""):
            uploads.append(entry)
        else:
            want(entry.path, entry.mode)

    needs_git = git_init and ".git" not in state

    if not (make_root or mkdirs or uploads or chmods or chowns or needs_git):
        host.noop(f"tree {root}: all {len(entries)} managed paths up to date")
        return

    if host.state.config.DIFF:
        _print_diffs(root, uploads, state)

    if make_root:
        yield make_dirs(root, user, group, last_mode="755", private=False)
    if mkdirs:
        yield StringCommand("mkdir -p " + " ".join(q(p) for p in mkdirs))
    # Every file is uploaded under an unpredictable name beside its place, given its mode and
    # owner there, and renamed into place: a full disk never leaves a half file, and a rename
    # replaces a path without writing through it.
    renames: list[tuple[str, str]] = []
    for entry in uploads:
        full = posixpath.join(root, entry.path)
        if entry.secret:
            yield from _secret_upload(entry.content or b"", full, user, group)
        else:
            staged = _staged_name(posixpath.dirname(full), full)
            yield FileUploadCommand(BytesIO(entry.content or b""), staged)
            chmods.setdefault(entry.mode, []).append(staged)
            chowns.append(staged)
            renames.append((staged, full))
    for mode, paths in sorted(chmods.items()):
        yield StringCommand(f"chmod {mode} " + " ".join(q(p) for p in paths))
    if chowns:
        yield StringCommand(f"chown {q(user)}:{q(group)} " + " ".join(q(p) for p in chowns))
    if renames:
        yield StringCommand(" && ".join(f"mv -f {q(a)} {q(b)}" for a, b in renames))
    if needs_git:
        yield StringCommand(
            f"git -C {q(root)} init -q -b main && chown -R {q(user)}:{q(group)} {q(root)}/.git"
        )


def _apt_names(packages: list[str], optional: list[str] | None = None, **_) -> list[str]:
    return [p.split("=", 1)[0] for p in list(packages) + list(optional or [])]


@batched_operation(lambda **kw: [(AptPackages, {"names": _apt_names(**kw)})])
@operation()
def apt_install(packages: list[str], optional: list[str] | None = None):
    """
    Install apt packages that are missing, in one apt-get call. `optional` packages are installed
    only where the distribution has them (e.g. python3.11), and are skipped silently otherwise.

    + packages: names that must be installed, or name=version to pin (unknown names fail the run)
    + optional: names installed only when apt has a candidate for them

    **Example:**

    .. code:: python

        apt_install(packages=["git", "jq"], optional=["python3.11"])
    """
    optional = optional or []
    state = _fact(AptPackages, names=_apt_names(packages, optional))

    def satisfied(spec: str) -> bool:
        name, _, version = spec.partition("=")
        info = state.get(name, {})
        return bool(info.get("installed")) and (not version or info.get("version") == version)

    missing = [p for p in packages if not satisfied(p)]
    missing += [p for p in optional
                if not state.get(p, {}).get("installed") and state.get(p, {}).get("candidate")]
    interrupted = "DPKG_INTERRUPTED" in state
    if not missing and not interrupted:
        host.noop(f"{len(packages)} packages already installed")
        return
    if interrupted:  # a run was killed while dpkg worked: finish its configuration first
        yield StringCommand("DEBIAN_FRONTEND=noninteractive dpkg --configure -a")
    if missing:
        yield StringCommand(
            f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {APT_LOCK_WAIT} "
            + " ".join(shlex.quote(p) for p in missing)
        )


@batched_operation(lambda packages, **_: [(AptPackages, {"names": list(packages)})])
@operation()
def apt_remove(packages: list[str]):
    """
    Remove installed apt packages (e.g. those that conflict with docker-ce).

    + packages: names to remove when installed
    """
    state = _fact(AptPackages, names=list(packages))
    present = [p for p in packages if state.get(p, {}).get("installed")]
    if not present:
        host.noop(f"none of {', '.join(packages)} is installed")
        return
    yield StringCommand(f"DEBIAN_FRONTEND=noninteractive apt-get remove -y -q {APT_LOCK_WAIT} "
                        + " ".join(shlex.quote(p) for p in present))


@batched_operation(lambda **_: [(AptListsAge, {})])
@operation()
def apt_refresh(max_age_seconds: int, force: bool | Callable[[], bool] = False):
    """
    Refresh the apt cache when it is older than `max_age_seconds` (or empty), or when `force`.
    A converged host within that age changes nothing.

    + max_age_seconds: how old the package lists may be
    + force: refresh regardless (after adding an apt source); a callable is asked when the
      operation runs, e.g. ``force=changes(source_list)``

    **Example:**

    .. code:: python

        source = files.put(src=..., dest="/etc/apt/sources.list.d/docker.list")
        apt_refresh(max_age_seconds=3600, force=changes(source))
    """
    if callable(force):
        force = force()
    age = _fact(AptListsAge)
    if not force and age is not None and age <= max_age_seconds:
        host.noop(f"apt lists are {age} s old (fresh within {max_age_seconds} s)")
        return
    yield StringCommand(f"apt-get update -q {APT_LOCK_WAIT}")


@batched_operation(lambda **_: [(DockerAnswers, {})])
@operation()
def ensure_docker_running(systemd: bool, timeout: int):
    """
    Start Docker Engine and wait until `docker info` answers. Under systemd it is enabled and
    started; without systemd (WSL's default) dockerd is started detached with its log in
    /var/log/dockerd.log. A daemon that does not answer is an error with its last log lines.

    + systemd: whether the host runs systemd
    + timeout: seconds to wait for the engine
    """
    if _fact(DockerAnswers):
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
        f"i=0; while [ $i -lt {int(timeout)} ]; do docker info >/dev/null 2>&1 && exit 0; "
        f"i=$((i+1)); sleep 1; done; "
        f"echo 'Docker Engine did not answer within {int(timeout)} s; last log lines:' >&2; "
        f"{log} >&2; exit 1"
    )


def stack_differences(wanted: dict[str, str] | None, running: dict[str, dict] | None) -> list[str]:
    """Why the stack must be (re)converged; [] when every wanted service runs its config healthy."""
    if wanted is None or running is None:
        return ["Docker or the rendered compose file is not there yet"]
    reasons = []
    for service, config_hash in sorted(wanted.items()):
        current = running.get(service)
        if current is None:
            reasons.append(f"{service}: no container")
        elif current["hash"] != config_hash:
            reasons.append(f"{service}: configuration changed")
        elif current["state"] != "running":
            reasons.append(f"{service}: {current['state']}")
        elif current["health"] not in ("healthy", "none"):
            reasons.append(f"{service}: {current['health']}")
    for service in sorted(set(running) - set(wanted)):
        reasons.append(f"{service}: orphan container of a disabled service")
    return reasons


@batched_operation(lambda root, project, **_: [(ComposeStatus, {"root": root, "project": project})])
@operation()
def compose_up(root: str, project: str, images: dict[str, str], services: list[str],
               timeout: int):
    """
    Converge a compose stack: `docker compose up -d --wait --remove-orphans` only when a wanted
    service has no container, another configuration (compose config hash), is not running or is
    unhealthy, or an orphan is left. Missing images are pulled first, one by one, and a pull that
    fails names the image and the setting to change. A service that does not become healthy is an
    error with its health output and last log lines. Volumes are never removed.

    + root: directory of docker-compose.yml and .env
    + project: compose project name (container labels)
    + images: {service: image} of the enabled services
    + services: the enabled services
    + timeout: seconds `--wait` may take

    **Example:**

    .. code:: python

        compose_up(root="/home/dev/mnemos", project="mnemos", images={"redis": "redis:7.4.6-alpine"},
                   services=["redis"], timeout=300)
    """
    status = _fact(ComposeStatus, root=root, project=project)
    wanted, running = status["wanted"], status["running"]
    reasons = stack_differences(wanted, running)
    if not reasons:
        host.noop(f"stack {project}: {len(wanted)} services running their configuration, healthy")
        return
    q = shlex.quote
    pulls = []
    for service in services:
        image = images[service]
        message = (f'image {image} cannot be pulled: set images["{service}"] in group_data to a '
                   "reachable registry or mirror, or docker load it")
        pulls.append(
            f"docker image inspect {q(image)} >/dev/null 2>&1 || docker pull -q {q(image)} >/dev/null || "
            f"{{ echo {q(message)} >&2; exit 1; }}"
        )
    report = (
        "echo 'the stack did not become healthy:' >&2; docker compose ps -a >&2; "
        "for c in $(docker compose ps -a --format '{{.Service}}'); do "
        "s=$(docker compose ps -a --format '{{.Health}}' \"$c\"); "
        "case \"$s\" in healthy|'') ;; *) echo \"--- $c ($s): last log lines\" >&2; "
        "docker compose logs --no-color --tail 20 \"$c\" >&2 ;; esac; done; exit 1"
    )
    yield StringCommand(
        f"cd {q(root)}\n" + "\n".join(pulls) + "\n"
        f"docker compose up -d --wait --wait-timeout {int(timeout)} --remove-orphans || {{ {report}; }}"
    )


@batched_operation(lambda images, **_: [(DockerImagesPresent, {"images": images})])
@operation()
def load_image_archives(archives: list[str], images: list[str]):
    """
    Load `docker save` archives into the engine when one of `images` is missing (air-gapped hosts,
    or the offline test images). Each archive is uploaded, loaded with `docker load` and removed.

    + archives: paths on the controller of `docker save` archives
    + images: the image references the stack needs
    """
    if not archives:
        host.noop("no image archives configured (images are pulled from their registries)")
        return
    present = _fact(DockerImagesPresent, images=images)
    missing = [i for i in images if present is None or i not in present]
    if not missing:
        host.noop(f"all {len(images)} images are present")
        return
    for archive in archives:
        remote = "/tmp/mnemos-image-archive-" + hashlib.sha256(archive.encode()).hexdigest()[:12] + ".tar"
        yield FileUploadCommand(archive, remote)
        yield StringCommand(f"docker load -q -i {shlex.quote(remote)} && rm -f {shlex.quote(remote)}")


@batched_operation(lambda **_: [(ProcessRunning, {"comm": "cron"})])
@operation()
def ensure_cron_running(systemd: bool):
    """
    Keep the cron daemon running so that scheduled backups happen: under systemd it is enabled and
    started; without systemd (WSL's default) it is started detached.

    + systemd: whether the host runs systemd
    """
    if _fact(ProcessRunning, comm="cron"):
        host.noop("cron is running")
        return
    if systemd:
        yield StringCommand("systemctl enable --now cron.service")
    else:
        yield StringCommand("cron")  # Debian/Ubuntu's cron daemonizes itself


def _system_files_fact(files: list[tuple[str, bytes | Path, str]], **_) -> dict:
    return {"root": "/", "dirs": [],
            "files": [p.lstrip("/") for p, content, _ in files if not isinstance(content, Path)],
            "unhashed": [p.lstrip("/") for p, content, _ in files if isinstance(content, Path)]}


@batched_operation(lambda **kw: [(TreeState, _system_files_fact(**kw))])
@operation()
def system_files(files: list[tuple[str, bytes | Path, str]]):
    """
    Root-owned files outside the tree (daemon.json, the Compose plugin, a cron entry): one fact
    reads mode, owner and sha256 of all of them; only what differs is uploaded or fixed. Parent
    directories are created when missing (never changed otherwise). Not for secrets.
    Content given as bytes is compared by sha256. Content given as a Path (a large file on the
    controller, e.g. the 60 MB Compose plugin) is compared the way rsync compares by default, by
    size and modification time: it is uploaded with the controller file's mtime, so a file
    replaced on the host (another size or mtime) is uploaded again, and an unchanged one costs
    no hashing on either side.

    + files: (absolute path, content as bytes or a controller Path, octal mode) for each file

    **Example:**

    .. code:: python

        system_files(files=[("/etc/docker/daemon.json", b"{}\\n", "644"),
                            ("/usr/local/lib/docker/cli-plugins/docker-compose",
                             Path("dist/docker-compose"), "755")])
    """
    state = _fact(TreeState, **_system_files_fact(files))
    q = shlex.quote
    commands: list = []
    for path, content, mode in files:
        current = state.get(path.lstrip("/"))
        if isinstance(content, Path):
            local = os.stat(content)
            same = (current is not None and current.size == local.st_size
                    and current.mtime == int(local.st_mtime))
            upload, touch = str(content), f" && touch -m -d @{int(local.st_mtime)} {q(path)}"
        else:
            same = current is not None and current.sha256 == _sha256(content)
            upload, touch = BytesIO(content), ""
        if not same:
            commands.append(StringCommand(f"mkdir -p {q(posixpath.dirname(path))}"))
            commands.append(FileUploadCommand(upload, path))
            commands.append(StringCommand(f"chmod {mode} {q(path)} && chown root:root {q(path)}{touch}"))
        elif current.mode != mode or (current.owner, current.group) != ("root", "root"):
            commands.append(StringCommand(f"chmod {mode} {q(path)} && chown root:root {q(path)}"))
    if not commands:
        host.noop(f"{', '.join(p for p, _, _ in files)} up to date")
        return
    yield from commands


@batched_operation(lambda user, **_: [(UserGroups, {"user": user})])
@operation()
def user_in_group(user: str, group: str):
    """
    Add `user` to the supplementary `group` (e.g. docker) when it is not a member.

    + user: account name
    + group: group name (must exist when the operation executes)
    """
    if group in _fact(UserGroups, user=user):
        host.noop(f"{user} is in the {group} group")
        return
    yield StringCommand(f"usermod -a -G {shlex.quote(group)} {shlex.quote(user)}")


@batched_operation(lambda path, line, **_: [(LineInFile, {"path": path, "line": line})])
@operation()
def line_in_file(path: str, line: str, user: str, group: str):
    """
    Append `line` to a user's file (e.g. ~/.profile) unless the file has it as a whole line. A
    missing file is created, owned by `user`:`group` with mode 644; a file that does not end
    with a newline gets one before the line.

    + path: the file
    + line: the exact line
    + user, group: owner of the file when it is created

    **Example:**

    .. code:: python

        line_in_file(path="/home/dev/.profile", line="export DOCKER_BUILDKIT=1",
                     user="dev", group="dev")
    """
    state = _fact(LineInFile, path=path, line=line)
    if state == "present":
        host.noop(f"{path} has the line {line!r}")
        return
    q = shlex.quote
    if state == "missing":
        yield StringCommand(f"printf '%s\\n' {q(line)} > {q(path)} && chown {q(user)}:{q(group)} {q(path)} "
                            f"&& chmod 644 {q(path)}")
        return
    yield StringCommand(f"[ -z \"$(tail -c 1 {q(path)})\" ] || echo >> {q(path)}; "
                        f"printf '%s\\n' {q(line)} >> {q(path)}")
