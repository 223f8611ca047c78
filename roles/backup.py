"""Backups: the schedule of scripts/backup/backup-all.sh (rendered with the tree) in cron."""

from __future__ import annotations

import pyinfra.operations.files
from pyinfra.api import deploy

from mnemos_provision.context import HostContext
from mnemos_provision.operations import files, server

CRON_FILE = "/etc/cron.d/mnemos-backup"


def cron_entry(ctx: HostContext) -> str:
    s, root = ctx.settings, ctx.root
    return (
        "# MNEMOS backups (backup_schedule); written by the provisioning project\n"
        "SHELL=/bin/sh\n"
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"{s.backup_schedule} {ctx.user} /bin/sh {root}/scripts/backup/backup-all.sh "
        f">> {root}/data/logs/backup.log 2>&1\n"
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
