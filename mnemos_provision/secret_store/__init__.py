"""
The secret state: the passwords the data volumes accept, kept on the host in a 0600 JSON file
outside the tree and git (secrets_state_path), read back on every run and never rotated.

What a run does with it (README: Secrets):
- The state holds every secret: it is used as it is. A value of the wrong type stops the run.
- The state is missing, empty, damaged (not a JSON object) or lacks a secret: each secret that .env
  still holds is recovered from .env; a secret that neither holds is generated only where no data
  uses one yet (its volume, backup archives); otherwise the run stops before any change, naming the
  file, the secret and how to restore it. A damaged file is kept beside the new one
  (`<state>.damaged-<time>`), never overwritten.
- Supplied secrets (secrets_file, `secrets`) are used on a new install; one that differs from the
  value existing data accepts stops the run: rotation is never implicit.
- The state is written by compare-and-swap under flock(1) on `<state>.lock`: only if it is still
  the file this run read. A run that lost a race with another run stops before writing .env.
"""

from __future__ import annotations

import base64
import hashlib
import json
import posixpath
import secrets as csprng
import shlex
import string
from dataclasses import dataclass, field

from mnemos_provision import dotenv
from mnemos_provision.dotenv import SECRET_LENGTHS

_ALPHANUMERIC = string.ascii_letters + string.digits

# The compose volumes whose data only opens with a secret: losing the secret locks them out.
# Redis and JWT keep nothing that depends on their secret (a new one works with the old data).
DATA_VOLUMES = {
    "POSTGRES_PASSWORD": ("postgres-data",),  # the role's password is stored in the cluster
    "MINIO_ROOT_PASSWORD": ("minio-data",),  # MinIO encrypts its IAM data with the root credentials
    "MINIO_APP_SECRET_KEY": ("minio-data",),  # the application user is stored in MinIO's IAM
    "GRAFANA_ADMIN_PASSWORD": ("grafana-data",),  # set once, at the first start, in grafana.db
    "VAULT_TOKEN": ("vault-data",),  # a token created in Vault's storage
}
# The .env variable that holds each secret (a secret whose variable has another name).
ENV_VARIABLE = {name: name for name in SECRET_LENGTHS}
for _var in dotenv.ALL_VARS:
    _refs = dotenv.references(_var.default)
    if _var.secret and len(_refs) == 1 and _var.default == "{" + _refs[0] + "}":
        ENV_VARIABLE[_refs[0]] = _var.name  # e.g. MINIO_APP_SECRET_KEY is AWS_SECRET_ACCESS_KEY


class Secrets(dict):
    """A dict of secrets whose repr never shows the values (tracebacks, logs, test reports)."""

    def __repr__(self) -> str:
        return f"<{len(self)} secrets: {', '.join(sorted(self))}>"

    __str__ = __repr__


class VolumesNeeded(Exception):
    """The decision needs the project's volumes, which this read did not list."""


class StateError(Exception):
    """The state cannot be used or recovered: the run stops before any change."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def generate(name: str) -> str:
    """A new value for secret `name`, with the length documented in dotenv.SECRET_LENGTHS."""
    length = SECRET_LENGTHS[name]
    if name == "VAULT_TOKEN":  # a custom token ID: letters and digits, no "hvs." prefix
        return "mnemos" + "".join(csprng.choice(_ALPHANUMERIC) for _ in range(length - 6))
    if name == "JWT_SECRET_KEY":
        return csprng.token_hex(length // 2)
    return "".join(csprng.choice(_ALPHANUMERIC) for _ in range(length))


def complete(stored: dict[str, str], supplied: dict[str, str]) -> Secrets:
    """Stored values, overridden by supplied ones, plus a generated value for each one missing
    (a new install: nothing to recover, no data to protect)."""
    values = Secrets(stored)
    values.update(supplied)
    for name in SECRET_LENGTHS:
        if not values.get(name):
            values[name] = generate(name)
    return values


def parse(text: bytes | None) -> Secrets:
    """The state file's secrets; ValueError for a file that is not a JSON object of strings."""
    if not text or not text.strip():
        return Secrets()
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not valid JSON ({type(exc).__name__} at {_position(exc)})") from None
    if not isinstance(data, dict):
        raise ValueError("the secret state file does not hold a JSON object")
    wrong = sorted(str(k) for k, v in data.items() if not isinstance(v, str) or not v)
    if wrong:
        raise TypeError(", ".join(f"{name} is not a non-empty string" for name in wrong))
    return Secrets(data)


def _position(exc: Exception) -> str:
    # json's messages name a line and column, never the text: keep only that
    lineno, colno = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    return f"line {lineno} column {colno}" if lineno else "its start"


def serialize(values: dict[str, str]) -> bytes:
    return (json.dumps(values, indent=2, sort_keys=True) + "\n").encode()


def sha256(data: bytes | None) -> str:
    """The digest the state's compare-and-swap expects: "absent" for no file."""
    return "absent" if data is None else hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- what the host holds

@dataclass
class HostFile:
    kind: str  # file | missing | directory | symlink | other | unreadable
    data: bytes | None = None


@dataclass
class HostState:
    """Everything a run needs to decide the secrets, read in one command."""
    state: HostFile
    env: HostFile
    state_dir: str  # "missing" or "<kind>|<mode>|<owner>" of the state file's directory
    backups: int = 0  # encrypted backup archives in the tree
    volumes: set | None = None  # the project's volumes (None: not asked for)
    volumes_known: bool = True  # False: asked for, but Docker could not tell
    # other secret files read by the same command (read_command's `also`), by name
    also: dict[str, HostFile] = field(default_factory=dict)


def read_command(state: str, env: str, backups: str, project: str, volumes: bool = False,
                 also: dict[str, str] | None = None, user: str | None = None,
                 group: str | None = None) -> str:
    """One POSIX sh command: both files (base64), the state directory, backups, the files of
    `also` ({name: path}: other secret files the run reads, e.g. Vault's keys file) and, with
    `volumes` (only when a secret is missing: it asks the engine), the project's volumes.
    The files are opened by `user` (their owner, in directories of theirs): a file swapped for a
    symlink between the check and the read is read with that account's rights, never root's
    (docs/security-writes.md)."""
    from mnemos_provision.operations.util import AS_USER, as_user
    q = shlex.quote
    others = "".join(f"part also:{name} {q(path)}\n" for name, path in (also or {}).items())
    readable = as_user(user, group, "test", "-r")
    read = as_user(user, group, "sh", "-c", 'base64 < "$1"', "-")
    return f"""
{AS_USER}
part() {{
  printf '== %s ' "$1"
  if [ -L "$2" ]; then echo symlink
  elif [ -d "$2" ]; then echo directory
  elif [ -f "$2" ]; then
    if {readable} "$2"; then echo file; {read} "$2" || exit 1; else echo unreadable; fi
  elif [ -e "$2" ]; then echo other
  else echo missing; fi
}}
part state {q(state)}; part env {q(env)}
{others}printf '== state_dir '; stat -c '%F|%a|%U' -- {q(posixpath.dirname(state))} 2>/dev/null \\
  || echo missing
printf '== backups '; ls -- {q(backups)} 2>/dev/null | grep -c '\\.gpg$' || true
{_VOLUMES.format(project=q(project), prefix=q(project + "_")) if volumes else ""}"""


_VOLUMES = """
if docker version --format x >/dev/null 2>&1; then
  echo '== volumes docker'
  docker volume ls -q --filter label=com.docker.compose.project={project}
elif [ -r /var/lib/docker/volumes ]; then
  echo '== volumes directory'; ls /var/lib/docker/volumes | grep '^'{prefix} || true
else
  echo '== volumes unknown'
fi
"""


def parse_read(lines: list[str]) -> HostState:
    sections: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in lines:
        if line.startswith("== "):
            name, _, rest = line[3:].partition(" ")
            current = name
            sections[name] = (rest.strip(), [])
        elif current:
            sections[current][1].append(line)

    def host_file(name: str) -> HostFile:
        kind, body = sections.get(name, ("missing", []))
        data = base64.b64decode("".join(body)) if kind == "file" else None
        return HostFile(kind, data)

    volumes_how, volume_lines = sections.get("volumes", (None, []))
    backups = sections.get("backups", ("0", []))[0]
    return HostState(
        state=host_file("state"), env=host_file("env"),
        state_dir=sections.get("state_dir", ("missing", []))[0] or "missing",
        backups=int(backups) if backups.isdigit() else 0,
        volumes=None if volumes_how is None else {v.strip() for v in volume_lines if v.strip()},
        volumes_known=volumes_how in (None, "docker", "directory"),
        also={name[len("also:"):]: host_file(name) for name in sections
              if name.startswith("also:")},
    )


# ---------------------------------------------------------------- the decision

@dataclass
class Decision:
    values: Secrets
    expected: str  # sha256 of the file this run read ("absent"): the compare-and-swap's condition
    damaged: bool  # the file read is kept aside before the new one replaces it
    notes: list[str]  # one line each, names only, for the user
    state_dir_missing: bool = False  # the directory of the state file is created by the write


def data_evidence(name: str, host_state: HostState, project: str) -> str | None:
    """Why existing data depends on secret `name` (None: no data uses it yet)."""
    if host_state.volumes is None and DATA_VOLUMES.get(name):
        raise VolumesNeeded(name)
    for volume in DATA_VOLUMES.get(name, ()):
        full = f"{project}_{volume}"
        if full in (host_state.volumes or set()):  # not None here: checked above
            return f"the volume {full} holds data that only this secret opens"
    if name == "BACKUP_ENCRYPTION_KEY" and host_state.backups:
        return f"{host_state.backups} encrypted backup archive(s) open only with this key"
    return None


def decide(host_state: HostState, supplied: dict[str, str], *, state_path: str, env_path: str,
           project: str) -> Decision:
    """The run's secrets from what the host holds; StateError when the run must stop,
    VolumesNeeded when it must know the project's volumes (read them, decide again)."""
    problems: list[str] = []
    kind = host_state.state.kind
    if kind in ("directory", "symlink", "other"):
        raise StateError([f"{state_path} is a {kind}, not a file: nothing is written through or "
                          "over it; move it away (and restore the state file from a backup)"])
    if kind == "unreadable":
        raise StateError([f"{state_path} cannot be read by this run (it reads it as mnemos_user): "
                          "fix its owner (sudo chown <mnemos_user>: <file>), or run with --sudo"])
    raw = host_state.state.data
    how = "missing" if raw is None else "empty" if not raw.strip() else None
    damaged = False
    try:
        stored = parse(raw)
    except TypeError as exc:
        raise StateError([f"{state_path}: {exc}; a value is never converted: put the value back "
                          "as a JSON string, or restore the file from a backup"]) from None
    except ValueError as exc:
        stored, damaged, how = Secrets(), True, f"damaged ({exc})"

    env_values: dict[str, str] = {}
    if host_state.env.kind == "file" and host_state.env.data is not None:
        env_values = dotenv.parse(host_state.env.data.decode(errors="replace"))

    values = Secrets()
    recovered, generated = [], []
    for name in SECRET_LENGTHS:
        current = stored.get(name)
        from_env = env_values.get(ENV_VARIABLE[name]) or None
        source = state_path
        if current is None and from_env:
            current, source = from_env, env_path
            recovered.append(name)
        wanted = supplied.get(name)
        if wanted is not None:
            if current is not None and wanted != current and (
                    evidence := data_evidence(name, host_state, project)):
                problems.append(
                    f"the supplied {name} differs from the one in {source}, and {evidence}: "
                    "rotation is never implicit. Change it in the service first (e.g. ALTER ROLE "
                    f"for PostgreSQL), then put the new value in {state_path}; or supply the old "
                    "one")
                continue
            values[name] = wanted
        elif current is not None:
            values[name] = current
        elif evidence := data_evidence(name, host_state, project):
            if how is None:
                how = "incomplete"
            problems.append(
                f"{name} is in neither {state_path} ({how}) nor {env_path}, and {evidence}: a new "
                f"value would lock it out. Restore {state_path} (or {env_path}) from a backup and "
                "run again; nothing on the host was changed")
        else:
            values[name] = generate(name)
            generated.append(name)
    if problems:
        raise StateError(problems)

    notes = []
    new_install = raw is None and host_state.env.kind == "missing"
    if not new_install and (how or recovered or generated):
        parts = [f"secret state {state_path} was {how or 'incomplete'}"]
        if recovered:
            parts.append(f"recovered {', '.join(recovered)} from {env_path}")
        if generated:
            unseen = "" if host_state.volumes_known else ", Docker's volumes could not be listed"
            parts.append(f"generated {', '.join(generated)} (no data uses them yet{unseen})")
        if damaged:
            parts.append(f"the damaged file is kept as {state_path}.damaged-<time>")
        notes.append("; ".join(parts) + "; the state is written back")
    return Decision(values=values, expected=sha256(raw), damaged=damaged,
                    notes=notes, state_dir_missing=host_state.state_dir == "missing")


def state_dir_problem(state_dir: str, path: str, user: str) -> str | None:
    """Why the existing directory of the state file cannot hold it (None: it can, or is missing)."""
    if state_dir == "missing":
        return None
    kind, mode, owner = (state_dir.split("|") + ["", "", ""])[:3]
    directory = posixpath.dirname(path)
    if kind != "directory":
        return f"{directory} is a {kind}, not a directory; move it away"
    if int(mode or "0", 8) & 0o022:
        return (f"{directory} has mode {mode}: other accounts can write into it and replace the "
                f"secret state; run `chmod 700 {directory}` (the deploy never changes the mode "
                "of a directory it did not create)")
    if owner != user:
        return (f"{directory} belongs to {owner}, not to {user}: run `sudo chown {user}: "
                f"{directory}`, or choose another secrets_state_path")
    return None

