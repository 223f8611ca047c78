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


# ---------------------------------------------------------------- writes (docs/security.md)
#
# The one rule: root never creates, opens for writing, chmods, chowns or renames a path in a
# directory another account can write. What belongs to mnemos_user (the tree, the secret state,
# Vault's keys file, its ~/.profile) is written BY mnemos_user: `as_user` runs the write with that
# account's uid and groups (setpriv, util-linux), so a symlink, a swapped file or a planted lock
# leads it only where that account could already write. Root's part is the content: uploaded into
# a directory of its own (`stage_dir`: mkdir -m 700 in /tmp, sticky, under 128 random bits), then
# opened by root's shell as the standard input of the account's process. Root's own files go to
# root-only directories, checked after `cd -P` (`ROOT_ONLY_CWD`), and are renamed into place there.

# sh: `as_user USER GROUP command...` runs the command as USER:GROUP (with USER's supplementary
# groups and environment: HOME, PATH) when the run is root; a run that is not root already is the
# account it runs as, and an empty USER means "the running account".
AS_USER = ('as_user() { u=$1; g=$2; shift 2; if [ -z "$u" ] || [ "$(id -u)" -ne 0 ]; then "$@"; '
           'else setpriv --reuid="$u" --regid="$g" --init-groups --reset-env -- "$@"; fi; }')
# sh, as the account: write standard input to $2 (created 0600: never readable by another account
# while it is written), give it mode $3, rename it to $1 (a rename replaces a symlink at $1, never
# follows it). $2 is a new name beside $1 (staged_name).
_INSTALL = ('umask 077; set -C; if cat > "$2" && chmod "$3" "$2" && mv -f "$2" "$1"; then exit 0; '
            'fi; rm -f "$2"; exit 1')
# sh, as root after `cd -P` into a directory: true when the current directory belongs to the
# running account and no other account can write to it (nothing in it can be swapped under us).
ROOT_ONLY_CWD = '[ "$(stat -c %u .)" = "$(id -u)" ] && [ $(( 0$(stat -c %a .) & 022 )) -eq 0 ]'


def stage_dir() -> str:
    """Where root stages content for one operation: a new directory of its own in /tmp (made
    `mkdir -m 700`, so a name planted in advance makes the operation fail, never write through
    it; /tmp's sticky bit keeps other accounts from renaming it). Not TMPDIR: the environment
    is not trusted."""
    return f"/tmp/mnemos-stage-{secrets.token_hex(16)}"


def as_user(user: str | None, group: str | None, *argv: str) -> str:
    """`argv` (quoted here) run as `user`:`group`; the command needs AS_USER defined first."""
    q = shlex.quote
    return f"as_user {q(user or '')} {q(group or '')} " + " ".join(q(a) for a in argv)


def install_as_user(user: str | None, group: str | None, source: str, dest: str,
                    mode: str) -> str:
    """Shell (needs AS_USER) that puts root's staged file `source` at `dest` with `mode`, written
    by `user`: the file is created by that account under a new name beside `dest`, 0600 until its
    mode is set, then renamed into place. Root only opens `source`, which is its own."""
    staged = staged_name(posixpath.dirname(dest), dest)
    return (as_user(user, group, "sh", "-c", _INSTALL, "-", dest, staged, mode)
            + f" < {shlex.quote(source)}")


def swap_as_user(user: str, group: str, source: str, dest: str, swap: StateSwap) -> str:
    """
    install_as_user under a compare-and-swap (StateSwap): as `user`, the staged copy is written,
    flock(1) taken on `swap.lock`, `dest` compared with `swap.expected`, then the rename. The lock
    is opened by `user` too: a lock file planted as a symlink leads only where `user` can write.
    """
    q = shlex.quote
    staged = staged_name(posixpath.dirname(dest), dest)
    keep = 'mv -f "$d" "$d.damaged-$(date -u +%Y%m%dT%H%M%SZ)" && ' if swap.keep_damaged else ""
    script = (
        f"s={q(staged)}; d={q(dest)}; l={q(swap.lock)}; umask 077; set -C; "
        'if ! cat > "$s"; then rm -f "$s"; exit 1; fi; '
        'exec 9>>"$l" || { rm -f "$s"; exit 1; }; '
        f'if ! flock -w {swap.wait} 9; then rm -f "$s"; echo "mnemos: another run has held $l for '
        f'{swap.wait} s (last holder: $(head -c 200 "$l")); try again once it has finished" >&2; '
        "exit 1; fi; "
        'if [ -e "$d" ]; then cur=$(sha256sum < "$d" | cut -c1-64); else cur=absent; fi; '
        f'if [ "$cur" != {q(swap.expected)} ]; then rm -f "$s"; echo "mnemos: $d was written by '
        'another run after this run read it (that run: $(head -c 200 "$l")); this run stopped '
        'before writing anything from it: run again" >&2; exit 1; fi; '
        f'if {keep}mv -f "$s" "$d"; then printf \'%s\\n\' {q(swap.holder)} >| "$l"; exit 0; fi; '
        'rm -f "$s"; exit 1'
    )
    return as_user(user, group, "sh", "-c", script) + f" < {q(source)}"


def in_root_only_dir(directory: str, step: str) -> str:
    """Shell that runs `step` (names relative to `directory`) inside `directory`, entered with
    cd -P and refused unless only the running account (root) can write it: a root-owned
    file is only ever written where no other account can swap a name."""
    q = shlex.quote
    refusal = q(f"mnemos: {directory} ")
    return (f"( cd -P -- {q(directory)} && {{ {ROOT_ONLY_CWD} || {{ echo {refusal}"
            f"\"is writable by another account than $(id -un); nothing was written there\" >&2; "
            f"exit 1; }}; }} && {step} )")


def install_as_root(source: str, dest: str, mode: str, mtime: int | None = None) -> str:
    """Shell that puts root's staged file `source` at `dest` (root:root, `mode`, and `mtime`
    when given) through a new name beside it, renamed into place, inside `dest`'s directory
    checked root-only (in_root_only_dir)."""
    q = shlex.quote
    name = posixpath.basename(dest)
    staged = posixpath.basename(staged_name(".", dest))
    touch = f" && touch -m -d @{mtime} {q(staged)}" if mtime is not None else ""
    return in_root_only_dir(posixpath.dirname(dest), (
        f"{{ cp {q(source)} {q(staged)} && chmod {mode} {q(staged)} && chown root:root {q(staged)}"
        f"{touch} && mv -f {q(staged)} {q(name)} || {{ rm -f {q(staged)}; exit 1; }}; }}"))


def staged_run(stage: str, steps: list[str]) -> StringCommand:
    """One command: AS_USER, then `steps` in order (the first failure stops them), then root's
    stage directory removed whatever happened."""
    return StringCommand(f"{AS_USER}; ( " + " && ".join(steps) + f" ); rc=$?; "
                         f"rm -rf {shlex.quote(stage)}; exit $rc")


def make_dirs_script(path: str, user: str, group: str, last_mode: str, private: bool) -> str:
    """The shell of make_dirs (needs AS_USER)."""
    q = shlex.quote
    check = (
        'if [ -L "$last" ] || [ ! -d "$last" ] || '
        f'[ "$(stat -c %U "$last")" != {q(user)} ] || '
        '[ $(( 0$(stat -c %a "$last") & 022 )) -ne 0 ]; then '
        'echo "mnemos: $last appeared meanwhile and is not a directory of '
        f'{user} that only {user} can write; nothing was written" >&2; exit 1; fi'
    ) if private else "true"
    return (
        f"d={q(path)}; last=$d; set --; "
        'while [ ! -e "$d" ] && [ ! -L "$d" ]; do set -- "$d" "$@"; d=$(dirname "$d"); done; '
        f'for d; do if [ "$d" = "$last" ]; then m={last_mode}; else m=755; fi; '
        'p=$(dirname "$d"); n=$(basename "$d"); '
        # a parent only root can write (/srv, /opt): root makes the directory there, in the
        # parent it entered with cd -P and checked, and gives it to the user before anyone can
        # reach it; any other parent: the user makes it
        f'if ( cd -P -- "$p" && {ROOT_ONLY_CWD} ); then '
        f'( cd -P -- "$p" && {ROOT_ONLY_CWD} && if mkdir -m $m -- "$n" 2>/dev/null; then '
        f'chown -h {q(user)}:{q(group)} -- "$n"; else [ -d "$n" ]; fi ) || exit 1; '
        f'else {as_user(user, group, "mkdir", "-m")} $m -- "$d" 2>/dev/null || [ -d "$d" ] || '
        f'{{ echo "mnemos: {user} cannot create $d" >&2; exit 1; }}; fi; done; {check}')


def make_dirs(path: str, user: str, group: str, last_mode: str, private: bool) -> StringCommand:
    """
    Each missing directory down to `path`, top down, made for `user` (parents 0755, `path` itself
    `last_mode`): by `user` itself where the parent is writable by others than root (a home),
    by root then given to `user` where only root can write the parent (/srv). An existing
    directory is never changed. With `private`, `path` (also one another run made meanwhile)
    must end up a directory of `user` that no other account can write.
    """
    return StringCommand(f"{AS_USER}; " + make_dirs_script(path, user, group, last_mode, private))


def fail_command(message: str) -> StringCommand:
    """A command that fails with `message` on stderr: pyinfra reports it as the operation's error
    for this host (no traceback), and the host's later operations do not run."""
    return StringCommand(f"echo {shlex.quote('mnemos: ' + message)} >&2; exit 1")
