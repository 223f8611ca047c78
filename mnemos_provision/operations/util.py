"""
Helpers of the operations (as pyinfra's operations/util): `changes` for `force=`, directories
made for a user, failing with a message.
"""

from __future__ import annotations

import hashlib
import posixpath
import secrets
import shlex
from dataclasses import dataclass
from typing import Callable

from pyinfra.api import StringCommand


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def changes(op) -> Callable[[], bool]:
    """
    For `force=`: whether operation `op` (the result of an operation call) changes the host,
    asked when the operation that depends on it runs: `did_change()` once `op` has run,
    `will_change` while pyinfra plans (change detection, --dry). pyinfra's `op.will_change`
    passed directly is decided at plan time, at the cost of running `op`'s facts twice a run.
    """
    return lambda: op.did_change() if op.is_complete() else op.will_change


def staged_name(directory: str, dest: str) -> str:
    """An unpredictable name beside nothing anyone could have planted: 128 random bits."""
    return posixpath.join(directory, f".{posixpath.basename(dest)}.mnemos-{secrets.token_hex(16)}")


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


def fail_command(message: str) -> StringCommand:
    """A command that fails with `message` on stderr: pyinfra reports it as the operation's error
    for this host (no traceback), and the host's later operations do not run."""
    return StringCommand(f"echo {shlex.quote('mnemos: ' + message)} >&2; exit 1")
