"""
Settings: the one place that reads host data, and the one place each setting is declared.

`Settings` below is the specification: every field is one setting with its type (the annotation),
its default, its one-line documentation and its check (`setting(...)`). From it come the typed,
frozen `Settings` a run reads, their validation (`validate`), `group_data/all.py` and the README's
settings block (`mnemos_provision/settings_doc.py` writes both; a unit test keeps them identical).

Layers (lowest first): these defaults, group_data/all.py, the host's groups (group_data/<group>.py
and inventory group data), the host's inventory data, `--data`. A scalar or list setting of a
higher layer replaces the lower one; a dict setting is merged key by key, one level deep (an entry
replaces that entry whole; an entry set to None removes it), so an environment that changes one
image names that image only.

Every problem is collected and reported together, each naming the key, the value and what is
expected, before the first operation is declared, so a bad input never changes the host.
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import re
import string
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml
from pyinfra.api.connectors import get_all_connectors

from mnemos_provision import dotenv, stack
from mnemos_provision.secret_values import Secrets
from mnemos_provision.stack import LAYERS, NETWORKS, ROTATABLE, SERVICES  # the registry's

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULTS_FILE = REPO_ROOT / "group_data" / "all.py"

ENVIRONMENTS = ("development", "staging", "production")
DOCKER_SOURCES = ("auto", "desktop", "docker-ce", "distro")
KNOWN_TOOLS = ("yq", "hadolint", "trivy", "claude-code")
# Traefik's log levels (cmd/traefik/logger.go reads them case-insensitively; an unknown one becomes
# ERROR with no more than a log line).
TRAEFIK_LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "PANIC")
SECRET_NAMES = (
    "POSTGRES_PASSWORD", "REDIS_PASSWORD", "MINIO_ROOT_PASSWORD", "MINIO_APP_SECRET_KEY",
    "GRAFANA_ADMIN_PASSWORD", "JWT_SECRET_KEY", "BACKUP_ENCRYPTION_KEY", "VAULT_TOKEN",
)

# Keys that belong to pyinfra or its connectors, not to this project.
PYINFRA_KEY_PREFIXES = ("_", "ssh_", "winrm_", "chroot_", "vagrant_", "terraform_", "docker_ssh_")


def _connector_keys() -> set[str]:
    keys: set[str] = set()
    for connector in get_all_connectors().values():
        keys |= set(getattr(connector, "data_meta", None) or {})
    return keys


_CONNECTOR_KEYS: set[str] | None = None


def _is_pyinfra_key(key: str) -> bool:
    """pyinfra's and its connectors' own data keys (looked up only for keys we do not know)."""
    global _CONNECTOR_KEYS
    if key.startswith(PYINFRA_KEY_PREFIXES):
        return True
    if _CONNECTOR_KEYS is None:
        _CONNECTOR_KEYS = _connector_keys()
    return key in _CONNECTOR_KEYS


class SettingsError(Exception):
    """All problems found in the settings, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"{len(problems)} problem(s) in the settings; nothing on the host was changed:\n{lines}"
        )


# ---------------------------------------------------------------- checks
_BOOL_WORDS = {"true": True, "yes": True, "1": True, "on": True,
               "false": False, "no": False, "0": False, "off": False}


class _Checker:
    """Collects problems; `out` holds each value that passed its check, normalized."""

    def __init__(self, data: dict[str, Any], controller_path_exists: Callable[[str], bool]):
        self.data = data
        self.controller_path_exists = controller_path_exists
        self.problems: list[str] = []
        self.out: dict[str, Any] = {}

    def fail(self, key: str, value: Any, expected: str) -> None:
        self.problems.append(f"{key} = {value!r}: {expected}")

    # Values given with `--data key=value` arrive as strings: booleans and integers are parsed.
    def boolean(self, key: str) -> None:
        value = self.data[key]
        if isinstance(value, str) and value.lower() in _BOOL_WORDS:
            value = _BOOL_WORDS[value.lower()]
        if not isinstance(value, bool):
            return self.fail(key, self.data[key], "expected true or false")
        self.out[key] = value

    def integer(self, key: str, low: int = 0, high: int | None = None) -> None:
        value = self.data[key]
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            return self.fail(key, self.data[key], "expected a whole number")
        if value < low or (high is not None and value > high):
            upper = f" and {high}" if high is not None else ""
            return self.fail(key, value, f"expected a number between {low}{upper}")
        self.out[key] = value

    def string(self, key: str, allow_none: bool = False, choices: tuple | None = None) -> None:
        value = self.data[key]
        if value is None and allow_none:
            self.out[key] = None
            return
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self.fail(key, value, "expected a string; pyinfra's --data reads a value that "
                             "looks like a number as one (20.10 becomes 20.1): quote it as JSON, "
                             f"e.g. --data '{key}=\"{value}\"'")
        if not isinstance(value, str) or not value:
            kind = "a non-empty string" + (" or None" if allow_none else "")
            return self.fail(key, value, f"expected {kind}")
        if choices and value not in choices:
            hint = _closest(value, choices)
            return self.fail(key, value, f"expected one of {', '.join(choices)}{hint}")
        self.out[key] = value

    def path(self, key: str, allow_none: bool = False) -> None:
        value = self.data[key]
        if value is None and allow_none:
            self.out[key] = None
            return
        if not isinstance(value, str) or not (value.startswith("/") or value.startswith("~/")):
            return self.fail(
                key, value,
                "expected an absolute path or one starting with ~/ (relative paths depend on the "
                "directory pyinfra runs in)",
            )
        head, rest = ("~", value[1:]) if value.startswith("~/") else ("", value)
        parts = [part for part in rest.split("/") if part not in ("", ".")]
        if ".." in parts:
            return self.fail(key, value, "expected a path without '..' (a path is used as it is "
                             "written: write the directory it leads to)")
        # normalized: no "." component, no "//", no trailing "/" ("/srv//m/./" is "/srv/m",
        # "~/" is "~")
        self.out[key] = head + "/" + "/".join(parts) if parts or not head else head

    def string_list(self, key: str, choices: tuple | None = None) -> None:
        value = self.data[key]
        if isinstance(value, str):  # --data tools=yq,trivy
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            return self.fail(key, self.data[key], "expected a list of strings")
        if choices:
            bad = [v for v in value if v not in choices]
            for v in bad:
                self.fail(key, v, f"unknown entry; expected entries from {', '.join(choices)}"
                          f"{_closest(v, choices)}")
            if bad:
                return
        self.out[key] = list(value)

    def mapping(self, key: str, hidden: bool = False) -> None:
        value = self.data[key]
        if not isinstance(value, dict):
            return self.fail(key, "<hidden>" if hidden else value, "expected a dict")
        self.out[key] = dict(value)


# Control characters: C0 (newline, CR, NUL, tab...), DEL, C1 and the Unicode line separators. A
# setting reaches paths, shell commands, cron lines, .env and YAML files: none may hold one.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _refuse_control_characters(c: _Checker, s: Spec) -> None:
    """Every string of a setting (a string, a list's entries, a dict's keys and values at any
    depth), after its type check: one with a control character is refused, and the setting's
    own check does not run."""
    if s.name not in c.out:
        return
    found: list[tuple[str, Any]] = []

    def walk(label: str, value: Any) -> None:
        if isinstance(value, str):
            if _CONTROL.search(value):
                found.append((label, value))
        elif isinstance(value, dict):
            for inner, inner_value in value.items():
                walk(f"{label}[{inner!r}]", inner)
                walk(f"{label}[{inner!r}]", inner_value)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(label, item)

    walk(s.name, c.data[s.name])
    for label, value in found:
        c.fail(label, "<hidden>" if s.hidden else value,
               "holds a control character (newline, CR, NUL, tab, DEL...); expected one line of "
               "printable text: the value reaches paths, commands, cron and files")
    if found:
        del c.out[s.name]


def _closest(value: str, choices) -> str:
    value = str(value)
    match = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    if not match and len(value) >= 3:
        match = [c for c in choices if c.startswith(value)][:1]
    return f" (did you mean {match[0]!r}?)" if match else ""


def version_tuple(text: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in text.split("."))
    except (ValueError, AttributeError):
        return None



# ---------------------------------------------------------------- checks beyond the type
# Each runs once every setting has had its type check, and only if its own value passed it:
# c.out[key] is the value (normalized), c.data[key] the value as given, c.out the other settings.

def _exists_on_controller(c: _Checker, key: str) -> None:
    if c.out[key] and not c.controller_path_exists(c.out[key]):
        c.fail(key, c.data[key], "no such file on the machine running pyinfra (the controller)")


def _check_archives(c: _Checker, key: str) -> None:
    for archive in c.out[key]:
        if not archive.startswith("/"):
            c.fail(key, archive, "expected an absolute path on the controller")
        elif ".." in archive.split("/"):
            c.fail(key, archive, "expected a path without '..' (write the file it leads to)")
        elif not c.controller_path_exists(archive):
            c.fail(key, archive, "no such file on the machine running pyinfra (the controller)")


def _check_threshold(c: _Checker, key: str) -> None:
    shares = c.out.get("vault_key_shares", 10)
    if c.out[key] > shares:
        c.fail(key, c.data[key], f"must not exceed vault_key_shares ({c.data['vault_key_shares']})")


def _check_duration(c: _Checker, key: str) -> None:
    if not re.fullmatch(r"\d+[smh]", c.out[key]):
        c.fail(key, c.data[key], "expected a duration like 768h")


def _check_npm_prefix(c: _Checker, key: str) -> None:
    # one directory for every account (root installs, mnemos_user runs `claude`): "~/" would be
    # root's home under sudo, not the user's
    if c.out[key].startswith("~"):
        c.fail(key, c.data[key], "expected an absolute path such as /usr/local (the prefix is "
               "the whole system's, not a home directory's)")


def _check_compose_project(c: _Checker, key: str) -> None:
    if not all(ch.isalnum() and ch.islower() or ch.isdigit() or ch in "-_" for ch in c.out[key]):
        c.fail(key, c.data[key],
               "expected lowercase letters, digits, '-' and '_' (Compose project name rules)")


def _check_version(c: _Checker, key: str) -> None:
    if version_tuple(c.out[key]) is None:
        c.fail(key, c.data[key], "expected a version like 24.0")


def _check_buckets(c: _Checker, key: str) -> None:
    for name, spec in c.out[key].items():
        label = f"{key}[{name!r}]"
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", str(name)):
            c.fail(label, name,
                   "expected an S3 bucket name (3-63 lowercase letters, digits, '.', '-')")
        if not isinstance(spec, dict) or not set(spec) <= {"versioning", "expire_days"}:
            c.fail(label, spec,
                   "expected a dict with optional versioning (bool) and expire_days (int)")
        elif "expire_days" in spec and (not isinstance(spec["expire_days"], int)
                                        or isinstance(spec["expire_days"], bool)
                                        or spec["expire_days"] < 1):
            c.fail(f"{label}['expire_days']", spec["expire_days"], "expected a number of days >= 1")


# cron(5): the five fields with their ranges and names, and the @ keywords that are schedules
# (@reboot is not: it runs at every boot, not at a time, and is refused).
CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                      "dec")),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
CRON_KEYWORDS = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")


def _cron_field_problem(text: str, name: str, low: int, high: int, names: tuple) -> str | None:
    """Why `text` is not a cron field (None: it is): a list of *, N, N-M, each with an optional
    /step; months and days of the week also by their English three-letter names."""
    def number(word: str) -> int | None:
        if word.isdigit() and word.isascii():
            return int(word)
        if word.lower() in names:
            return names.index(word.lower()) + low
        return None

    for item in text.split(","):
        body, slash, step = item.partition("/")
        if slash and not (step.isdigit() and step.isascii() and int(step) >= 1):
            return f"{name}: the step of {item!r} is not a whole number of 1 or more"
        if body == "*":
            continue
        first, dash, last = body.partition("-")
        if slash and not dash:
            return f"{name}: {item!r}: a step follows * or a range (e.g. */15, 0-30/10)"
        found = [number(first)] + ([number(last)] if dash else [])
        bounds = [b for b in found if b is not None]
        if len(bounds) != len(found):
            return (f"{name}: {item!r} is not *, a number, a range or a list"
                    + (f" (names: {', '.join(names)})" if names else ""))
        if any(not low <= b <= high for b in bounds):
            return f"{name}: {item!r} is outside {low}-{high}"
        if dash and bounds[0] > bounds[1]:
            return f"{name}: the range {item!r} runs backwards"
    return None


def _check_schedule(c: _Checker, key: str) -> None:
    value = c.out[key].strip()
    if value.startswith("@"):
        if value.lower() in CRON_KEYWORDS:
            c.out[key] = value.lower()
            return
        why = (" (@reboot runs at every boot, not at a time: not a backup schedule)"
               if value.lower() == "@reboot" else "")
        return c.fail(key, c.data[key], f"expected one of {', '.join(CRON_KEYWORDS)} or five "
                      f"cron fields like '0 3 * * *'{why}")
    fields = value.split(" ")
    fields = [f for f in fields if f]
    if len(fields) != 5:
        return c.fail(key, c.data[key], "expected a 5-field cron expression (minute hour "
                      "day-of-month month day-of-week) like '0 3 * * *', or a keyword such as "
                      "@daily")
    problems = [p for f, spec in zip(fields, CRON_FIELDS) if (p := _cron_field_problem(f, *spec))]
    if problems:
        return c.fail(key, c.data[key], "; ".join(problems) + " (expected five cron fields like "
                      "'0 3 * * *' or '*/30 1-5 * jan-jun mon,fri')")
    c.out[key] = " ".join(fields)


def _check_traefik_log_level(c: _Checker, key: str) -> None:
    value = c.out.pop(key)
    if value.upper() in TRAEFIK_LOG_LEVELS:
        c.out[key] = value.upper()
    else:
        c.fail(key, value, f"expected one of {', '.join(TRAEFIK_LOG_LEVELS)}"
               f"{_closest(value.upper(), TRAEFIK_LOG_LEVELS)}")


def _check_bind_address(c: _Checker, key: str) -> None:
    try:
        c.out[key] = str(ipaddress.ip_address(c.out[key]))
    except ValueError:
        del c.out[key]
        c.fail(key, c.data[key], "expected an IP address such as 127.0.0.1")


def _check_images(c: _Checker, key: str) -> None:
    images = c.out[key]
    services = stack.names()
    for service in services:
        if service not in images:
            c.fail(key, sorted(images), f"missing an image for {service!r}")
    for service, ref in images.items():
        if service not in services:
            c.fail(f"{key}[{service!r}]", ref, f"unknown service{_closest(service, services)}")
            continue
        if not isinstance(ref, str) or not ref:
            c.fail(f"{key}[{service!r}]", ref, "expected an image reference")
            continue
        name = ref.split("@", 1)[0]
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else None
        if "@sha256:" not in ref and (tag is None or tag == "latest"):
            c.fail(f"{key}[{service!r}]", ref,
                   "expected a pinned tag or digest (not :latest, not untagged)")


_REGISTRY = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?(/[a-z0-9._-]+)*")
_HUB = "docker.io"


def image_path(ref: str) -> tuple[str, str]:
    """(registry, rest) of an image reference: docker.io and library/ made explicit for Docker
    Hub's names, rest = path[:tag][@digest]."""
    first, _, remainder = ref.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        return first, remainder
    return _HUB, ref if remainder else f"library/{ref}"


def on_registry(ref: str, registry: str) -> str:
    """`ref` pulled from `registry` instead of its own: the same path, tag and digest."""
    if ref.startswith(registry.rstrip("/") + "/"):
        return ref
    return f"{registry.rstrip('/')}/{image_path(ref)[1]}"


def _check_image_registry(c: _Checker, key: str) -> None:
    registry = c.out[key]
    if registry is None:
        return
    if not _REGISTRY.fullmatch(registry):
        c.fail(key, registry, "expected a registry as host[:port][/prefix], e.g. "
               "mirror.example.com:5000 (no scheme, no trailing slash, lower-case path)")
        return
    if "images" in c.out:
        c.out["images"] = {service: on_registry(ref, registry)
                           for service, ref in c.out["images"].items()}


def _check_subnets(c: _Checker, key: str) -> None:
    subnets = c.out[key]
    parsed = {}
    for name in NETWORKS:
        if name not in subnets:
            c.fail(key, sorted(subnets), f"missing the {name!r} network")
    for name, cidr in subnets.items():
        label = f"{key}[{name!r}]"
        if name not in NETWORKS:
            c.fail(label, cidr,
                   f"unknown network{_closest(name, NETWORKS)}; expected {', '.join(NETWORKS)}")
            continue
        try:
            if not isinstance(cidr, str):
                raise TypeError("not a string")
            net = ipaddress.ip_network(cidr, strict=True)
        except (ValueError, TypeError) as exc:
            c.fail(label, cidr, f"expected a network in CIDR notation like 172.20.0.0/24 ({exc})")
            continue
        if net.version != 4 or net.prefixlen > 29:
            c.fail(label, cidr, "expected an IPv4 network of /29 or larger")
            continue
        parsed[name] = net
    names = sorted(parsed)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if parsed[a].overlaps(parsed[b]):
                c.fail(f"{key}[{b!r}]", str(parsed[b]), f"overlaps {key}[{a!r}] = "
                       f"{str(parsed[a])!r}; give each network its own range")


def _check_ports(c: _Checker, key: str) -> None:
    ports = c.out[key]
    seen: dict[int, str] = {}
    port_services = stack.port_services()
    for name in port_services:
        if name not in ports:
            c.fail(key, sorted(ports), f"missing the port {name!r}")
    for name, port in ports.items():
        label = f"{key}[{name!r}]"
        if name not in port_services:
            c.fail(label, port, f"unknown port{_closest(name, port_services)}")
            continue
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            c.fail(label, port, "expected a port number between 1 and 65535")
            continue
        if port in seen:
            c.fail(label, port, f"already used by {key}[{seen[port]!r}]; each port must be unique")
            continue
        seen[port] = name


MIN_SECRET_LENGTH = 16
WEAK_SECRETS = {"password", "changeme", "admin", "secret", "mnemos", "letmein", "123456", "qwerty"}


# Characters a supplied secret may hold: RFC 3986's unreserved set, so that a secret is the same
# text unquoted in .env, in every URL of .env (user:password@host) and in shell commands.
SECRET_CHARACTERS = re.compile(r"[A-Za-z0-9._~-]+")


def _check_secrets(c: _Checker, key: str) -> None:
    secrets = c.out[key]
    from_file = _read_secrets_file(c)
    for name in sorted(set(from_file) & set(secrets)):
        c.fail(f"{key}[{name!r}]", "<hidden>",
               f"also given in secrets_file {c.data['secrets_file']!r}; supply each secret once")
    secrets = {**secrets, **from_file}
    c.out[key] = Secrets(secrets)  # never shown in a repr, a traceback or a log
    for name, value in secrets.items():
        label = f"{key}[{name!r}]"
        if name not in SECRET_NAMES:
            c.fail(label, "<hidden>", f"unknown secret{_closest(name, SECRET_NAMES)}; expected one "
                   f"of {', '.join(SECRET_NAMES)}")
            continue
        if not isinstance(value, str):
            c.fail(label, "<hidden>", "expected a string")
            continue
        lowered = value.lower()
        if (len(value) < MIN_SECRET_LENGTH or len(set(value)) < 6
                or any(w in lowered for w in WEAK_SECRETS)):
            c.fail(label, "<hidden>",
                   f"too weak: use at least {MIN_SECRET_LENGTH} characters, not a common word, "
                   "e.g. `openssl rand -hex 24`; or remove it and the deploy generates one")
            continue
        if not SECRET_CHARACTERS.fullmatch(value):
            c.fail(label, "<hidden>", "may hold only letters, digits and . _ ~ - (it goes unquoted "
                   "into .env and into URLs such as DATABASE_URL, where @ / ? % : # and others "
                   "would change the URL); e.g. `openssl rand -hex 24`")


# The placeholders of tool_downloads' URLs (roles/tools.py fills them in).
TOOL_URL_FIELDS = ("version", "arch", "uname_arch")


def _check_tool_downloads(c: _Checker, key: str) -> None:
    downloads = c.out[key]
    for tool in ("yq", "hadolint"):
        spec = downloads.get(tool)
        label = f"{key}[{tool!r}]"
        if not isinstance(spec, dict) or not {"version", "url", "sha256"} <= set(spec):
            c.fail(label, spec, "expected a dict with version, url and sha256")
            continue
        if not isinstance(spec["sha256"], dict) or not all(
            isinstance(v, str) and len(v) == 64 for v in spec["sha256"].values()
        ):
            c.fail(f"{label}['sha256']", spec["sha256"], "expected {arch: 64-hex-digit sha256}")
        url = spec["url"]
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(url) if f is not None] \
                if isinstance(url, str) else None
        except ValueError:  # a lone { or }
            names = None
        if names is None or "${" in url or any(f not in TOOL_URL_FIELDS for f in names):
            c.fail(f"{label}['url']", url, "expected a URL whose only placeholders are "
                   f"{', '.join('{' + f + '}' for f in TOOL_URL_FIELDS)} (no other braces, no "
                   "shell-style ${...})")


def _read_secrets_file(c: _Checker) -> dict:
    """The secrets of `secrets_file` (controller): a mapping of names to values, mode 0600."""
    path = c.out.get("secrets_file")
    if not path:
        return {}
    if path.startswith("~/"):
        path = str(Path.home()) + path[1:]
    key = "secrets_file"
    try:
        info = Path(path).stat()
    except OSError as exc:
        c.fail(key, c.data[key], f"cannot be read on the machine running pyinfra ({exc.strerror})")
        return {}
    if info.st_mode & 0o077:
        c.fail(key, c.data[key], f"has mode {oct(info.st_mode & 0o777)[2:]}: other accounts can "
               f"read it; run `chmod 600 {path}`")
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        # the parser's message may quote the file's text: only its position is repeated here
        where = getattr(exc, "problem_mark", None)
        c.fail(key, c.data[key], "is not valid YAML or JSON"
               + (f" (line {where.line + 1})" if where else ""))
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        c.fail(key, c.data[key], "expected a mapping of secret names to values, e.g. "
               "POSTGRES_PASSWORD: <value>")
        return {}
    return {str(name): value for name, value in data.items()}


# Directories the tree or the secret state may never be, nor (the first group) lie inside.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
                "/run", "/sbin", "/sys", "/usr")
SYSTEM_DIRS = ("/", "/home", "/media", "/mnt", "/opt", "/root", "/srv", "/tmp", "/var",
               "/var/lib", "/var/tmp", "/var/log", "/dev/shm", "~")
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/shm", "/var/crash")


def _check_location(c: _Checker, key: str) -> None:
    """mnemos_root and the state files: never /, a system directory or the home directory itself;
    the secret state outside the tree (which is a git repository) and out of shared directories."""
    def inside(path: str, parent: str) -> bool:
        return path == parent or path.startswith(parent.rstrip("/") + "/")

    path = c.out[key]
    if path in SYSTEM_DIRS or any(inside(path, d) for d in SYSTEM_TREES):
        return c.fail(key, path, "is / , a system directory or the home directory itself; choose "
                      "a directory of its own, e.g. ~/mnemos or /srv/mnemos")
    if key == "mnemos_root":
        return
    # a directory of its own is checked on the host (0700-like, the user's); here: never
    # straight in a directory every account can write
    if str(Path(path).parent) in WORLD_WRITABLE:
        return c.fail(key, path, "lies straight in a directory every account can write; keep it "
                      "in a directory of its own, e.g. ~/.config/mnemos/")
    root = c.out.get("mnemos_root")
    if root and inside(path, root):
        c.fail(key, path, f"lies inside mnemos_root ({root}), a git repository whose files "
               "get copied and committed; keep it outside, e.g. ~/.config/mnemos/")


def _check_supported_os(c: _Checker, key: str) -> None:
    for name, versions in c.out[key].items():
        if not isinstance(name, str) or not isinstance(versions, (list, tuple)) or not all(
                isinstance(v, str) for v in versions):
            c.fail(f"{key}[{name!r}]", versions,
                   'expected a list of version strings, e.g. {"debian": ["12"]}')


def _check_dotenv_overrides(c: _Checker, key: str) -> None:
    """Keys of .env.example only, string values that .env can carry (control characters are
    refused before, for every setting), no secret (nor a value built from one, such as
    DATABASE_URL) set or referred to, every {NAME} known."""
    secret_names = set(dotenv.SECRET_VARS) | set(dotenv.SECRET_LENGTHS)
    known = set(dotenv.NAMES) | set(dotenv.CONTEXT_NAMES)
    checked: dict[str, str] = {}
    for name, value in c.out[key].items():
        label = f"{key}[{name!r}]"
        if name == "TRAEFIK_LOG_LEVEL":
            # .env's TRAEFIK_LOG_LEVEL only mirrors the setting: an override would change nothing
            c.fail(label, value, "set traefik_log_level instead (Traefik reads its level from "
                   "config/traefik/traefik.yml, not from its environment)")
        elif name not in dotenv.NAMES:
            c.fail(label, value,
                   f"not a variable of .env.example{_closest(str(name), dotenv.NAMES)}")
        elif name in secret_names:
            c.fail(label, "<hidden>", "is a secret: supply it in secrets_file (or `secrets`), not "
                   "as an override")
        elif name in dotenv.SECRET_BEARING:
            parts = ", ".join(r for r in dotenv.references(_default(name))
                              if r not in dotenv.SECRET_BEARING)
            c.fail(label, "<hidden>", "holds a secret: the deploy builds it from the secrets, and "
                   f"an override cannot set it; override its parts instead ({parts})")
        elif not isinstance(value, str):
            c.fail(label, value, f'expected a string, e.g. "{value}"')
        elif re.search(r"\$\{", value):
            c.fail(label, value, "holds a shell-style ${...}, which .env's readers do not agree "
                   "on (nothing here expands it); write the value itself, or {NAME} for the value "
                   "of another .env variable (e.g. {POSTGRES_HOST})")
        elif any(ref in dotenv.SECRET_BEARING for ref in dotenv.references(value)):
            c.fail(label, value, "refers to a secret (the secrets, and DATABASE_URL, REDIS_URL "
                   "and the other values built from one); a secret may reach only .env (0600), "
                   "never a config file or the output")
        elif unknown := [ref for ref in dotenv.references(value) if ref not in known]:
            c.fail(label, value, f"{{{unknown[0]}}} names nothing known"
                   f"{_closest(unknown[0], sorted(known))}; a placeholder is {{NAME}} of a "
                   "variable of .env.example (e.g. {POSTGRES_HOST}) or one of "
                   f"{', '.join('{' + n + '}' for n in dotenv.CONTEXT_NAMES)}")
        elif reason := dotenv.problem(value):
            c.fail(label, value, f"cannot be written to .env so that Docker Compose, sh and "
                   f"python-dotenv read the same value: {reason}")
        else:
            checked[name] = value
    if len(checked) == len(c.out[key]):
        try:  # a reference to itself, directly or through others
            dotenv.resolve({n: "" for n in dotenv.CONTEXT_NAMES}, {}, checked, with_secrets=False)
        except dotenv.ResolveError as exc:
            c.fail(key, c.data[key], f"{exc}; a value cannot depend on itself")


def _default(name: str) -> str:
    return next(v.default for v in dotenv.ALL_VARS if v.name == name)


# ---------------------------------------------------------------- the specification
Check = Callable[[_Checker, str], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Spec:
    """One setting: name, type, default, one-line doc and check (see `setting`)."""

    name: str
    type: Any
    default: Any
    doc: str
    section: str | None = None  # starts a section of group_data/all.py
    choices: tuple | None = None  # strings, or list entries: one of these
    low: int = 0  # integers: bounds
    high: int | None = None
    path: bool = False  # strings: an absolute path or one starting with ~/
    hidden: bool = False  # never shown in a message (secrets)
    check: Check | None = None  # what the type does not say; runs once every type check passed


def setting(default: T, doc: str, *, section: str | None = None, choices: tuple | None = None,
            low: int = 0, high: int | None = None, path: bool = False, hidden: bool = False,
            check: Check | None = None) -> T:
    """Declare a field of `Settings` as a setting (its default is copied for every use)."""
    meta = dict(doc=doc, section=section, choices=choices, low=low, high=high, path=path,
                hidden=hidden, check=check)
    return field(default_factory=lambda: copy.deepcopy(default),
                 metadata={"setting": meta})


@dataclass(frozen=True)
class Settings:
    """Every setting of the deploy. Build it with `validate`, never directly."""

    # ------------------------------------------------------------ who, where, which environment
    environment: str = setting(
        "development", "ENVIRONMENT in .env, TLS and exposure defaults",
        section="who, where, which environment", choices=ENVIRONMENTS)
    mnemos_user: str | None = setting(
        None, "account that owns the tree and joins the docker group; None = the user pyinfra "
        "connects as (under sudo: the user who ran sudo)")
    mnemos_root: str = setting(
        "~/mnemos", 'the MNEMOS tree; "~/" is mnemos_user\'s home; absolute paths only otherwise',
        path=True, check=_check_location)
    secrets_state_path: str = setting(
        "~/.config/mnemos/secrets.json", "generated secrets (0600, outside the tree and git); "
        ".env is rendered from it", path=True, check=_check_location)
    vault_keys_path: str = setting(
        "~/.config/mnemos/vault-keys.json", "Vault unseal keys and root token (0600, outside git)",
        path=True, check=_check_location)
    secrets_file: str | None = setting(
        None, "a 0600 YAML/JSON file on the controller with the secrets you supply "
        "({NAME: value}); read by the deploy, never part of pyinfra's data (which --debug prints)",
        path=True)
    secrets: dict[str, str] = setting(
        {}, "secrets supplied as data (printed by pyinfra at --debug: prefer secrets_file); "
        "supplied secrets win over generated ones on a new install; weak ones are refused",
        hidden=True, check=_check_secrets)
    rotate: list[str] = setting(
        [], "what deploys/rotate.py rotates: postgres, redis, minio-app (MinIO's application "
        "user), minio-root, grafana (its admin), jwt, vault-token, backup-key (earlier keys kept "
        "for old archives); new values set in the service, the state, .env and Vault; read by "
        "that deploy only (docs/rotation.md)",
        choices=tuple(ROTATABLE))

    # ------------------------------------------------------------ preflight
    preflight_strict: bool = setting(
        True, "below-minimum memory/CPUs/disk fail the run; False turns them into warnings",
        section="preflight")
    supported_os: dict[str, list[str]] = setting(
        {"ubuntu": ["22.04", "24.04"], "debian": ["12"]},
        "distributions and versions the deploy is tested for", check=_check_supported_os)
    min_memory_gib: int = setting(8, "design minimum RAM")
    min_cpus: int = setting(4, "design minimum CPU cores")
    min_disk_gib: int = setting(100, "design minimum free disk where mnemos_root lives")
    recommended_memory_gib: int = setting(16, "design recommendation (below: warning only)")
    recommended_cpus: int = setting(8, "design recommendation (below: warning only)")
    recommended_disk_gib: int = setting(500, "design recommendation (below: warning only)")

    # ------------------------------------------------------------ packages
    apt_packages: list[str] = setting(
        ["build-essential", "git", "curl", "wget", "jq", "vim", "htop", "net-tools",
         "python3-pip", "python3-venv", "apt-transport-https", "ca-certificates", "gnupg",
         "lsb-release", "shellcheck", "make", "openssl", "cron", "tree"],
        "the design's \"essential tools\" (python3.11 is added where the distribution has it)",
        section="packages")
    apt_optional_packages: list[str] = setting(
        ["python3.11", "software-properties-common"],
        "installed only where the distribution has them")
    apt_cache_valid_time: int = setting(
        86400, "seconds an apt cache stays fresh: a re-run within it does not refresh "
        "(zero changes)")

    # ------------------------------------------------------------ docker
    docker_source: str = setting(
        "auto", "where Docker Engine and Compose v2 come from", section="docker",
        choices=DOCKER_SOURCES)
    docker_apt_repo_url: str = setting(
        "https://download.docker.com/linux", "Docker's apt repository (docker-ce)")
    docker_apt_key_fingerprint: str = setting(
        "9DC858229FC7DD38854AE2D88D81803C0EBFCD88",
        "Docker's release key; the keyring is refused if it differs")
    docker_ce_packages: list[str] = setting(
        ["docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin",
         "docker-compose-plugin"], "docker-ce set")
    docker_conflicting_packages: list[str] = setting(
        ["docker.io", "docker-doc", "docker-compose", "docker-compose-v2", "podman-docker",
         "containerd", "runc"], "removed for docker-ce")
    docker_distro_packages: list[str] = setting(
        ["docker.io"],
        "distro set (plus docker_distro_compose_package where the distribution has one)")
    docker_distro_compose_package: str = setting(
        "docker-compose-v2", "the distribution's Compose v2 package (Ubuntu has it; Debian 12 "
        "does not); not used with compose_plugin_binary")
    compose_plugin_binary: str | None = setting(
        None, "path ON THE CONTROLLER of a docker-compose v2 binary to install as the CLI plugin "
        "(air-gapped hosts)", path=True, check=_exists_on_controller)
    docker_min_version: str = setting(
        "24.0", "design requirement for the engine", check=_check_version)
    compose_min_version: str = setting(
        "2.20", "design requirement for Compose v2", check=_check_version)
    docker_daemon_config: dict[str, Any] = setting(
        {"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "3"},
         "icc": False, "live-restore": True, "userland-proxy": False},
        "/etc/docker/daemon.json: log rotation as in the design; no traffic between containers "
        "on the default bridge (icc), containers kept running while the engine restarts "
        "(live-restore), published ports by NAT instead of docker-proxy (userland-proxy): CIS "
        "Docker Benchmark 2.2, 2.15, 2.16, see docs/cis-docker-benchmark.md; an entry set to "
        "None removes it")
    docker_no_new_privileges: bool = setting(
        False, "no-new-privileges for every container of the engine (daemon.json, CIS 2.14). Off "
        "by default: on a workstation it also reaches the user's other containers, where sudo, "
        "su and file capabilities then stop working; the stack's services set it themselves "
        "(Vault, which needs its file capability, opts out)")
    docker_buildkit_profile: bool = setting(
        True, "export DOCKER_BUILDKIT=1 in mnemos_user's ~/.profile, as the design does")
    docker_start_timeout: int = setting(
        60, "seconds to wait for dockerd to answer after starting it", low=1, high=3600)

    # ------------------------------------------------------------ tools of the design
    tools: list[str] = setting(
        ["yq", "hadolint", "trivy", "claude-code"],
        "which extra tools to install; [] installs none", section="tools of the design",
        choices=KNOWN_TOOLS)
    tool_downloads: dict[str, dict[str, Any]] = setting(
        {
            "yq": {
                "version": "v4.44.3",
                "url": "https://github.com/mikefarah/yq/releases/download/{version}/"
                       "yq_linux_{arch}",
                "sha256": {"amd64": "a2c097180dd884a8d50c956ee16a9cec070f30a7947cf4ebf87d5f36213e"
                                    "9ed7"},
            },
            "hadolint": {
                "version": "v2.12.0",
                "url": "https://github.com/hadolint/hadolint/releases/download/{version}/"
                       "hadolint-Linux-{uname_arch}",
                "sha256": {"amd64": "56de6d5e5ec427e17b74fa48d51271c7fc0d61244bf5c90e828aab8362d"
                                    "55010"},
            },
        },
        "pinned single-binary downloads, verified by sha256 per architecture (an architecture "
        "without a checksum is refused)", check=_check_tool_downloads)
    trivy_apt_repo_url: str = setting(
        "https://aquasecurity.github.io/trivy-repo/deb",
        "trivy's signed apt repository, as in the design")
    trivy_version: str = setting("0.58.1", "pinned trivy package version")
    claude_code_npm_package: str = setting(
        "@anthropic-ai/claude-code@2.0.14",
        "Claude Code CLI, through npm (login stays the user's step)")
    claude_code_npm_prefix: str = setting(
        "/usr/local", "where npm installs the Claude Code CLI (npm install -g --prefix): the "
        "package in <prefix>/lib/node_modules, the `claude` command in <prefix>/bin, which must "
        "be on mnemos_user's PATH (/usr/local/bin is on Debian's and Ubuntu's default PATH; "
        "/usr/local is also npm's own global prefix there)", path=True, check=_check_npm_prefix)

    # ------------------------------------------------------------ the stack
    compose_project: str = setting(
        "mnemos", "COMPOSE_PROJECT_NAME: prefix of containers, networks and volumes",
        section="the stack", check=_check_compose_project)
    compose_profiles: list[str] = setting(
        ["data", "observability", "gateway"],
        "enabled groups (data, observability, gateway) or single services",
        choices=LAYERS + SERVICES)
    images: dict[str, str] = setting(
        stack.default_images(),  # each service's image in the registry
        "every image pinned; point them at a mirror for air-gapped hosts", check=_check_images)
    image_registry: str | None = setting(
        None, "a registry mirror or private registry (host[:port][/prefix]) every image of "
        "`images` is pulled from: its registry host is replaced, its path, tag and digest kept "
        "(redis:7.4.6-alpine -> <image_registry>/library/redis:7.4.6-alpine); None = each "
        "image's own registry", check=_check_image_registry)
    image_archives: list[str] = setting(
        [], "paths ON THE CONTROLLER of `docker save` archives, loaded when an image of `images` "
        "is missing (air-gapped hosts)", check=_check_archives)
    stack_subnets: dict[str, str] = setting(
        {"frontend": "172.20.0.0/24", "backend": "172.21.0.0/24", "data": "172.22.0.0/24",
         "hostaccess": "172.23.0.0/24"},
        "design subnets, plus the publishing network (fixed too: a dynamic one can take a design "
        "range)", check=_check_subnets)
    bind_address: str = setting(
        "127.0.0.1", "host address every published port binds to; 0.0.0.0 exposes the stack to "
        "the network", check=_check_bind_address)
    publish_ports: bool = setting(
        True, "publish every service port on bind_address (via the non-internal \"hostaccess\" "
        "network); False: only Grafana and Traefik publish, the rest is reached with docker "
        "compose exec")
    ports: dict[str, int] = setting(
        stack.default_ports(),  # each service's ports in the registry
        "host ports (published on bind_address)", check=_check_ports)
    vault_tls: bool = setting(
        False, "Vault listener TLS (self-signed in the tree); False = tls_disable, for "
        "development only")
    traefik_tls: bool = setting(
        False, "self-signed certificate for Traefik's websecure entrypoint in config/traefik/certs")
    traefik_log_level: str = setting(
        "INFO", f"{' | '.join(TRAEFIK_LOG_LEVELS)}: log.level in config/traefik/traefik.yml "
        "(Traefik ignores TRAEFIK_LOG_LEVEL there)", check=_check_traefik_log_level)
    launch_stack: bool = setting(True, "start the compose stack and wait until it is healthy")
    stack_wait_timeout: int = setting(
        300, "seconds to wait for every enabled service to be healthy", low=1, high=7200)
    dotenv_overrides: dict[str, str] = setting(
        {}, 'values for non-secret .env variables (e.g. {"LOG_LEVEL": "DEBUG"}); keys must exist '
        "in .env.example", check=_check_dotenv_overrides)

    # ------------------------------------------------------------ Vault (SOUL) and MinIO (ENGRAM)
    vault_init: bool = setting(
        True, "initialize (once), unseal (every run) and configure Vault when it is enabled",
        section="Vault (SOUL) and MinIO (ENGRAM)")
    vault_key_shares: int = setting(5, "unseal key shares created at initialization",
                                    low=1, high=10)
    vault_key_threshold: int = setting(3, "keys needed to unseal", low=1, high=10,
                                       check=_check_threshold)
    vault_mount_path: str = setting(
        "mnemos/", "kv-v2 mount of the service secrets (design: VAULT_MOUNT_PATH)")
    vault_policy_name: str = setting(
        "mnemos-services", "policy that lets the MNEMOS services read their secrets")
    vault_approle_name: str = setting("mnemos-services", "AppRole role of the MNEMOS services")
    vault_token_period: str = setting(
        "768h", "period of the renewable scoped token written to .env as VAULT_TOKEN",
        check=_check_duration)
    vault_revoke_root_token: bool = setting(
        False, "revoke the root token after set-up (later runs then only unseal)")
    minio_init: bool = setting(
        True, "create buckets and the application user when MinIO is enabled")
    minio_buckets: dict[str, dict[str, Any]] = setting(
        {"mnemos-artifacts": {"versioning": True}, "mnemos-models": {"versioning": True},
         "mnemos-backups": {"expire_days": 60}, "mnemos-uploads": {}},
        "private buckets; versioning and expiry (days, current and noncurrent versions)",
        check=_check_buckets)
    minio_app_user: str = setting(
        "mnemos-app", "the services' MinIO user (AWS_ACCESS_KEY_ID), limited to minio_buckets")

    # ------------------------------------------------------------ backups
    backup_enabled: bool = setting(True, "install the backup schedule", section="backups")
    backup_schedule: str = setting(
        "0 3 * * *", "cron expression (design: daily at 3 AM)", check=_check_schedule)
    backup_retention_days: int = setting(30, "archives older than this are pruned",
                                         low=1, high=3650)
    backup_encrypt: bool = setting(True, "encrypt archives with BACKUP_ENCRYPTION_KEY")

    # ------------------------------------------------------------ derived views
    @property
    def enabled_services(self) -> list[str]:
        """Services whose layer or own name is in compose_profiles, in design order."""
        return stack.enabled_services(self.compose_profiles)

    def service_enabled(self, service: str) -> bool:
        return service in self.enabled_services

    @property
    def published_ports(self) -> dict[str, int]:
        """Port key -> host port, for the enabled services that publish on the host."""
        return stack.published_ports(self.ports, self.compose_profiles, self.publish_ports)

    def home_path(self, path: str, home: str) -> str:
        """Expand a leading "~/" against mnemos_user's home."""
        if path == "~":
            return home
        if path.startswith("~/"):
            return home.rstrip("/") + path[1:]
        return path


def _spec() -> tuple[Spec, ...]:
    hints = get_type_hints(Settings)
    return tuple(Spec(name=f.name, type=hints[f.name],
                      default=f.default_factory(),  # type: ignore[operator]
                      **f.metadata["setting"])
                 for f in fields(Settings))


SPEC: tuple[Spec, ...] = _spec()
FIELD_NAMES = tuple(s.name for s in SPEC)
DEFAULTS_KEYS = frozenset(FIELD_NAMES)
DICT_SETTINGS = frozenset(s.name for s in SPEC if get_origin(s.type) is dict)


def load_defaults() -> dict[str, Any]:
    """Every setting's default (fresh copies)."""
    return {s.name: copy.deepcopy(s.default) for s in SPEC}


# ---------------------------------------------------------------- layers
def merge_layers(*layers: dict[str, Any]) -> dict[str, Any]:
    """
    Layers of data, lowest first, as one dict. A higher layer's value replaces a lower one's,
    except for a dict setting given as a dict over a dict: that is merged key by key, one level
    deep (an entry replaces that entry whole; an entry set to None removes it).
    """
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            below = out.get(key)
            if key in DICT_SETTINGS and isinstance(value, dict) and isinstance(below, dict):
                merged = dict(below)
                for inner, inner_value in value.items():
                    if inner_value is None:
                        merged.pop(inner, None)
                    else:
                        merged[inner] = inner_value
                out[key] = merged
            else:
                out[key] = value
    return out


def host_layers(host) -> list[dict[str, Any]]:
    """
    A pyinfra host's data as layers, lowest first, in pyinfra's own order (pyinfra.api.host:
    override, host, groups, global, deploy defaults), with each group a layer of its own (in the
    host's group order, the last winning, as pyinfra's get_groups_data has it).
    """
    inventory = host.inventory
    return [
        host.get_deploy_data() or {},
        inventory.get_data(),  # group_data/all.py and the inventory's `all` data
        *(inventory.get_group_data(group) for group in host.groups),
        inventory.get_host_data(host.name),
        inventory.get_override_data(),  # --data
        host.data.override_datas,  # host.data.<key> = ... during the deploy
    ]


# ---------------------------------------------------------------- validation
def _type_check(c: _Checker, s: Spec) -> None:
    kind, args = get_origin(s.type), get_args(s.type)
    allow_none = kind in (Union, types.UnionType) and type(None) in args
    base = next(a for a in args if a is not type(None)) if allow_none else s.type
    if base is bool:
        c.boolean(s.name)
    elif base is int:
        c.integer(s.name, low=s.low, high=s.high)
    elif base is str and s.path:
        c.path(s.name, allow_none=allow_none)
    elif base is str:
        c.string(s.name, allow_none=allow_none, choices=s.choices)
    elif get_origin(base) is list:
        c.string_list(s.name, choices=s.choices)
    elif get_origin(base) is dict:
        c.mapping(s.name, hidden=s.hidden)
    else:  # pragma: no cover - a setting declared with a type this function does not know
        raise TypeError(f"setting {s.name}: no check for the type {s.type}")


def validate(data: dict[str, Any],
             controller_path_exists: Callable[[str], bool] = lambda p: Path(p).is_file()
             ) -> Settings:
    """
    Check `data` (host data) layered over the defaults with `merge_layers`; raise SettingsError
    listing every problem.
    """
    merged = merge_layers(load_defaults(), data)
    c = _Checker(merged, controller_path_exists)

    for key in sorted(data):
        if key in DEFAULTS_KEYS or _is_pyinfra_key(key):
            continue
        c.problems.append(
            f"{key} = {data[key]!r}: unknown setting{_closest(key, FIELD_NAMES)}; "
            "the settings are listed in group_data/all.py"
        )
    for s in SPEC:
        _type_check(c, s)
        _refuse_control_characters(c, s)
    for s in SPEC:
        if s.check and s.name in c.out:
            s.check(c, s.name)

    if c.problems:
        raise SettingsError(c.problems)
    return Settings(**{name: c.out[name] for name in FIELD_NAMES})


def validate_layers(layers: list[dict[str, Any]], **kwargs) -> Settings:
    """Validate data given as layers, lowest first (see `merge_layers` and `host_layers`)."""
    return validate(merge_layers(*layers), **kwargs)

