"""
Settings: the one place that reads host data. It layers host.data over the defaults of
group_data/all.py, checks everything at once and returns a frozen, typed `Settings`.

Every problem is collected and reported together, each naming the key, the value and what is
expected, before the first operation is declared, so a bad input never changes the host.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import runpy
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULTS_FILE = REPO_ROOT / "group_data" / "all.py"

ENVIRONMENTS = ("development", "staging", "production")
DOCKER_SOURCES = ("auto", "desktop", "docker-ce", "distro")
KNOWN_TOOLS = ("yq", "hadolint", "trivy", "claude-code")
SERVICES = (
    "postgres", "redis", "vault", "minio",
    "otel-collector", "prometheus", "loki", "grafana",
    "traefik",
)
# Compose profiles: each service is in its layer's profile and in one named after itself.
SERVICE_LAYERS = {
    "postgres": "data", "redis": "data", "vault": "data", "minio": "data",
    "otel-collector": "observability", "prometheus": "observability",
    "loki": "observability", "grafana": "observability",
    "traefik": "gateway",
}
LAYERS = ("data", "observability", "gateway")
# Traefik's log levels (cmd/traefik/logger.go reads them case-insensitively; an unknown one becomes
# ERROR with no more than a log line).
TRAEFIK_LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "PANIC")
NETWORKS = ("frontend", "backend", "data", "hostaccess")
FRONTEND_SERVICES = ("grafana", "traefik")  # on the non-internal frontend network by design
PORT_SERVICES = {  # which service publishes each port key
    "postgres": "postgres", "redis": "redis", "vault": "vault",
    "minio_api": "minio", "minio_console": "minio",
    "otel_grpc": "otel-collector", "otel_http": "otel-collector", "otel_metrics": "otel-collector",
    "otel_prometheus": "otel-collector", "otel_health": "otel-collector",
    "prometheus": "prometheus", "loki": "loki", "grafana": "grafana",
    "traefik_http": "traefik", "traefik_https": "traefik", "traefik_dashboard": "traefik",
}
SECRET_NAMES = (
    "POSTGRES_PASSWORD", "REDIS_PASSWORD", "MINIO_ROOT_PASSWORD", "MINIO_APP_SECRET_KEY",
    "GRAFANA_ADMIN_PASSWORD", "JWT_SECRET_KEY", "BACKUP_ENCRYPTION_KEY", "VAULT_TOKEN",
)

# Keys that belong to pyinfra or its connectors, not to this project.
PYINFRA_KEY_PREFIXES = ("_", "ssh_", "winrm_", "chroot_", "vagrant_", "terraform_", "docker_ssh_")


def _connector_keys() -> set[str]:
    from pyinfra.api.connectors import get_all_connectors
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


@dataclass(frozen=True)
class Settings:
    environment: str
    mnemos_user: str | None
    mnemos_root: str
    secrets_state_path: str
    vault_keys_path: str
    secrets_file: str | None
    secrets: dict
    preflight_strict: bool
    supported_os: dict
    min_memory_gib: int
    min_cpus: int
    min_disk_gib: int
    recommended_memory_gib: int
    recommended_cpus: int
    recommended_disk_gib: int
    apt_packages: list
    apt_optional_packages: list
    apt_cache_valid_time: int
    docker_source: str
    docker_apt_repo_url: str
    docker_apt_key_fingerprint: str
    docker_ce_packages: list
    docker_conflicting_packages: list
    docker_distro_packages: list
    docker_distro_compose_package: str
    compose_plugin_binary: str | None
    docker_min_version: str
    compose_min_version: str
    docker_daemon_config: dict
    docker_buildkit_profile: bool
    docker_start_timeout: int
    tools: list
    tool_downloads: dict
    trivy_apt_repo_url: str
    trivy_version: str
    claude_code_npm_package: str
    compose_project: str
    compose_profiles: list
    images: dict
    image_archives: list
    stack_subnets: dict
    bind_address: str
    publish_ports: bool
    ports: dict
    vault_tls: bool
    traefik_tls: bool
    traefik_log_level: str
    launch_stack: bool
    stack_wait_timeout: int
    vault_init: bool
    vault_key_shares: int
    vault_key_threshold: int
    vault_mount_path: str
    vault_policy_name: str
    vault_approle_name: str
    vault_token_period: str
    vault_revoke_root_token: bool
    minio_init: bool
    minio_buckets: dict
    minio_app_user: str
    dotenv_overrides: dict
    backup_enabled: bool
    backup_schedule: str
    backup_retention_days: int
    backup_encrypt: bool

    # ------------------------------------------------------------ derived views
    @property
    def enabled_services(self) -> list[str]:
        """Services whose layer or own name is in compose_profiles, in design order."""
        active = set(self.compose_profiles)
        return [s for s in SERVICES if s in active or SERVICE_LAYERS[s] in active]

    def service_enabled(self, service: str) -> bool:
        return service in self.enabled_services

    @property
    def published_ports(self) -> dict[str, int]:
        """Port key -> host port, for the enabled services that publish on the host."""
        out = {}
        for key, port in self.ports.items():
            service = PORT_SERVICES[key]
            if not self.service_enabled(service):
                continue
            if service not in FRONTEND_SERVICES and not self.publish_ports:
                continue
            out[key] = port
        return out

    def home_path(self, path: str, home: str) -> str:
        """Expand a leading "~/" against mnemos_user's home."""
        if path == "~":
            return home
        if path.startswith("~/"):
            return home.rstrip("/") + path[1:]
        return path


FIELD_NAMES = tuple(f.name for f in fields(Settings))


def load_defaults() -> dict[str, Any]:
    """The defaults of group_data/all.py, read the way pyinfra reads group data."""
    namespace = runpy.run_path(str(DEFAULTS_FILE))
    return {k: v for k, v in namespace.items() if not k.startswith("__")}


# ---------------------------------------------------------------- checks
_BOOL_WORDS = {"true": True, "yes": True, "1": True, "on": True,
               "false": False, "no": False, "0": False, "off": False}


class _Checker:
    def __init__(self, data: dict[str, Any]):
        self.data = data
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
        if ".." in Path(value).parts:
            return self.fail(key, value, "expected a path without '..'")
        self.out[key] = value.rstrip("/") or "/"

    def string_list(self, key: str, choices: tuple | None = None) -> None:
        value = self.data[key]
        if isinstance(value, str):  # --data tools=yq,trivy
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            return self.fail(key, self.data[key], "expected a list of strings")
        if choices:
            for v in value:
                if v not in choices:
                    self.fail(key, v, f"unknown entry; expected entries from {', '.join(choices)}"
                              f"{_closest(v, choices)}")
        self.out[key] = list(value)

    def mapping(self, key: str) -> dict | None:
        value = self.data[key]
        if not isinstance(value, dict):
            self.fail(key, value, "expected a dict")
            return None
        self.out[key] = dict(value)
        return value


def _closest(value: str, choices) -> str:
    value = str(value)
    match = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    if not match and len(value) >= 3:
        match = [c for c in choices if c.startswith(value)][:1]
    return f" (did you mean {match[0]!r}?)" if match else ""


def _version_tuple(text: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in text.split("."))
    except (ValueError, AttributeError):
        return None


def validate(data: dict[str, Any], controller_path_exists=lambda p: Path(p).is_file()) -> Settings:
    """Check `data` (host data layered over the defaults); raise SettingsError listing all problems."""
    defaults = load_defaults()
    merged = dict(defaults)
    merged.update(data)
    c = _Checker(merged)

    for key in sorted(data):
        if key in defaults or _is_pyinfra_key(key):
            continue
        c.problems.append(
            f"{key} = {data[key]!r}: unknown setting{_closest(key, FIELD_NAMES)}; "
            "the settings are listed in group_data/all.py"
        )

    c.string("environment", choices=ENVIRONMENTS)
    c.string("mnemos_user", allow_none=True)
    for key in ("mnemos_root", "secrets_state_path", "vault_keys_path"):
        c.path(key)
    _check_locations(c)
    c.path("secrets_file", allow_none=True)
    c.path("compose_plugin_binary", allow_none=True)
    if c.out.get("compose_plugin_binary") and not controller_path_exists(
        merged["compose_plugin_binary"]
    ):
        c.fail("compose_plugin_binary", merged["compose_plugin_binary"],
               "no such file on the machine running pyinfra (the controller)")
    for key in ("preflight_strict", "docker_buildkit_profile", "publish_ports",
                "vault_tls", "traefik_tls", "launch_stack", "backup_enabled", "backup_encrypt",
                "vault_init", "vault_revoke_root_token", "minio_init"):
        c.boolean(key)
    c.integer("vault_key_shares", low=1, high=10)
    c.integer("vault_key_threshold", low=1, high=10)
    if c.out.get("vault_key_threshold", 0) > c.out.get("vault_key_shares", 10):
        c.fail("vault_key_threshold", merged["vault_key_threshold"],
               f"must not exceed vault_key_shares ({merged['vault_key_shares']})")
    for key in ("vault_mount_path", "vault_policy_name", "vault_approle_name", "minio_app_user"):
        c.string(key)
    c.string("vault_token_period")
    if c.out.get("vault_token_period") and not re.fullmatch(r"\d+[smh]", c.out["vault_token_period"]):
        c.fail("vault_token_period", merged["vault_token_period"], "expected a duration like 768h")
    _check_buckets(c, merged)
    for key in ("min_memory_gib", "min_cpus", "min_disk_gib", "recommended_memory_gib",
                "recommended_cpus", "recommended_disk_gib"):
        c.integer(key, low=0)
    c.integer("apt_cache_valid_time", low=0)
    c.integer("docker_start_timeout", low=1, high=3600)
    c.integer("stack_wait_timeout", low=1, high=7200)
    c.integer("backup_retention_days", low=1, high=3650)
    c.string("docker_source", choices=DOCKER_SOURCES)
    for key in ("docker_apt_repo_url", "docker_distro_compose_package", "trivy_apt_repo_url",
                "trivy_version", "claude_code_npm_package", "backup_schedule"):
        c.string(key)
    c.string("docker_apt_key_fingerprint")
    c.string("compose_project")
    if c.out.get("compose_project") and not all(
        ch.isalnum() and ch.islower() or ch.isdigit() or ch in "-_" for ch in c.out["compose_project"]
    ):
        c.fail("compose_project", merged["compose_project"],
               "expected lowercase letters, digits, '-' and '_' (Compose project name rules)")
    for key in ("docker_min_version", "compose_min_version"):
        c.string(key)
        if key in c.out and _version_tuple(c.out[key]) is None:
            c.fail(key, merged[key], "expected a version like 24.0")
    for key in ("apt_packages", "apt_optional_packages", "docker_ce_packages",
                "docker_conflicting_packages", "docker_distro_packages"):
        c.string_list(key)
    c.string_list("tools", choices=KNOWN_TOOLS)
    c.string_list("image_archives")
    for archive in c.out.get("image_archives", []):
        if not archive.startswith("/"):
            c.fail("image_archives", archive, "expected an absolute path on the controller")
        elif not controller_path_exists(archive):
            c.fail("image_archives", archive, "no such file on the machine running pyinfra (the controller)")
    c.string_list("compose_profiles", choices=LAYERS + SERVICES)

    for key in ("docker_daemon_config", "tool_downloads"):
        c.mapping(key)
    _check_supported_os(c)
    _check_dotenv_overrides(c, merged)
    _check_schedule(c, merged)
    _check_traefik_log_level(c, merged)
    _check_bind_address(c, merged)
    _check_images(c, merged)
    _check_subnets(c, merged)
    _check_ports(c, merged)
    _check_secrets(c, merged)
    _check_tool_downloads(c, merged)

    if c.problems:
        raise SettingsError(c.problems)
    return Settings(**{name: c.out[name] for name in FIELD_NAMES})


def _check_buckets(c: _Checker, merged: dict) -> None:
    buckets = c.mapping("minio_buckets")
    if buckets is None:
        return
    for name, spec in buckets.items():
        key = f"minio_buckets[{name!r}]"
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", str(name)):
            c.fail(key, name, "expected an S3 bucket name (3-63 lowercase letters, digits, '.', '-')")
        if not isinstance(spec, dict) or not set(spec) <= {"versioning", "expire_days"}:
            c.fail(key, spec, "expected a dict with optional versioning (bool) and expire_days (int)")
        elif "expire_days" in spec and (not isinstance(spec["expire_days"], int)
                                        or isinstance(spec["expire_days"], bool)
                                        or spec["expire_days"] < 1):
            c.fail(f"{key}['expire_days']", spec["expire_days"], "expected a number of days >= 1")


def _check_schedule(c: _Checker, merged: dict) -> None:
    value = merged["backup_schedule"]
    if isinstance(value, str) and len(value.split()) != 5:
        c.fail("backup_schedule", value, "expected a 5-field cron expression like '0 3 * * *'")


def _check_traefik_log_level(c: _Checker, merged: dict) -> None:
    value = merged["traefik_log_level"]
    if isinstance(value, str) and value.upper() in TRAEFIK_LOG_LEVELS:
        c.out["traefik_log_level"] = value.upper()
    else:
        c.fail("traefik_log_level", value, f"expected one of {', '.join(TRAEFIK_LOG_LEVELS)}"
               f"{_closest(str(value).upper(), TRAEFIK_LOG_LEVELS)}")
    # .env's TRAEFIK_LOG_LEVEL only mirrors the setting: an override there would change nothing.
    overrides = merged["dotenv_overrides"]
    if isinstance(overrides, dict) and "TRAEFIK_LOG_LEVEL" in overrides:
        c.fail("dotenv_overrides['TRAEFIK_LOG_LEVEL']", overrides["TRAEFIK_LOG_LEVEL"],
               "set traefik_log_level instead (Traefik reads its level from "
               "config/traefik/traefik.yml, not from its environment)")


def _check_bind_address(c: _Checker, merged: dict) -> None:
    value = merged["bind_address"]
    if not isinstance(value, str):
        return c.fail("bind_address", value, "expected an IP address such as 127.0.0.1")
    try:
        c.out["bind_address"] = str(ipaddress.ip_address(value))
    except ValueError:
        c.fail("bind_address", value, "expected an IP address such as 127.0.0.1")


def _check_images(c: _Checker, merged: dict) -> None:
    images = c.mapping("images")
    if images is None:
        return
    for service in SERVICES:
        if service not in images:
            c.fail("images", sorted(images), f"missing an image for {service!r}")
    for service, ref in images.items():
        if service not in SERVICES:
            c.fail(f"images[{service!r}]", ref, f"unknown service{_closest(service, SERVICES)}")
            continue
        if not isinstance(ref, str) or not ref:
            c.fail(f"images[{service!r}]", ref, "expected an image reference")
            continue
        name = ref.split("@", 1)[0]
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else None
        if "@sha256:" not in ref and (tag is None or tag == "latest"):
            c.fail(f"images[{service!r}]", ref,
                   "expected a pinned tag or digest (not :latest, not untagged)")


def _check_subnets(c: _Checker, merged: dict) -> None:
    subnets = c.mapping("stack_subnets")
    if subnets is None:
        return
    parsed = {}
    for name in NETWORKS:
        if name not in subnets:
            c.fail("stack_subnets", sorted(subnets), f"missing the {name!r} network")
    for name, cidr in subnets.items():
        key = f"stack_subnets[{name!r}]"
        if name not in NETWORKS:
            c.fail(key, cidr, f"unknown network{_closest(name, NETWORKS)}; expected {', '.join(NETWORKS)}")
            continue
        try:
            if not isinstance(cidr, str):
                raise TypeError("not a string")
            net = ipaddress.ip_network(cidr, strict=True)
        except (ValueError, TypeError) as exc:
            c.fail(key, cidr, f"expected a network in CIDR notation like 172.20.0.0/24 ({exc})")
            continue
        if net.version != 4 or net.prefixlen > 29:
            c.fail(key, cidr, "expected an IPv4 network of /29 or larger")
            continue
        parsed[name] = net
    names = sorted(parsed)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if parsed[a].overlaps(parsed[b]):
                c.fail(f"stack_subnets[{b!r}]", str(parsed[b]),
                       f"overlaps stack_subnets[{a!r}] = {str(parsed[a])!r}; give each network its own range")


def _check_ports(c: _Checker, merged: dict) -> None:
    ports = c.mapping("ports")
    if ports is None:
        return
    seen: dict[int, str] = {}
    for key in PORT_SERVICES:
        if key not in ports:
            c.fail("ports", sorted(ports), f"missing the port {key!r}")
    for key, port in ports.items():
        label = f"ports[{key!r}]"
        if key not in PORT_SERVICES:
            c.fail(label, port, f"unknown port{_closest(key, PORT_SERVICES)}")
            continue
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            c.fail(label, port, "expected a port number between 1 and 65535")
            continue
        if port in seen:
            c.fail(label, port, f"already used by ports[{seen[port]!r}]; each port must be unique")
            continue
        seen[port] = key


MIN_SECRET_LENGTH = 16
WEAK_SECRETS = {"password", "changeme", "admin", "secret", "mnemos", "letmein", "123456", "qwerty"}


# Characters a supplied secret may hold: RFC 3986's unreserved set, so that a secret is the same
# text unquoted in .env, in every URL of .env (user:password@host) and in shell commands.
SECRET_CHARACTERS = re.compile(r"[A-Za-z0-9._~-]+")


def _check_secrets(c: _Checker, merged: dict) -> None:
    secrets = c.mapping("secrets")
    if secrets is None:
        return
    from mnemos_provision.secret_store import Secrets
    from_file = _read_secrets_file(c, merged)
    for name in sorted(set(from_file) & set(secrets)):
        c.fail(f"secrets[{name!r}]", "<hidden>",
               f"also given in secrets_file {merged['secrets_file']!r}; supply each secret once")
    secrets = {**secrets, **from_file}
    c.out["secrets"] = Secrets(secrets)  # never shown in a repr, a traceback or a log
    for name, value in secrets.items():
        key = f"secrets[{name!r}]"
        if name not in SECRET_NAMES:
            c.fail(key, "<hidden>", f"unknown secret{_closest(name, SECRET_NAMES)}; expected one of "
                   f"{', '.join(SECRET_NAMES)}")
            continue
        if not isinstance(value, str):
            c.fail(key, "<hidden>", "expected a string")
            continue
        lowered = value.lower()
        if (len(value) < MIN_SECRET_LENGTH or len(set(value)) < 6
                or any(w in lowered for w in WEAK_SECRETS)):
            c.fail(key, "<hidden>",
                   f"too weak: use at least {MIN_SECRET_LENGTH} characters, not a common word, e.g. "
                   "`openssl rand -hex 24`; or remove it and the deploy generates one")
            continue
        if not SECRET_CHARACTERS.fullmatch(value):
            c.fail(key, "<hidden>", "may hold only letters, digits and . _ ~ - (it goes unquoted "
                   "into .env and into URLs such as DATABASE_URL, where @ / ? % : # and others "
                   "would change the URL); e.g. `openssl rand -hex 24`")


def _check_tool_downloads(c: _Checker, merged: dict) -> None:
    downloads = merged["tool_downloads"]
    if not isinstance(downloads, dict):
        return
    for tool in ("yq", "hadolint"):
        spec = downloads.get(tool)
        key = f"tool_downloads[{tool!r}]"
        if not isinstance(spec, dict) or not {"version", "url", "sha256"} <= set(spec):
            c.fail(key, spec, "expected a dict with version, url and sha256")
            continue
        if not isinstance(spec["sha256"], dict) or not all(
            isinstance(v, str) and len(v) == 64 for v in spec["sha256"].values()
        ):
            c.fail(f"{key}['sha256']", spec["sha256"], "expected {arch: 64-hex-digit sha256}")


def _read_secrets_file(c: _Checker, merged: dict) -> dict:
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
        c.fail(key, merged[key], f"cannot be read on the machine running pyinfra ({exc.strerror})")
        return {}
    if info.st_mode & 0o077:
        c.fail(key, merged[key], f"has mode {oct(info.st_mode & 0o777)[2:]}: other accounts can "
               f"read it; run `chmod 600 {path}`")
        return {}
    import yaml
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        # the parser's message may quote the file's text: only its position is repeated here
        where = getattr(exc, "problem_mark", None)
        c.fail(key, merged[key], "is not valid YAML or JSON"
               + (f" (line {where.line + 1})" if where else ""))
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        c.fail(key, merged[key], "expected a mapping of secret names to values, e.g. "
               "POSTGRES_PASSWORD: <value>")
        return {}
    return {str(name): value for name, value in data.items()}


# Directories the tree or the secret state may never be, nor (the first group) lie inside.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
                "/run", "/sbin", "/sys", "/usr")
SYSTEM_DIRS = ("/", "/home", "/media", "/mnt", "/opt", "/root", "/srv", "/tmp", "/var",
               "/var/lib", "/var/tmp", "/var/log", "/dev/shm", "~")
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/shm", "/var/crash")


def _check_locations(c: _Checker) -> None:
    """mnemos_root and the state files: never /, a system directory or the home directory itself;
    the secret state outside the tree (which is a git repository) and out of shared directories."""
    def inside(path: str, parent: str) -> bool:
        return path == parent or path.startswith(parent.rstrip("/") + "/")

    for key in ("mnemos_root", "secrets_state_path", "vault_keys_path"):
        path = c.out.get(key)
        if path is None:
            continue
        if path in SYSTEM_DIRS or any(inside(path, d) for d in SYSTEM_TREES):
            c.fail(key, path, "is / , a system directory or the home directory itself; choose a "
                   "directory of its own, e.g. ~/mnemos or /srv/mnemos")
            continue
        if key != "mnemos_root":
            # a directory of its own is checked on the host (0700-like, the user's); here: never
            # straight in a directory every account can write
            if str(Path(path).parent) in WORLD_WRITABLE:
                c.fail(key, path, "lies straight in a directory every account can write; keep it "
                       "in a directory of its own, e.g. ~/.config/mnemos/")
                continue
            root = c.out.get("mnemos_root")
            if root and inside(path, root):
                c.fail(key, path, f"lies inside mnemos_root ({root}), a git repository whose files "
                       "get copied and committed; keep it outside, e.g. ~/.config/mnemos/")


def _check_supported_os(c: _Checker) -> None:
    value = c.mapping("supported_os")
    if value is None:
        return
    for name, versions in value.items():
        if not isinstance(name, str) or not isinstance(versions, (list, tuple)) or not all(
                isinstance(v, str) for v in versions):
            c.fail(f"supported_os[{name!r}]", versions,
                   'expected a list of version strings, e.g. {"debian": ["12"]}')


def _check_dotenv_overrides(c: _Checker, merged: dict) -> None:
    """Keys of .env.example only, string values on one line, no secret set or copied."""
    from mnemos_provision import dotenv
    overrides = c.mapping("dotenv_overrides")
    if overrides is None:
        return
    secret_names = set(dotenv.SECRET_VARS) | set(dotenv.SECRET_LENGTHS)
    for name, value in overrides.items():
        key = f"dotenv_overrides[{name!r}]"
        if name not in dotenv.NAMES:
            c.fail(key, value, f"not a variable of .env.example{_closest(str(name), dotenv.NAMES)}")
        elif name in secret_names:
            c.fail(key, "<hidden>", "is a secret: supply it in secrets_file (or `secrets`), not as "
                   "an override")
        elif not isinstance(value, str):
            c.fail(key, value, f'expected a string, e.g. "{value}"')
        elif "\n" in value or "\r" in value or "\0" in value:
            c.fail(key, value, "expected one line (no newline): the value is written into .env and "
                   "into configs such as prometheus.yml")
        elif any(ref in secret_names for ref in dotenv.references(value)):
            c.fail(key, value, "refers to a secret; a secret may reach only .env (0600), never a "
                   "config file or the output")
