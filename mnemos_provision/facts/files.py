"""
Facts about files: TreeState (type, mode, owner and sha256 of many paths in one command),
LineInFile.

Every command is POSIX sh with tools a minimal Debian/Ubuntu has (coreutils, mawk, getent).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Literal, Sequence

from pyinfra.api import FactBase


@dataclass
class PathState:
    kind: str  # "directory" | "regular file" | other stat %F values
    mode: str  # octal, e.g. "644"
    owner: str
    group: str
    sha256: str | None = None
    size: int | None = None
    mtime: int | None = None  # seconds since the epoch
    links: int = 1  # hard links to the inode (more than one: the same file is also elsewhere)


class TreeState(FactBase[dict[str, PathState]]):
    """
    Type, mode, owner, size, mtime and (for `files`) sha256 of the given paths under `root`, in
    one command; `unhashed` files are only stat'ed (large files compared by size and mtime).
    Returns {relative path: PathState}; paths that do not exist are absent.
    """

    def requires_command(self, *args, **kwargs) -> str:
        return "sh"

    @staticmethod
    def default() -> dict[str, PathState]:
        return {}

    def command(self, root: str, dirs: list[str], files: list[str],
                unhashed: Sequence[str] = ()):
        quoted_dirs = " ".join(shlex.quote(p) for p in dirs)
        quoted_files = " ".join(shlex.quote(p) for p in files)
        quoted_unhashed = " ".join(shlex.quote(p) for p in unhashed)
        hashes = f"sha256sum -- {quoted_files} 2>/dev/null; " if files else ""
        return (
            f"cd {shlex.quote(root)} 2>/dev/null || exit 0; "
            "stat -c 'S|%F|%a|%U|%G|%s|%Y|%h|%n' -- "
            f"{quoted_dirs} {quoted_files} {quoted_unhashed} "
            f"2>/dev/null; {hashes}true"
        )

    def process(self, output):
        states: dict[str, PathState] = {}
        hashes: dict[str, str] = {}
        for line in output:
            if line.startswith("S|"):
                _, kind, mode, owner, group, size, mtime, links, name = line.split("|", 8)
                states[name] = PathState(kind, mode, owner, group, None, int(size), int(mtime),
                                         int(links))
            else:
                digest, _, name = line.partition("  ")
                hashes[name] = digest
        for name, digest in hashes.items():
            if name in states:
                states[name].sha256 = digest
        return states


LineState = Literal["present", "absent", "missing"]


class LineInFile(FactBase[LineState]):
    """Whether `path` has `line` as a whole line: "present", "absent", or "missing" (no file)."""

    def command(self, path: str, line: str):
        q = shlex.quote
        return (f"[ -f {q(path)} ] || {{ echo missing; exit 0; }}; "
                f"grep -qxF -- {q(line)} {q(path)} && echo present || echo absent")

    def process(self, output):
        return output[0] if output else "missing"
