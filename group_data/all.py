"""
Every setting of the deploy with its default and a one-line doc. Written from the specification
(`Settings` in mnemos_provision/settings.py) by scripts/sync-readme-defaults: change a setting
there, not here. Environments (group_data/<env>.py), inventories and `--data key=value` override
these; a dict setting is merged key by key, so a layer names only the entries it changes (an
entry set to None removes it). The result is validated before any operation runs.
"""

# ---------------------------------------------------------------- who, where, which environment
# development | staging | production: ENVIRONMENT in .env, TLS and exposure defaults
environment = "development"
# account that owns the tree and joins the docker group; None = the user pyinfra connects as (under
# sudo: the user who ran sudo)
mnemos_user = None
# the MNEMOS tree; "~/" is mnemos_user's home; absolute paths only otherwise
mnemos_root = "~/mnemos"
# generated secrets (0600, outside the tree and git); .env is rendered from it
secrets_state_path = "~/.config/mnemos/secrets.json"
# Vault unseal keys and root token (0600, outside git)
vault_keys_path = "~/.config/mnemos/vault-keys.json"
# a 0600 YAML/JSON file on the controller with the secrets you supply ({NAME: value}); read by the
# deploy, never part of pyinfra's data (which --debug prints)
secrets_file = None
# secrets supplied as data (printed by pyinfra at --debug: prefer secrets_file); supplied secrets
# win over generated ones on a new install; weak ones are refused
secrets = {}
# what deploys/rotate.py rotates: postgres, redis, minio-app (MinIO's application user), minio-root,
# grafana (its admin), jwt, vault-token, backup-key (earlier keys kept for old archives); new values
# set in the service, the state, .env and Vault; read by that deploy only (docs/rotation.md)
rotate = []

# ---------------------------------------------------------------- preflight
# below-minimum memory/CPUs/disk fail the run; False turns them into warnings
preflight_strict = True
# distributions and versions the deploy is tested for
supported_os = {"ubuntu": ["22.04", "24.04"], "debian": ["12"]}
min_memory_gib = 8  # design minimum RAM
min_cpus = 4  # design minimum CPU cores
min_disk_gib = 100  # design minimum free disk where mnemos_root lives
recommended_memory_gib = 16  # design recommendation (below: warning only)
recommended_cpus = 8  # design recommendation (below: warning only)
recommended_disk_gib = 500  # design recommendation (below: warning only)

# ---------------------------------------------------------------- packages
# the design's "essential tools" (python3.11 is added where the distribution has it)
apt_packages = [
    "build-essential", "git", "curl", "wget", "jq", "vim", "htop", "net-tools", "python3-pip",
    "python3-venv", "apt-transport-https", "ca-certificates", "gnupg", "lsb-release", "shellcheck",
    "make", "openssl", "cron", "tree",
]
# installed only where the distribution has them
apt_optional_packages = ["python3.11", "software-properties-common"]
# seconds an apt cache stays fresh: a re-run within it does not refresh (zero changes)
apt_cache_valid_time = 86400

# ---------------------------------------------------------------- docker
# auto | desktop | docker-ce | distro: where Docker Engine and Compose v2 come from
docker_source = "auto"
docker_apt_repo_url = "https://download.docker.com/linux"  # Docker's apt repository (docker-ce)
# Docker's release key; the keyring is refused if it differs
docker_apt_key_fingerprint = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
docker_ce_packages = [  # docker-ce set
    "docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin", "docker-compose-plugin",
]
docker_conflicting_packages = [  # removed for docker-ce
    "docker.io", "docker-doc", "docker-compose", "docker-compose-v2", "podman-docker", "containerd",
    "runc",
]
# distro set (plus docker_distro_compose_package where the distribution has one)
docker_distro_packages = ["docker.io"]
# the distribution's Compose v2 package (Ubuntu has it; Debian 12 does not); not used with
# compose_plugin_binary
docker_distro_compose_package = "docker-compose-v2"
# path ON THE CONTROLLER of a docker-compose v2 binary to install as the CLI plugin (air-gapped
# hosts)
compose_plugin_binary = None
docker_min_version = "24.0"  # design requirement for the engine
compose_min_version = "2.20"  # design requirement for Compose v2
# /etc/docker/daemon.json: log rotation as in the design; no traffic between containers on the
# default bridge (icc), containers kept running while the engine restarts (live-restore), published
# ports by NAT instead of docker-proxy (userland-proxy): CIS Docker Benchmark 2.2, 2.15, 2.16, see
# docs/cis-docker-benchmark.md; an entry set to None removes it
docker_daemon_config = {
    "log-driver": "json-file",
    "log-opts": {"max-size": "10m", "max-file": "3"},
    "icc": False,
    "live-restore": True,
    "userland-proxy": False,
}
# no-new-privileges for every container of the engine (daemon.json, CIS 2.14). Off by default: on a
# workstation it also reaches the user's other containers, where sudo, su and file capabilities then
# stop working; the stack's services set it themselves (Vault, which needs its file capability, opts
# out)
docker_no_new_privileges = False
# export DOCKER_BUILDKIT=1 in mnemos_user's ~/.profile, as the design does
docker_buildkit_profile = True
docker_start_timeout = 60  # seconds to wait for dockerd to answer after starting it

# ---------------------------------------------------------------- tools of the design
tools = ["yq", "hadolint", "trivy", "claude-code"]  # which extra tools to install; [] installs none
# pinned single-binary downloads, verified by sha256 per architecture (an architecture without a
# checksum is refused)
tool_downloads = {
    "yq": {
        "version": "v4.44.3",
        "url": "https://github.com/mikefarah/yq/releases/download/{version}/yq_linux_{arch}",
        "sha256": {"amd64": "a2c097180dd884a8d50c956ee16a9cec070f30a7947cf4ebf87d5f36213e9ed7"},
    },
    "hadolint": {
        "version": "v2.12.0",
        "url": "https://github.com/hadolint/hadolint/releases/download/{version}/hadolint-Linux-{uname_arch}",
        "sha256": {"amd64": "56de6d5e5ec427e17b74fa48d51271c7fc0d61244bf5c90e828aab8362d55010"},
    },
}
# trivy's signed apt repository, as in the design
trivy_apt_repo_url = "https://aquasecurity.github.io/trivy-repo/deb"
trivy_version = "0.58.1"  # pinned trivy package version
# Claude Code CLI, through npm (login stays the user's step)
claude_code_npm_package = "@anthropic-ai/claude-code@2.0.14"
# where npm installs the Claude Code CLI (npm install -g --prefix): the package in
# <prefix>/lib/node_modules, the `claude` command in <prefix>/bin, which must be on mnemos_user's
# PATH (/usr/local/bin is on Debian's and Ubuntu's default PATH; /usr/local is also npm's own global
# prefix there)
claude_code_npm_prefix = "/usr/local"

# ---------------------------------------------------------------- the stack
compose_project = "mnemos"  # COMPOSE_PROJECT_NAME: prefix of containers, networks and volumes
# enabled groups (data, observability, gateway) or single services
compose_profiles = ["data", "observability", "gateway"]
images = {  # every image pinned; point them at a mirror for air-gapped hosts
    "postgres": "postgres:16.11-alpine",
    "redis": "redis:7.4.6-alpine",
    "vault": "hashicorp/vault:1.21.0",
    "minio": "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z",
    "otel-collector": "otel/opentelemetry-collector-contrib:0.158.0",
    "prometheus": "prom/prometheus:v3.13.0",
    "loki": "grafana/loki:3.7.0",
    "grafana": "grafana/grafana:13.0.0",
    "traefik": "traefik:v3.6.2",
}
# a registry mirror or private registry (host[:port][/prefix]) every image of `images` is pulled
# from: its registry host is replaced, its path, tag and digest kept (redis:7.4.6-alpine ->
# <image_registry>/library/redis:7.4.6-alpine); None = each image's own registry
image_registry = None
# paths ON THE CONTROLLER of `docker save` archives, loaded when an image of `images` is missing
# (air-gapped hosts)
image_archives = []
# design subnets, plus the publishing network (fixed too: a dynamic one can take a design range)
stack_subnets = {
    "frontend": "172.20.0.0/24",
    "backend": "172.21.0.0/24",
    "data": "172.22.0.0/24",
    "hostaccess": "172.23.0.0/24",
}
# host address every published port binds to; 0.0.0.0 exposes the stack to the network
bind_address = "127.0.0.1"
# publish every service port on bind_address (via the non-internal "hostaccess" network); False:
# only Grafana and Traefik publish, the rest is reached with docker compose exec
publish_ports = True
ports = {  # host ports (published on bind_address)
    "postgres": 5432,
    "redis": 6379,
    "vault": 8200,
    "minio_api": 9000,
    "minio_console": 9001,
    "otel_grpc": 4317,
    "otel_http": 4318,
    "otel_metrics": 8888,
    "otel_prometheus": 8889,
    "otel_health": 13133,
    "prometheus": 9090,
    "loki": 3100,
    "grafana": 3000,
    "traefik_http": 80,
    "traefik_https": 443,
    "traefik_dashboard": 8080,
}
# Vault listener TLS (self-signed in the tree); False = tls_disable, for development only
vault_tls = False
# self-signed certificate for Traefik's websecure entrypoint in config/traefik/certs
traefik_tls = False
# TRACE | DEBUG | INFO | WARN | ERROR | FATAL | PANIC: log.level in config/traefik/traefik.yml
# (Traefik ignores TRAEFIK_LOG_LEVEL there)
traefik_log_level = "INFO"
launch_stack = True  # start the compose stack and wait until it is healthy
stack_wait_timeout = 300  # seconds to wait for every enabled service to be healthy
# values for non-secret .env variables (e.g. {"LOG_LEVEL": "DEBUG"}); keys must exist in
# .env.example
dotenv_overrides = {}

# ---------------------------------------------------------------- Vault (SOUL) and MinIO (ENGRAM)
vault_init = True  # initialize (once), unseal (every run) and configure Vault when it is enabled
vault_key_shares = 5  # unseal key shares created at initialization
vault_key_threshold = 3  # keys needed to unseal
vault_mount_path = "mnemos/"  # kv-v2 mount of the service secrets (design: VAULT_MOUNT_PATH)
vault_policy_name = "mnemos-services"  # policy that lets the MNEMOS services read their secrets
vault_approle_name = "mnemos-services"  # AppRole role of the MNEMOS services
vault_token_period = "768h"  # period of the renewable scoped token written to .env as VAULT_TOKEN
vault_revoke_root_token = False  # revoke the root token after set-up (later runs then only unseal)
minio_init = True  # create buckets and the application user when MinIO is enabled
minio_buckets = {  # private buckets; versioning and expiry (days, current and noncurrent versions)
    "mnemos-artifacts": {"versioning": True},
    "mnemos-models": {"versioning": True},
    "mnemos-backups": {"expire_days": 60},
    "mnemos-uploads": {},
}
# the services' MinIO user (AWS_ACCESS_KEY_ID), limited to minio_buckets
minio_app_user = "mnemos-app"

# ---------------------------------------------------------------- backups
backup_enabled = True  # install the backup schedule
backup_schedule = "0 3 * * *"  # cron expression (design: daily at 3 AM)
backup_retention_days = 30  # archives older than this are pruned
backup_encrypt = True  # encrypt archives with BACKUP_ENCRYPTION_KEY
