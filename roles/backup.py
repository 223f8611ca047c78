"""Backups: the schedule of scripts/backup/backup-all.sh (rendered with the tree) in cron."""

from __future__ import annotations

import shlex

import pyinfra.operations.files
from pyinfra.api import deploy

from mnemos_provision.context import HostContext
from mnemos_provision.operations import files, server

CRON_FILE = "/etc/cron.d/mnemos-backup"


def _cron_word(path: str) -> str:
    """A path as one word of a cron command: quoted for sh, and each % escaped (cron turns an
    unescaped % into a newline, whatever the quotes)."""
    return shlex.quote(path).replace("%", "\\%")


def cron_entry(ctx: HostContext) -> str:
    # backup_schedule is five checked cron fields or an @ keyword, on one line (settings.py)
    s, root = ctx.settings, ctx.root
    script = _cron_word(f"{root}/scripts/backup/backup-all.sh")
    log = _cron_word(f"{root}/data/logs/backup.log")
    return (
        "# MNEMOS backups (backup_schedule); written by the provisioning project\n"
        "SHELL=/bin/sh\n"
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"{s.backup_schedule} {ctx.user} /bin/sh {script} >> {log} 2>&1\n"
    )


@deploy("Backups")
def backup(ctx: HostContext):
    if not ctx.settings.backup_enabled:
        pyinfra.operations.files.file(name="No backup schedule (backup_enabled is false)",
                                      path=CRON_FILE, present=False)
        return
    files.system_files(name="Schedule the backups in cron",
                       files=[(CRON_FILE, cron_entry(ctx).encode(), "644")])
    server.cron_daemon(name="Keep cron running", systemd=ctx.snap.systemd)
