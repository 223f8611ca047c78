"""
Files: `files.secret` (a 0600 file of secrets, compare-and-swap), `files.tree` (the whole rendered
MNEMOS tree in one batched operation), `files.system_files` (root-owned files outside the tree),
`files.line` (a line in a user's file). Written the way pyinfra writes its own
(operations/files.py): facts first, commands only for what differs, `host.noop` saying why
otherwise.
"""

from __future__ import annotations

import os
import posixpath
import shlex
from io import BytesIO
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import FileUploadCommand, FunctionCommand, StringCommand
from pyinfra.facts.files import FileContents
from pyinfra.operations.util.files import generate_color_diff

from mnemos_provision.connection import make_private_upload_dir, private_upload_dir
from mnemos_provision.fact_batch import DeclaredFacts, batched_operation
from mnemos_provision.facts.files import LineInFile, TreeState
from mnemos_provision.operations.util import (
    StateSwap,
    fail_command,
    make_dirs,
    sha256,
    staged_name,
)
from mnemos_provision.tree_entry import TreeEntry


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
    stage = staged_name(posixpath.dirname(dest), dest)
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


def _secret_facts(path: str, **_) -> dict:
    return {"state": (TreeState, {"root": posixpath.dirname(path), "dirs": [],
                                  "files": [posixpath.basename(path)]})}


@batched_operation(_secret_facts)
def secret(facts: DeclaredFacts, path: str, content: bytes, user: str, group: str,
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

        files.secret(path="/home/dev/.config/mnemos/secrets.json", content=b"{...}",
                     user="dev", group="dev", create_dirs=True,
                     swap=StateSwap(expected="absent",
                                    lock="/home/dev/.config/mnemos/secrets.json.lock",
                                    holder="laptop pid 4242"))
    """
    name = posixpath.basename(path)
    state = facts["state"].get(name)
    q = shlex.quote
    if state is not None and state.sha256 == sha256(content):
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


def _tree_probe(entries: list[TreeEntry], git_init: bool) -> tuple[list[str], list[str]]:
    """(directories, files) the TreeState fact of files.tree reads."""
    dirs = [e.path for e in entries if e.kind == "directory"]
    files = [e.path for e in entries if e.kind == "file"]
    return ([".", ".git"] if git_init else ["."]) + dirs, files


def _tree_facts(root: str, entries: list[TreeEntry], git_init: bool = True, **_) -> dict:
    dirs, files = _tree_probe(entries, git_init)
    return {"state": (TreeState, {"root": root, "dirs": dirs, "files": files})}


@batched_operation(_tree_facts)
def tree(facts: DeclaredFacts, root: str, entries: list[TreeEntry], user: str, group: str,
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

        files.tree(root="/home/dev/mnemos", entries=render_tree(settings, "/home/dev", secrets),
                  user="dev", group="dev")
    """
    state = facts["state"]
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
        if current is None or current.sha256 != sha256(entry.content or b""):
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
            staged = staged_name(posixpath.dirname(full), full)
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


def _system_files_fact(files: list[tuple[str, bytes | Path, str]], **_) -> dict:
    return {"root": "/", "dirs": [],
            "files": [p.lstrip("/") for p, content, _ in files if not isinstance(content, Path)],
            "unhashed": [p.lstrip("/") for p, content, _ in files if isinstance(content, Path)]}


@batched_operation(lambda **kw: {"state": (TreeState, _system_files_fact(**kw))})
def system_files(facts: DeclaredFacts, files: list[tuple[str, bytes | Path, str]]):
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

        files.system_files(files=[("/etc/docker/daemon.json", b"{}\\n", "644"),
                                  ("/usr/local/lib/docker/cli-plugins/docker-compose",
                                   Path("dist/docker-compose"), "755")])
    """
    state = facts["state"]
    q = shlex.quote
    commands: list = []
    upload: str | BytesIO
    for path, content, mode in files:
        current = state.get(path.lstrip("/"))
        if isinstance(content, Path):
            local = os.stat(content)
            same = (current is not None and current.size == local.st_size
                    and current.mtime == int(local.st_mtime))
            upload, touch = str(content), f" && touch -m -d @{int(local.st_mtime)} {q(path)}"
        else:
            same = current is not None and current.sha256 == sha256(content)
            upload, touch = BytesIO(content), ""
        if not same:
            commands.append(StringCommand(f"mkdir -p {q(posixpath.dirname(path))}"))
            commands.append(FileUploadCommand(upload, path))
            commands.append(StringCommand(
                f"chmod {mode} {q(path)} && chown root:root {q(path)}{touch}"))
        elif current.mode != mode or (current.owner, current.group) != ("root", "root"):
            commands.append(StringCommand(f"chmod {mode} {q(path)} && chown root:root {q(path)}"))
    if not commands:
        host.noop(f"{', '.join(p for p, _, _ in files)} up to date")
        return
    yield from commands


@batched_operation(lambda path, line, **_: {"state": (LineInFile, {"path": path, "line": line})})
def line(facts: DeclaredFacts, path: str, line: str, user: str, group: str):
    """
    Append `line` to a user's file (e.g. ~/.profile) unless the file has it as a whole line. A
    missing file is created, owned by `user`:`group` with mode 644; a file that does not end
    with a newline gets one before the line.

    + path: the file
    + line: the exact line
    + user, group: owner of the file when it is created

    **Example:**

    .. code:: python

        files.line(path="/home/dev/.profile", line="export DOCKER_BUILDKIT=1",
                     user="dev", group="dev")
    """
    state = facts["state"]
    if state == "present":
        host.noop(f"{path} has the line {line!r}")
        return
    q = shlex.quote
    if state == "missing":
        yield StringCommand(f"printf '%s\\n' {q(line)} > {q(path)} && "
                            f"chown {q(user)}:{q(group)} {q(path)} "
                            f"&& chmod 644 {q(path)}")
        return
    yield StringCommand(f"[ -z \"$(tail -c 1 {q(path)})\" ] || echo >> {q(path)}; "
                        f"printf '%s\\n' {q(line)} >> {q(path)}")
