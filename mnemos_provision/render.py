"""
Renders the whole MNEMOS tree on the controller: every directory of the design and every file of
templates/mnemos/ (which mirrors the tree: templates/mnemos/<path>.j2 -> <mnemos_root>/<path>).

`render_tree` is pure: settings + secrets in, a list of TreeEntry out. Nothing here touches a host;
roles/tree.py hands the entries to the files.tree operation.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jinja2
import yaml

from mnemos_provision import dotenv, stack
from mnemos_provision.settings import REPO_ROOT, Settings
from mnemos_provision.tree_entry import TreeEntry

TEMPLATE_ROOT = REPO_ROOT / "templates" / "mnemos"
# Each service's block of docker-compose.yml: templates/services/<name>.yml.j2 (the registry's
# `compose`), included as "services/<name>.yml.j2"; not a file of the tree.
SERVICE_TEMPLATE_ROOT = REPO_ROOT / "templates"
GENERIC_SERVICE_TEMPLATE = "services/generic.yml.j2"

# The design's `mkdir -p` list (Project Structure -> Directory Layout), in its order, without the
# services' own directories (docker/<name>, config/<name>...: their records' `dirs`).
DESIGN_DIRS = [
    "src", "docker", "config", "scripts", "data", "tests", "docs", ".github",
    *[f"src/{d}" for d in ("soul", "genome", "cortex", "neuron", "engram", "wraith", "relay",
                           "synkron", "trace", "cradle")],
    "src/common",
    *[f"src/common/{d}" for d in ("auth", "logging", "metrics", "tracing", "errors", "models")],
    "config/alertmanager",
    *[f"tests/{d}" for d in ("unit", "integration", "e2e", "load", "security", "fixtures")],
    *[f"docs/{d}" for d in ("api", "architecture", "operations", "development")],
    *[f"scripts/{d}" for d in ("bootstrap", "backup", "migration", "monitoring")],
    ".github/workflows",
]
# data/<d>: these, then each service's (its record's data/<name>)
DESIGN_DATA_DIRS = ["models", "artifacts", "logs", "backups", "uploads"]
DATABASES = ["mnemos_cortex", "mnemos_genome", "mnemos_synkron"]
# The uid and gid Traefik runs as (the registry's: its Helm chart's), for the compose block and
# the owner of its TLS key (roles/tree.py).
TRAEFIK_UID = stack.TRAEFIK_UID

EXECUTABLE = {"docker/postgres/init-db.sh", "scripts/health-check.sh",
              "scripts/backup/backup-all.sh", "scripts/backup/restore-all.sh"}
SECRET_FILES = {".env", ".backup-keys"}  # .backup-keys: earlier backup keys (docs/backups.md)


def data_dirs() -> list[str]:
    """The directories of data/, by name."""
    return DESIGN_DATA_DIRS + [d.removeprefix("data/") for s in stack.REGISTRY for d in s.dirs
                               if d.startswith("data/")]


def all_dirs() -> list[str]:
    dirs = (list(DESIGN_DIRS) + [d for s in stack.REGISTRY for d in s.dirs]
            + [f"data/{d}" for d in data_dirs()])
    for template in template_paths():
        parent = str(Path(template).parent)
        while parent not in (".", ""):
            dirs.append(parent)
            parent = str(Path(parent).parent)
    seen: dict[str, None] = {}
    for d in sorted(dirs, key=lambda p: (p.count("/"), p)):
        seen.setdefault(d, None)
    return list(seen)


def template_paths() -> list[str]:
    """Output paths of every template, relative to the tree root."""
    return sorted(
        str(p.relative_to(TEMPLATE_ROOT))[: -len(".j2")]
        for p in TEMPLATE_ROOT.rglob("*.j2")
    )


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """
    Jinja's own cache of compiled templates (a 0700 directory of the user's under the temporary
    directory, checked by Jinja): compiling every template costs about 60 ms a run. Templates,
    not rendered output, are cached: no secret is written there.
    """
    try:
        return jinja2.FileSystemBytecodeCache()
    except (OSError, RuntimeError):
        return None


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(TEMPLATE_ROOT), str(SERVICE_TEMPLATE_ROOT)]),
        bytecode_cache=_bytecode_cache(),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def dotenv_context(settings: Settings, home: str) -> dict[str, str]:
    production_like = settings.environment != "development"
    return {
        "environment": settings.environment,
        "debug": "false" if production_like else "true",
        "dev_flag": "false" if production_like else "true",
        "vault_scheme": "https" if settings.vault_tls else "http",
        "vault_skip_verify": "true" if settings.vault_tls else "false",
        "tls_enabled": "true" if (settings.vault_tls or settings.traefik_tls) else "false",
        "backup_enabled": str(settings.backup_enabled).lower(),
        "backup_schedule": settings.backup_schedule,
        "backup_retention_days": str(settings.backup_retention_days),
        "backup_storage_path": settings.home_path(settings.mnemos_root, home) + "/data/backups",
        "backup_encrypt": str(settings.backup_encrypt).lower(),
        "compose_project": settings.compose_project,
        "minio_app_user": settings.minio_app_user,
        "compose_profiles": ",".join(settings.compose_profiles),
        "traefik_log_level": settings.traefik_log_level,
    }


def _check_host(bind_address: str) -> str:
    """How health-check.sh, on the host, reaches a port bound to `bind_address`."""
    host = "127.0.0.1" if bind_address in ("0.0.0.0", "::") else bind_address
    return f"[{host}]" if ":" in host else host


def _http_lines(url: str, accept: str, options: str = "") -> list[str]:
    return [
        f'code=$(http_ok "{url}"{options})',
        f'case "$code" in {accept}) ;; '
        f'*) echo "{url} answered ${{code:-nothing}}"; return 1 ;; esac',
    ]


def _peer_lines(project: str, peer: str, url: str) -> list[str]:
    """`url` asked with wget from the container of `peer` (on a network it shares)."""
    return [f"docker exec {project}-{peer} wget -q -T 5 -O /dev/null {url} 2>/dev/null "
            f'|| {{ echo "{url} did not answer 200 (asked from {project}-{peer})"; '
            'return 1; }']


def _service_check(service: stack.Service, settings: Settings, host: str,
                   published: dict[str, int]) -> list[str]:
    """The lines of one service's check (its record's Health): its commands, then its HTTP
    endpoint on the published port, else from a peer container; else nothing more (the
    container's state is the check)."""
    health, project = service.health, settings.compose_project
    lines = [c.replace("{container}", service.container_name(project)) for c in health.commands]
    if health.http:
        key, path, accept = health.http
        if key in published:
            port = published[key]
            if health.tls and getattr(settings, health.tls[0]):
                # TLS only: asked by a name of its certificate, verified with the tree's CA, sent
                # to the address the port is bound to
                _, ca, name = health.tls
                return lines + _http_lines(f"https://{name}:{port}{path}", accept,
                                           f" --cacert {ca} --resolve {name}:{port}:{host}")
            return lines + _http_lines(f"http://{host}:{port}{path}", accept)
    peer = next((p for p in health.peers if settings.service_enabled(p)), None)
    if health.internal_url and peer:
        return lines + _peer_lines(project, peer, health.internal_url)
    return lines


def _health_checks(settings: Settings) -> list[dict]:
    """scripts/health-check.sh's catalogue: one check per enabled service, from the registry."""
    host, published = _check_host(settings.bind_address), settings.published_ports
    checks = []
    for name in settings.enabled_services:
        service = stack.service(name)
        checks.append({"label": service.label, "fn": name.replace("-", "_"),
                       "container": service.container or name,
                       "lines": _service_check(service, settings, host, published)})
    return checks


class RenderError(ValueError):
    """A rendered file that its own format does not accept (a bad setting made it invalid)."""


# Texts already parsed in this run: hosts with the same settings render the same configs, and a
# fleet run parses each once (libyaml's parser when PyYAML has it, the pure-Python one otherwise).
_PARSED: set[tuple[str, str]] = set()
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_format(rel: str, text: str) -> None:
    """Parse each rendered YAML and JSON file before it can be written."""
    key = (rel, hashlib.sha256(text.encode()).hexdigest())
    if key in _PARSED:
        return
    try:
        if rel.endswith((".yml", ".yaml")):
            yaml.load(text, Loader=_YAML_LOADER)  # a safe loader: libyaml or Python
        elif rel.endswith(".json"):
            json.loads(text)
    except (yaml.YAMLError, ValueError) as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "lineno", None)
        line = getattr(mark, "line", None)
        where = f" (line {line + 1})" if line is not None else (
            f" (line {mark})" if isinstance(mark, int) else "")
        raise RenderError(f"{rel} would not be valid {'JSON' if rel.endswith('.json') else 'YAML'}"
                          f"{where}: check the settings it renders (e.g. dotenv_overrides)"
                          ) from None
    _PARSED.add(key)


def render_tree(settings: Settings, home: str, secrets: dict[str, str],
                backup_keyring: list[str] | tuple[str, ...] = ()) -> list[TreeEntry]:
    """Every directory and file of the tree, rendered. `home` is mnemos_user's home directory;
    `backup_keyring`, the earlier BACKUP_ENCRYPTION_KEYs (.backup-keys: Decision.backup_keyring)."""
    for key in backup_keyring:
        if not key or any(c.isspace() for c in key) or key.startswith("#"):
            raise RenderError(".backup-keys: an earlier BACKUP_ENCRYPTION_KEY of the secret state "
                              "is empty, holds a space or starts with #: fix the state's "
                              "previous:BACKUP_ENCRYPTION_KEY entry (one key per line)")
    try:
        env_values = dotenv.resolve(dotenv_context(settings, home), secrets,
                                    settings.dotenv_overrides, with_secrets=True)
        example_values = dotenv.resolve(dotenv_context(settings, home), {}, {}, with_secrets=False)
    except dotenv.ResolveError as exc:
        raise RenderError(f".env: {exc}; check dotenv_overrides") from None
    for rel, values in ((".env", env_values), (".env.example", example_values)):
        for name, value in values.items():
            if reason := dotenv.problem(value):
                shown = "<hidden>" if name in dotenv.SECRET_BEARING else repr(value)
                raise RenderError(f"{rel}: {name} = {shown} cannot be written: {reason} (check "
                                  "the settings it comes from: dotenv_overrides, mnemos_root...)")
    bind = settings.bind_address
    context = {
        "s": settings,
        "published": settings.published_ports,
        "bind_address_port": (f"[{bind}]:" if ":" in bind else f"{bind}:"),
        "sections": dotenv.SECTIONS,
        "values": env_values,
        "example": example_values,
        # Configs may read non-secret .env values (e.g. LOKI_RETENTION_PERIOD), overrides applied;
        # never one that holds a secret (the secrets, and the URLs built from them).
        "env": {k: v for k, v in env_values.items() if k not in dotenv.SECRET_BEARING},
        "quote": dotenv.quote,
        "backup_keyring": list(backup_keyring),
        "databases": DATABASES,
        "traefik_uid": TRAEFIK_UID,
        "data_dirs": data_dirs(),
        "checks": _health_checks(settings),
        "backup_services": [s.name for s in stack.REGISTRY
                            if s.backup and settings.service_enabled(s.name)],
        "services": [{"service": s, "template": s.compose or GENERIC_SERVICE_TEMPLATE}
                     for s in stack.REGISTRY],
    }

    jenv = _environment()
    entries = [TreeEntry(d, "directory", "755") for d in all_dirs()]
    for rel in template_paths():
        text = jenv.get_template(rel + ".j2").render(**context)
        _check_format(rel, text)
        if rel in SECRET_FILES:
            mode = "600"
        elif rel in EXECUTABLE:
            mode = "755"
        else:
            mode = "644"
        entries.append(TreeEntry(rel, "file", mode, text.encode(), secret=rel in SECRET_FILES))
    for d in ["data"] + [f"data/{d}" for d in data_dirs()]:
        entries.append(TreeEntry(f"{d}/.gitkeep", "file", "644", b""))
    return entries
