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
    AS_USER,
    StateSwap,
    as_user,
    fail_command,
    in_root_only_dir,
    install_as_root,
    install_as_user,
    make_dirs,
    sha256,
    stage_dir,
    staged_run,
    swap_as_user,
)
from mnemos_provision.tree_entry import TreeEntry


def staged_uploads(stage: str, contents: list[bytes | str], target=None):
    """
    Root's side of every write (docs/security.md): `stage` made (mkdir -m 700, root's
    own), each content uploaded into it as `stage/<index>`. `target`: the host (another operation
    module's `host`; default this module's). Over SSH with sudo, pyinfra uploads
    as the login account first (to /tmp/pyinfra-<sha1>, the server's default mode): into a 0700
    directory of that account instead. A str content is a file on the controller.
    """
    q = shlex.quote
    yield StringCommand(f"mkdir -m 700 {q(stage)}")
    private = private_upload_dir(host if target is None else target)
    if private:
        yield FunctionCommand(make_private_upload_dir, (private,), {})
    for index, content in enumerate(contents):
        yield FileUploadCommand(BytesIO(content) if isinstance(content, bytes) else content,
                                f"{stage}/{index}",
                                remote_temp_filename=f"{private}/{index}" if private else None)
    if private:
        yield StringCommand(f"rm -rf {q(private)}")


def _secret_upload(content: bytes, dest: str, user: str, group: str, swap: StateSwap | None = None):
    """
    Commands that write a secret file as `user`, never readable by another account: root stages
    the content in a directory of its own, `user` writes it 0600 under a new name beside `dest`
    and renames it into place (a rename never follows a symlink at `dest`; a full disk leaves no
    half file at `dest`). With `swap`, the rename happens only while `dest` is still the file the
    run read, under flock on `swap.lock` (opened by `user` too).
    """
    stage = stage_dir()
    yield from staged_uploads(stage, [content])
    step = (install_as_user(user, group, f"{stage}/0", dest, "600") if swap is None
            else swap_as_user(user, group, f"{stage}/0", dest, swap))
    yield staged_run(stage, [step])


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
    if state is not None and state.sha256 == sha256(content):
        if state.mode == "600" and (state.owner, state.group) == (user, group):
            host.noop(f"secret file {path} is up to date (0600, {user}:{group})")
            return
        if state.owner == user:  # its mode and group, by its owner
            yield StringCommand(f"{AS_USER}; {as_user(user, group, 'chmod', '600', path)} && "
                                f"{as_user(user, group, 'chgrp', group, path)}")
            return
        # another owner: written again by `user` (root never chowns in a directory of the user)
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
    Everything in the tree is done by `user` (docs/security.md): each file written by that
    account under a temporary name and renamed into place; secret entries never shown in a diff.
    A directory of another account is refused (root never chowns in the tree).

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

    mkdirs: list[tuple[str, str]] = []  # (mode, path), parents first
    uploads: list[TreeEntry] = []
    chmods: dict[str, list[str]] = {}
    chgrps: list[str] = []
    not_theirs: list[str] = []  # directories of another owner: root never chowns in the tree

    def want(path: str, mode: str) -> bool:
        """Its mode and group repaired (by `user`) if it is `user`'s; False when it belongs to
        another account."""
        current = state[path]
        if current.owner != user:
            return False
        full = posixpath.normpath(posixpath.join(root, path))
        if current.mode != mode:
            chmods.setdefault(mode, []).append(full)
        if current.group != group:
            chgrps.append(full)
        return True

    make_root = "." not in state
    if not make_root and not want(".", state["."].mode):  # the root keeps its mode
        not_theirs.append(root)
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
                mkdirs.append((entry.mode, full))
            elif not want(entry.path, entry.mode):
                not_theirs.append(full)
            continue
        # a file of another owner is written again, by `user`
        if (current is None or current.sha256 != sha256(entry.content or b"")
                or not want(entry.path, entry.mode)):
            uploads.append(entry)
    if not_theirs:
        yield fail_command(
            "; ".join(f"{p} belongs to {state[posixpath.relpath(p, root)].owner}, not {user}"
                      for p in not_theirs)
            + f". Nothing was written: the deploy never changes an owner inside the tree; run "
              f"`sudo chown {user}:{group} {' '.join(shlex.quote(p) for p in not_theirs)}` "
              "and run again")
        return

    needs_git = git_init and ".git" not in state

    if not (make_root or mkdirs or uploads or chmods or chgrps or needs_git):
        host.noop(f"tree {root}: all {len(entries)} managed paths up to date")
        return

    if host.state.config.DIFF:
        _print_diffs(root, uploads, state)

    if make_root:
        yield make_dirs(root, user, group, last_mode="755", private=False)
    # Everything in the tree is done by `user` (docs/security.md): each file is written by
    # that account under a new name beside its place, given its mode and renamed into place (a
    # full disk never leaves a half file; a rename replaces a path without writing through it).
    steps: list[str] = []
    if mkdirs:
        steps.append(as_user(user, group, "sh", "-c", _MKDIRS, "-",
                             *[part for mode, path in mkdirs for part in (mode, path)]))
    for mode, paths in sorted(chmods.items()):
        steps.append(as_user(user, group, "chmod", mode, *paths))
    if chgrps:
        steps.append(as_user(user, group, "chgrp", group, *chgrps))
    stage = stage_dir()
    for index, entry in enumerate(uploads):
        steps.append(install_as_user(user, group, f"{stage}/{index}",
                                     posixpath.join(root, entry.path), entry.mode))
    if needs_git:
        steps.append(as_user(user, group, "git", "-C", root, "init", "-q", "-b", "main"))
    if uploads:
        yield from staged_uploads(stage, [entry.content or b"" for entry in uploads])
        yield staged_run(stage, steps)
    else:
        yield StringCommand(f"{AS_USER}; " + " && ".join(steps))


# sh, as the user: mkdir -m MODE PATH for each pair of arguments, in order (parents first); one
# another run made meanwhile is fine
_MKDIRS = ('while [ $# -gt 1 ]; do mkdir -m "$1" -- "$2" 2>/dev/null || [ -d "$2" ] || '
           '{ echo "mnemos: cannot create $2" >&2; exit 1; }; shift 2; done')


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
    uploads: list[bytes | str] = []
    steps: list[str] = []
    stage = stage_dir()
    upload: bytes | str
    mtime: int | None
    # root's own files, in directories only root can write (checked after cd -P): staged in root's
    # stage directory, copied in under a new name, given mode and owner, renamed into place
    for path, content, mode in files:
        current = state.get(path.lstrip("/"))
        directory, name = posixpath.dirname(path), posixpath.basename(path)
        if isinstance(content, Path):
            local = os.stat(content)
            same = (current is not None and current.size == local.st_size
                    and current.mtime == int(local.st_mtime))
            upload, mtime = str(content), int(local.st_mtime)
        else:
            same = current is not None and current.sha256 == sha256(content)
            upload, mtime = content, None
        if not same:
            steps.append(f"mkdir -p {q(directory)}")
            steps.append(install_as_root(f"{stage}/{len(uploads)}", path, mode, mtime))
            uploads.append(upload)
        elif current.mode != mode or (current.owner, current.group) != ("root", "root"):
            steps.append(in_root_only_dir(directory, f"chmod {mode} {q(name)} && "
                                                     f"chown -h root:root {q(name)}"))
    if not steps:
        host.noop(f"{', '.join(p for p, _, _ in files)} up to date")
        return
    if uploads:
        yield from staged_uploads(stage, uploads)
        yield staged_run(stage, steps)
    else:
        yield StringCommand(" && ".join(steps))


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
    # by `user`: ~/.profile (or a symlink there) leads only where `user` can write
    if state == "missing":
        script = 'printf "%s\\n" "$2" > "$1" && chmod 644 "$1"'
    else:
        script = '[ -z "$(tail -c 1 "$1")" ] || echo >> "$1"; printf "%s\\n" "$2" >> "$1"'
    yield StringCommand(f"{AS_USER}; {as_user(user, group, 'sh', '-c', script, '-', path, line)}")
