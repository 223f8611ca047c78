"""
The pyinfra plumbing the operations and the host's HTTP transport share: a command run with the
operations' privileges, the connector arguments pyinfra gives a host, and the private directory an
upload goes through under sudo. It reads no settings: a low-level module operations, facts and
mnemos_provision/host_http.py import (the run's settings context is mnemos_provision/context.py).
"""

from __future__ import annotations

import secrets

from pyinfra import host
from pyinfra.api import OperationError, StringCommand
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS, pop_global_arguments
from pyinfra.connectors.ssh import SSHConnector


def run_as_operations(command: str) -> tuple[bool, list[str], list[str]]:
    """
    A command run with the privileges the run's operations and facts get (--sudo, _sudo_user, su,
    from the CLI, host data or config), its text and output never printed at any verbosity.
    `host.run_shell_command` alone gets none of them: under --sudo it would read as the
    connecting account what root wrote.
    """
    ok, output = host.run_shell_command(command, print_output=False, print_input=False,
                                        **connector_arguments(host))
    return ok, output.stdout_lines, output.stderr_lines


def connector_arguments(target) -> dict:
    """The connector arguments (_sudo, _sudo_user, _su_user, _sudo_password...) that pyinfra gives
    the operations and facts of `target` (a pyinfra Host), for a direct command or upload."""
    global_kwargs, _ = pop_global_arguments(target.state, target, {})
    return {k: v for k, v in global_kwargs.items() if k in CONNECTOR_ARGUMENT_KEYS}


def private_upload_dir(target) -> str | None:
    """For an SSH host whose operations run under sudo/su/doas: a new directory name (128 random
    bits) in /tmp for the login account's own uploads; None where uploads need none."""
    if not isinstance(getattr(target, "connector", None), SSHConnector):
        return None
    args = connector_arguments(target)
    if not any(args.get(k) for k in ("_sudo", "_su_user", "_doas", "_dzdo")):
        return None
    return f"/tmp/mnemos-upload-{secrets.token_hex(16)}"


def make_private_upload_dir(state, host, path: str) -> None:
    """mkdir -m 700 as the login account itself (no sudo): only it and root can enter. A failure
    is an OperationError naming the host and the cause."""
    ok, output = host.run_shell_command(StringCommand("mkdir", "-m", "700", path),
                                        print_output=False, print_input=False)
    if not ok:
        raise OperationError(f"cannot create {path} on {host.name}: "
                             f"{' '.join(output.stderr_lines)}")
