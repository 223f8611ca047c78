"""
Server: `server.cron_daemon` (cron kept running) and `server.group_member` (a user in a
supplementary group).
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand

from mnemos_provision.fact_batch import DeclaredFacts, batched_operation
from mnemos_provision.facts.server import ProcessRunning, UserGroups


@batched_operation(lambda **_: {"running": (ProcessRunning, {"comm": "cron"})})
def cron_daemon(facts: DeclaredFacts, systemd: bool):
    """
    Keep the cron daemon running so that scheduled backups happen: under systemd it is enabled and
    started; without systemd (WSL's default) it is started detached.

    + systemd: whether the host runs systemd

    **Example:**

    .. code:: python

        server.cron_daemon(systemd=True)
    """
    if facts["running"]:
        host.noop("cron is running")
        return
    if systemd:
        yield StringCommand("systemctl enable --now cron.service")
    else:
        yield StringCommand("cron")  # Debian/Ubuntu's cron daemonizes itself


@batched_operation(lambda user, **_: {"groups": (UserGroups, {"user": user})})
def group_member(facts: DeclaredFacts, user: str, group: str):
    """
    Add `user` to the supplementary `group` (e.g. docker) when it is not a member.

    + user: account name
    + group: group name (must exist when the operation executes)

    **Example:**

    .. code:: python

        server.group_member(user="dev", group="docker")
    """
    if group in facts["groups"]:
        host.noop(f"{user} is in the {group} group")
        return
    yield StringCommand("usermod", "-a", "-G", QuoteString(group), QuoteString(user))
