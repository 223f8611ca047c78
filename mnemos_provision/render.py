"""
Renders the whole MNEMOS tree on the controller: every directory of the design and every file of
templates/mnemos/ (which mirrors the tree: templates/mnemos/<path>.j2 -> <mnemos_root>/<path>).

`render_tree` is pure: settings + secrets in, a list of TreeEntry out. Nothing here touches a host;
roles/tree.py hands the entries to the files.tree operation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml

from mnemos_provision import dotenv
from mnemos_provision.settings import REPO_ROOT, Settings

TEMPLATE_ROOT = REPO_ROOT / "templates" / "mnemos"

# The design's `mkdir -p` list (Project Structure -> Directory Layout), in its order.
DESIGN_DIRS = [
    "src", "docker", "config", "scripts", "data", "tests", "docs", ".github",
    *[f"src/{d}" for d in ("soul", "genome", "cortex", "neuron", "engram", "wraith", "relay",
                           "synkron", "trace", "cradle")],
    "src/common",
    *[f"src/common/{d}" for d in ("auth", "logging", "metrics", "tracing", "errors", "models")],
    *[f"docker/{d}" for d in ("postgres", "redis", "vault", "minio", "traefik", "otel")],
    *[f"config/{d}" for d in ("traefik", "prometheus", "grafana", "loki", "vault", "alertmanager")],
    *[f"config/grafana/{d}" for d in ("dashboards", "datasources", "provisioning")],
    *[f"tests/{d}" for d in ("unit", "integration", "e2e", "load", "security", "fixtures")],
    *[f"docs/{d}" for d in ("api", "architecture", "operations", "development")],
    *[f"scripts/{d}" for d in ("bootstrap", "backup", "migration", "monitoring")],
    ".github/workflows",
]
DATA_DIRS = ["models", "artifacts", "logs", "backups", "uploads",
             "postgres", "redis", "vault", "minio", "prometheus", "loki", "grafana"]
# Directories the rendered configs need beyond the design's list.
EXTRA_DIRS = ["docker/vault/config", "docker/vault/scripts", "config/prometheus/alerts",
              "config/traefik/dynamic", "config/traefik/certs"]
DATABASES = ["mnemos_cortex", "mnemos_genome", "mnemos_synkron"]
# The uid and gid Traefik runs as (those of Traefik's own Helm chart, podSecurityContext): not
# root, and the group that may read its TLS key (roles/tree.py).
TRAEFIK_UID = 65532

EXECUTABLE = {"docker/postgres/init-db.sh", "scripts/health-check.sh",
              "scripts/backup/backup-all.sh", "scripts/backup/restore-all.sh"}
SECRET_FILES = {".env"}


@dataclass(frozen=True)
class TreeEntry:
    path: str  # relative to mnemos_root
    kind: str  # "directory" | "file"
    mode: str  # octal, as stat prints it ("755", "600")
    content: bytes | None = None
    secret: bool = False  # never shown in a diff or in output


def all_dirs() -> list[str]:
    dirs = list(DESIGN_DIRS) + [f"data/{d}" for d in DATA_DIRS] + EXTRA_DIRS
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
        loader=jinja2.FileSystemLoader(str(TEMPLATE_ROOT)),
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


def _health_checks(settings: Settings) -> list[dict]:
    host = "127.0.0.1" if settings.bind_address in ("0.0.0.0", "::") else settings.bind_address
    if ":" in host:
        host = f"[{host}]"
    published = settings.published_ports

    def http(port_key: str, path: str, accept: str = "200") -> list[str]:
        if port_key not in published:
            return []  # not published in this environment: the container state is the check
        url = f"http://{host}:{published[port_key]}{path}"
        return [
            f'code=$(http_ok "{url}")',
            f'case "$code" in {accept}) ;; '
            f'*) echo "{url} answered ${{code:-nothing}}"; return 1 ;; esac',
        ]

    p = settings.compose_project

    def collector() -> list[str]:
        """
        The collector's image is FROM scratch: no check can run inside it, so its health_check
        extension (0.0.0.0:13133 in the container) is asked from outside: through the published
        port, else from a container on one of its networks whose image has wget (Prometheus and
        Grafana: their own healthchecks use it), by the collector's name on Docker's DNS.
        """
        if "otel_health" in published:
            return http("otel_health", "/")
        for peer in ("prometheus", "grafana"):  # both share the data network with the collector
            if settings.service_enabled(peer):
                url = "http://otel-collector:13133/"
                return [f"docker exec {p}-{peer} wget -q -T 5 -O /dev/null {url} 2>/dev/null "
                        f'|| {{ echo "{url} did not answer 200 (asked from {p}-{peer})"; '
                        'return 1; }']
        return []  # no peer with wget enabled: the container state is the check

    catalogue = {
        "postgres": ("PostgreSQL", "postgres", [
            f"docker exec {p}-postgres "
            "sh -c 'pg_isready -q -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\"' "
            '|| { echo "pg_isready failed"; return 1; }',
        ]),
        "redis": ("Redis", "redis", [
            f"docker exec {p}-redis "
            "sh -c 'REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli ping' 2>/dev/null "
            '| grep -q PONG || { echo "no PONG"; return 1; }',
        ]),
        "vault": ("Vault", "vault", [
            f"docker exec {p}-vault vault status >/dev/null 2>&1; rc=$?",
            '[ "$rc" -eq 2 ] && { echo "sealed: run the deploy to unseal"; return 1; }',
            '[ "$rc" -eq 0 ] || { echo "vault status failed ($rc)"; return 1; }',
            *http("vault", "/v1/sys/health", "200|429"),
        ]),
        "minio": ("MinIO", "minio", http("minio_api", "/minio/health/live")),
        "otel-collector": ("OTEL Collector", "otel", collector()),
        "prometheus": ("Prometheus", "prometheus", http("prometheus", "/-/healthy")),
        "loki": ("Loki", "loki", http("loki", "/ready")),
        "grafana": ("Grafana", "grafana", http("grafana", "/api/health")),
        "traefik": ("Traefik", "traefik", http("traefik_dashboard", "/ping")),
    }
    checks = []
    for service in settings.enabled_services:
        label, container, lines = catalogue[service]
        checks.append({"label": label, "fn": service.replace("-", "_"),
                       "container": container, "lines": lines})
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


def render_tree(settings: Settings, home: str, secrets: dict[str, str]) -> list[TreeEntry]:
    """Every directory and file of the tree, rendered. `home` is mnemos_user's home directory."""
    env_values = dotenv.resolve(dotenv_context(settings, home), secrets,
                                settings.dotenv_overrides, with_secrets=True)
    example_values = dotenv.resolve(dotenv_context(settings, home), {}, {}, with_secrets=False)
    bind = settings.bind_address
    context = {
        "s": settings,
        "published": settings.published_ports,
        "bind_address_port": (f"[{bind}]:" if ":" in bind else f"{bind}:"),
        "sections": dotenv.SECTIONS,
        "values": env_values,
        "example": example_values,
        # Configs may read non-secret .env values (e.g. LOKI_RETENTION_PERIOD), overrides applied.
        "env": {k: v for k, v in env_values.items() if k not in dotenv.SECRET_VARS},
        "quote": dotenv.quote,
        "databases": DATABASES,
        "traefik_uid": TRAEFIK_UID,
        "data_dirs": DATA_DIRS,
        "checks": _health_checks(settings),
        "backup_services": [x for x in ("postgres", "redis", "vault", "minio")
                            if settings.service_enabled(x)] + ["grafana-provisioning"],
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
    for d in ["data"] + [f"data/{d}" for d in DATA_DIRS]:
        entries.append(TreeEntry(f"{d}/.gitkeep", "file", "644", b""))
    return entries
