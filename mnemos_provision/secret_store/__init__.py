"""
The secret state: the passwords the data volumes accept, kept on the host in a 0600 JSON file
outside the tree and git. `state` holds its logic (pure: what the host holds in, the run's secrets
out), `load` the one read of the host a run makes; the names below are `state`'s, re-exported.
"""

from __future__ import annotations

from mnemos_provision.secret_store.state import (
    ENV_VARIABLE,
    PREVIOUS_BACKUP_KEYS,
    ROTATING,
    Decision,
    HostFile,
    HostState,
    Secrets,
    StateError,
    VolumesNeeded,
    begin_rotation,
    complete,
    data_evidence,
    decide,
    generate,
    parse,
    parse_read,
    read_command,
    serialize,
    sha256,
    state_dir_problem,
)

__all__ = [
    "ENV_VARIABLE", "PREVIOUS_BACKUP_KEYS", "ROTATING", "Decision", "HostFile", "HostState",
    "Secrets", "StateError",
    "VolumesNeeded", "begin_rotation", "complete", "data_evidence", "decide", "generate", "parse",
    "parse_read", "read_command", "serialize", "sha256", "state_dir_problem",
]
