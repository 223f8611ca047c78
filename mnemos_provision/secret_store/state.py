"""
The secret state: the passwords the data volumes accept, kept on the host in a 0600 JSON file
outside the tree and git (secrets_state_path), read back on every run and never rotated
implicitly (a rotation is deploys/rotate.py's, docs/rotation.md: the state records it in progress,
old and new value, until the service holds the new one).

What a run does with it (README: Secrets):
- The state holds every secret: it is used as it is. A value of the wrong type stops the run.
- The state is missing, empty, damaged (not a JSON object) or lacks a secret: each secret that .env
  still holds is recovered from .env; a secret that neither holds is generated only where no data
  uses one yet (its volume; backup archives, in every directory backups are written to); otherwise
  the run stops before any change, naming the file, the secret and how to restore it. A damaged
  file is kept beside the new one (`<state>.damaged-<time>`), never overwritten.
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

from mnemos_provision import dotenv, stack
from mnemos_provision.dotenv import SECRET_LENGTHS
from mnemos_provision.operations.util import AS_USER, as_user
from mnemos_provision.secret_values import Secrets

_ALPHANUMERIC = string.ascii_letters + string.digits

# The compose volumes whose data only opens with a secret (losing the secret locks them out) are
# the registry's: each service's data_secrets (stack.data_volumes()). Redis and JWT keep nothing
# that depends on their secret (a new one works with the old data).
# The .env variable that holds each secret (a secret whose variable has another name).
ENV_VARIABLE = {name: name for name in SECRET_LENGTHS}
for _var in dotenv.ALL_VARS:
    _refs = dotenv.references(_var.default)
    if _var.secret and len(_refs) == 1 and _var.default == "{" + _refs[0] + "}":
        ENV_VARIABLE[_refs[0]] = _var.name  # e.g. MINIO_APP_SECRET_KEY is AWS_SECRET_ACCESS_KEY


# A rotation in progress (deploys/rotate.py, docs/rotation.md): the state holds the old value under
# the secret's name and the new one under ROTATING + name, until the service holds the new value;
# the run that sees it sets the new value in the service again, then writes the state without it.
ROTATING = "rotating:"
# The backup keys a rotation of BACKUP_ENCRYPTION_KEY replaced, newest first, one per line, under
# PREVIOUS_BACKUP_KEYS: kept for the archives encrypted with them (rendered into the tree's
# keyring file, which restore-all.sh tries after .env's key; docs/backups.md). Never dropped.
PREVIOUS_BACKUP_KEYS = "previous:BACKUP_ENCRYPTION_KEY"


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
    backups: int = 0  # encrypted backup archives, in every directory backups are written to
    backup_dirs: list = field(default_factory=list)  # the directories that hold them
    volumes: set | None = None  # the project's volumes (None: not asked for)
    volumes_known: bool = True  # False: asked for, but Docker could not tell
    # other secret files read by the same command (read_command's `also`), by name
    also: dict[str, HostFile] = field(default_factory=dict)


def read_command(state: str, env: str, backups: list[str], project: str, volumes: bool = False,
                 also: dict[str, str] | None = None, user: str | None = None,
                 group: str | None = None) -> str:
    """One POSIX sh command: both files (base64), the state directory, the encrypted archives
    in each directory of `backups` (every place backups are written), the files of `also`
    ({name: path}: other secret files the run reads, e.g. Vault's keys file) and, with `volumes`
    (only when a secret is missing: it asks the engine), the project's volumes.
    The files are opened by `user` (their owner, in directories of theirs): a file swapped for a
    symlink between the check and the read is read with that account's rights, never root's
    (docs/security.md)."""
    q = shlex.quote
    dirs = " ".join(q(d) for d in dict.fromkeys(backups))
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
total=0 found=''
for d in {dirs}; do
  n=$(ls -- "$d" 2>/dev/null | grep -c '\\.gpg$')
  total=$((total + n)); [ "$n" -eq 0 ] || found="$found$n $d
"
done
printf '== backups %s\\n%s' "$total" "$found"
{_VOLUMES.format(project=q(project), prefix=q(project + "_")) if volumes else ""}"""


_VOLUMES = """
if v=$(docker volume ls -q --filter label=com.docker.compose.project={project} 2>/dev/null); then
  echo '== volumes docker'
  [ -z "$v" ] || printf '%s\\n' "$v"
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
    backups, where = sections.get("backups", ("0", []))
    return HostState(
        state=host_file("state"), env=host_file("env"),
        state_dir=sections.get("state_dir", ("missing", []))[0] or "missing",
        backups=int(backups) if backups.isdigit() else 0,
        backup_dirs=[line.partition(" ")[2] for line in where if line.strip()],
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
    # rotations in progress: secret -> (old value, new value); `values` holds the new one, which
    # the rotation role sets in the service before the tree role writes the state
    rotating: dict = field(default_factory=dict)
    # the run sets the new values in the services (the rotation role planned it): only then do
    # the roles write, render and send them; otherwise they keep the old ones and the record
    applied: bool = False
    # earlier BACKUP_ENCRYPTION_KEYs, newest first (the state's PREVIOUS_BACKUP_KEYS)
    previous_backup_keys: list = field(default_factory=list)

    def backup_keyring(self) -> list[str]:
        """The earlier backup keys the tree's keyring file holds, newest first: with a rotation of
        BACKUP_ENCRYPTION_KEY this run applies, the key it replaces comes first."""
        keys = list(self.previous_backup_keys)
        if self.applied and "BACKUP_ENCRYPTION_KEY" in self.rotating:
            keys.insert(0, self.rotating["BACKUP_ENCRYPTION_KEY"][0])
        current = self.effective().get("BACKUP_ENCRYPTION_KEY")
        return [k for k in dict.fromkeys(keys) if k != current]

    def _kept(self) -> dict[str, str]:
        keys = self.backup_keyring()
        return {PREVIOUS_BACKUP_KEYS: "\n".join(keys)} if keys else {}

    def effective(self) -> Secrets:
        """The values this run's roles write, render and send: the new ones of the rotations in
        progress only once the run sets them in the services (`applied`)."""
        if self.applied or not self.rotating:
            return self.values
        return Secrets({**self.values, **{n: old for n, (old, _) in self.rotating.items()}})

    def state_file(self) -> bytes:
        """The state file this run writes: the record kept while the rotation is not applied."""
        if self.applied or not self.rotating:
            return serialize({**self.values, **self._kept()})
        return self.in_progress()

    def in_progress(self) -> bytes:
        """The state file that records the rotations in progress (old values, new ones beside)."""
        recorded = {**self.values, **self._kept()}
        for name, (old, new) in self.rotating.items():
            recorded[name] = old
            recorded[ROTATING + name] = new
        return serialize(recorded)


def data_evidence(name: str, host_state: HostState, project: str) -> str | None:
    """Why existing data depends on secret `name` (None: no data uses it yet)."""
    volumes = stack.data_volumes().get(name, ())
    if host_state.volumes is None and volumes:
        raise VolumesNeeded(name)
    for volume in volumes:
        full = f"{project}_{volume}"
        if full in (host_state.volumes or set()):  # not None here: checked above
            return f"the volume {full} holds data that only this secret opens"
    if name == "BACKUP_ENCRYPTION_KEY" and host_state.backups:
        where = f" in {', '.join(host_state.backup_dirs)}" if host_state.backup_dirs else ""
        return f"{host_state.backups} encrypted backup archive(s){where} open only with this key"
    return None


def decide(host_state: HostState, supplied: dict[str, str], *, state_path: str, env_path: str,
           project: str) -> Decision:
    """The run's secrets from what the host holds; StateError when the run must stop,
    VolumesNeeded when it must know the project's volumes (read them, decide again)."""
    read = read_state(host_state.state, state_path)
    env_values = env_secrets(host_state.env)
    values = Secrets()
    problems: list[str] = []
    recovered, generated = [], []
    for name in SECRET_LENGTHS:
        choice = choose(name, read, env_values, supplied, host_state, project,
                        state_path=state_path, env_path=env_path)
        if choice.problem:
            problems.append(choice.problem)
            continue
        values[name] = choice.value
        if choice.recovered:
            recovered.append(name)
        if choice.generated:
            generated.append(name)
    rotating, rotation_problems = rotations_in(read.stored, values, state_path)
    problems += rotation_problems
    previous, previous_problems = previous_keys_in(read.stored, state_path)
    problems += previous_problems
    if not previous:  # a state that lost them: the tree's keyring still holds them
        previous = keyring_keys(host_state.also.get("backup_keys"))
    if problems:
        raise StateError(problems)
    for name, (_, new) in rotating.items():
        values[name] = new  # the rotation role sets it in the service before the state is written
    raw = host_state.state.data
    new_install = raw is None and host_state.env.kind == "missing"
    notes = [] if new_install else notes_for(read, recovered, generated, host_state.volumes_known,
                                             state_path=state_path, env_path=env_path)
    return Decision(values=values, expected=sha256(raw), damaged=read.damaged,
                    notes=notes, state_dir_missing=host_state.state_dir == "missing",
                    rotating=rotating, previous_backup_keys=previous)


def rotations_in(stored: dict[str, str], values: dict[str, str], state_path: str
                 ) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """The rotations in progress the state records ({secret: (old, new)}), and its problems."""
    rotating, problems = {}, []
    for key, new in sorted(stored.items()):
        if not key.startswith(ROTATING):
            continue
        name = key[len(ROTATING):]
        if name not in SECRET_LENGTHS:
            problems.append(f"{state_path}: {key} records the rotation of an unknown secret; "
                            "remove that line (nothing else names it) and run again")
        elif name in values:
            rotating[name] = (values[name], new)
    return rotating, problems


def previous_keys_in(stored: dict[str, str], state_path: str) -> tuple[list[str], list[str]]:
    """The earlier backup keys the state keeps (PREVIOUS_BACKUP_KEYS), and its problems: a
    `previous:` entry of another secret is not the deploy's."""
    problems = [f"{state_path}: {key} is not an entry the deploy writes (only "
                f"{PREVIOUS_BACKUP_KEYS} keeps earlier values); move it out of the file and run "
                "again" for key in sorted(stored)
                if key.startswith("previous:") and key != PREVIOUS_BACKUP_KEYS]
    keys = [k for k in stored.get(PREVIOUS_BACKUP_KEYS, "").split("\n") if k.strip()]
    return keys, problems


def keyring_keys(keyring: HostFile | None) -> list[str]:
    """The earlier backup keys of the tree's keyring file (.backup-keys: one a line, # comments)
    as the host holds it; none when it is not a file."""
    if keyring is None or keyring.kind != "file" or not keyring.data:
        return []
    lines = keyring.data.decode(errors="replace").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def begin_rotation(decision: Decision, names: list[str]) -> Decision:
    """The decision of a run that rotates `names` (secret names): each gets a new value, unless
    a rotation of it is already in progress (its new value is kept: the earlier run may have set
    it in the service). `expected` becomes the digest of the state that records them
    (Decision.in_progress), which the run writes first."""
    rotating = dict(decision.rotating)
    values = Secrets(decision.values)
    for name in names:
        if name not in rotating:
            rotating[name] = (values[name], generate(name))
            values[name] = rotating[name][1]
    # the write that records them keeps a damaged file aside; the state after it is whole
    started = Decision(values=values, expected=decision.expected, damaged=False,
                       notes=decision.notes, state_dir_missing=decision.state_dir_missing,
                       rotating=rotating, previous_backup_keys=decision.previous_backup_keys)
    started.expected = sha256(started.in_progress())
    return started


@dataclass
class StateRead:
    """The state file as this run read it."""
    stored: Secrets
    how: str | None  # None: whole; else missing, empty or damaged (why)
    damaged: bool  # not a JSON object: kept aside before the new one replaces it


def read_state(state: HostFile, state_path: str) -> StateRead:
    """The secrets of the state file; StateError for one that is not a file, cannot be read or
    holds a value of the wrong type (never converted)."""
    if state.kind in ("directory", "symlink", "other"):
        raise StateError([f"{state_path} is a {state.kind}, not a file: nothing is written "
                          "through or over it; move it away (and restore the state file from a "
                          "backup)"])
    if state.kind == "unreadable":
        raise StateError([f"{state_path} cannot be read by this run (it reads it as mnemos_user): "
                          "fix its owner (sudo chown <mnemos_user>: <file>), or run with --sudo"])
    raw = state.data
    how = "missing" if raw is None else "empty" if not raw.strip() else None
    try:
        return StateRead(parse(raw), how, False)
    except TypeError as exc:
        raise StateError([f"{state_path}: {exc}; a value is never converted: put the value back "
                          "as a JSON string, or restore the file from a backup"]) from None
    except ValueError as exc:
        return StateRead(Secrets(), f"damaged ({exc})", True)


def env_secrets(env: HostFile) -> dict[str, str]:
    """The variables of .env as the host holds it (none when it is not a file)."""
    if env.kind == "file" and env.data is not None:
        return dotenv.parse(env.data.decode(errors="replace"))
    return {}


@dataclass
class Choice:
    """One secret's value for the run, or why the run must stop."""
    value: str = ""
    recovered: bool = False  # from .env: the state did not hold it
    generated: bool = False
    problem: str | None = None


def choose(name: str, read: StateRead, env_values: dict[str, str], supplied: dict[str, str],
           host_state: HostState, project: str, *, state_path: str, env_path: str) -> Choice:
    """Secret `name`: the supplied value (unless existing data opens only with another), the
    state's, .env's, or a new one where no data uses it yet."""
    current = read.stored.get(name)
    from_env = env_values.get(ENV_VARIABLE[name]) or None
    source, recovered = state_path, False
    if current is None and from_env:
        current, source, recovered = from_env, env_path, True
    wanted = supplied.get(name)
    if wanted is not None:
        if current is not None and wanted != current and (
                evidence := data_evidence(name, host_state, project)):
            return Choice(problem=(
                f"the supplied {name} differs from the one in {source}, and {evidence}: "
                "rotation is never implicit. Change it in the service first (e.g. ALTER ROLE "
                f"for PostgreSQL), then put the new value in {state_path}; or supply the old "
                "one"), recovered=recovered)
        return Choice(wanted, recovered=recovered)
    if current is not None:
        return Choice(current, recovered=recovered)
    if evidence := data_evidence(name, host_state, project):
        return Choice(problem=(
            f"{name} is in neither {state_path} ({read.how or 'incomplete'}) nor {env_path}, and "
            f"{evidence}: a new value would lock it out. Restore {state_path} (or {env_path}) "
            "from a backup and run again; nothing on the host was changed"))
    return Choice(generate(name), generated=True)


def notes_for(read: StateRead, recovered: list[str], generated: list[str], volumes_known: bool,
              *, state_path: str, env_path: str) -> list[str]:
    """What the user is told of a state that was not whole (names only), on an existing install."""
    if not (read.how or recovered or generated):
        return []
    parts = [f"secret state {state_path} was {read.how or 'incomplete'}"]
    if recovered:
        parts.append(f"recovered {', '.join(recovered)} from {env_path}")
    if generated:
        unseen = "" if volumes_known else ", Docker's volumes could not be listed"
        parts.append(f"generated {', '.join(generated)} (no data uses them yet{unseen})")
    if read.damaged:
        parts.append(f"the damaged file is kept as {state_path}.damaged-<time>")
    return ["; ".join(parts) + "; the state is written back"]


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

