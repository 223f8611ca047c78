"""
Settings validation. Each bad input is run through the real CLI (`pyinfra @local deploys/tree.py`)
and must stop with a message naming the key, the value and the fix, exit non-zero, and leave the
target directory untouched (no operation ran).
"""

from __future__ import annotations

import os

import pytest

from mnemos_provision.render import TRAEFIK_UID
from mnemos_provision.settings import SettingsError, validate
from roles.docker_engine import daemon_config
from tests.conftest import REPO, run

pytestmark = pytest.mark.unit

BAD_INPUTS = [
    # (--data arguments, fragments the message must contain)
    (["mnemos_roots=/tmp/x"], ["mnemos_roots", "unknown setting", "did you mean 'mnemos_root'"]),
    (["docker_source=docker_ce"],
     ["docker_source = 'docker_ce'", "expected one of auto, desktop, docker-ce, distro",
      "did you mean 'docker-ce'"]),
    (["bind_address=localhost"], ["bind_address = 'localhost'", "expected an IP address"]),
    (["mnemos_root=mnemos"], ["mnemos_root = 'mnemos'", "absolute path or one starting with ~/"]),
    (["launch_stack=maybe"], ["launch_stack = 'maybe'", "expected true or false"]),
    (["stack_wait_timeout=soon"], ["stack_wait_timeout = 'soon'", "expected a whole number"]),
    (["environment=prod"],
     ["environment = 'prod'", "expected one of development, staging, production",
      "did you mean 'production'"]),
    (["compose_plugin_binary=/nonexistent/docker-compose"],
     ["compose_plugin_binary", "no such file on the machine running pyinfra"]),
    (["tools=yq,trivvy"], ["tools = 'trivvy'", "unknown entry", "did you mean 'trivy'"]),
    (["compose_profiles=data,observabilty"],
     ["compose_profiles = 'observabilty'", "did you mean 'observability'"]),
    (["backup_schedule=daily"], ["backup_schedule = 'daily'", "5-field cron expression"]),
    # dotenv_overrides: keys of .env.example, one-line strings, no secret set or referenced
    (['dotenv_overrides={"LOG_LEVL": "DEBUG"}'],
     ["dotenv_overrides['LOG_LEVL']", "not a variable of .env.example",
      "did you mean 'LOG_LEVEL'"]),
    (['dotenv_overrides={"LOG_LEVEL": 5}'],
     ["dotenv_overrides['LOG_LEVEL'] = 5", "expected a string"]),
    (['dotenv_overrides={"PROMETHEUS_SCRAPE_INTERVAL": "15s\\nbad: 1"}'],
     ["dotenv_overrides['PROMETHEUS_SCRAPE_INTERVAL']", "expected one line"]),
    (['dotenv_overrides={"LOKI_URL": "{POSTGRES_PASSWORD}"}'],
     ["dotenv_overrides['LOKI_URL']", "refers to a secret"]),
    (['dotenv_overrides={"POSTGRES_PASSWORD": "x"}'],
     ["dotenv_overrides['POSTGRES_PASSWORD'] = '<hidden>'", "is a secret"]),
    # placeholders: an unknown name or a shell-style ${...} is a refusal, not a traceback
    (['dotenv_overrides={"LOG_LEVEL": "{nosuch}"}'],
     ["dotenv_overrides['LOG_LEVEL'] = '{nosuch}'", "{nosuch} names nothing known",
      "{NAME} of a variable of .env.example"]),
    (['dotenv_overrides={"LOG_LEVEL": "${HOME}"}'],
     ["dotenv_overrides['LOG_LEVEL'] = '${HOME}'", "shell-style ${...}"]),
    # a value no form of .env carries the same for Compose, sh and python-dotenv
    (['dotenv_overrides={"LOG_LEVEL": "it\'s $5"}'],
     ["dotenv_overrides['LOG_LEVEL']", "cannot be written to .env"]),
    # values built from a secret are secrets: never referred to, never set, never shown
    (['dotenv_overrides={"LOKI_RETENTION_PERIOD": "{REDIS_URL}"}'],
     ["dotenv_overrides['LOKI_RETENTION_PERIOD']", "refers to a secret"]),
    (['dotenv_overrides={"DATABASE_URL": "postgresql://u:hunter2hunter2@db/x"}'],
     ["dotenv_overrides['DATABASE_URL'] = '<hidden>'", "holds a secret"]),
    # control characters, and what changes a cron line's meaning
    (["backup_schedule=A=1\nB=2\n@reboot root /tmp/x"],
     ["backup_schedule = 'A=1\\nB=2\\n@reboot root /tmp/x'", "control character"]),
    (["backup_schedule=@reboot"], ["backup_schedule = '@reboot'", "not a backup schedule"]),
    (["backup_schedule=0 3 * * * root"], ["backup_schedule", "5-field cron expression"]),
    (["backup_schedule=0 25 * * *"], ["backup_schedule", "hour: '25' is outside 0-23"]),
    (["mnemos_root=/srv/m\n/x"], ["mnemos_root = '/srv/m\\n/x'", "control character"]),
    (['supported_os={"debian": 12}'],
     ["supported_os['debian'] = 12", "expected a list of version strings"]),
    # where the tree and the state may be
    (["mnemos_root=/"], ["mnemos_root = '/'", "system directory or the home directory itself"]),
    (["mnemos_root=/etc"], ["mnemos_root = '/etc'", "system directory"]),
    (["secrets_state_path=/tmp/mnemos-secrets.json"],
     ["secrets_state_path = '/tmp/mnemos-secrets.json'", "every account can write"]),
    (["secrets_state_path=/srv/m/.config/s.json", "mnemos_root=/srv/m"],
     ["lies inside mnemos_root (/srv/m)"]),
    # the npm prefix is the system's: a home directory under sudo is root's, not the user's
    (["claude_code_npm_prefix=~/.npm-global"],
     ["claude_code_npm_prefix = '~/.npm-global'", "expected an absolute path such as /usr/local"]),
    # a supplied secret that would change every URL of .env
    (['secrets={"POSTGRES_PASSWORD": "Zq9xW2vB7nM4kL8p@R3tY/x"}'],
     ["secrets['POSTGRES_PASSWORD'] = '<hidden>'", "only letters, digits and . _ ~ -"]),
    # pyinfra's --data reads 20.10 as the number 20.1: the message says how to quote it
    (["docker_min_version=20.10"],
     ["docker_min_version = 20.1", "quote it as JSON", "--data 'docker_min_version=\"20.1\"'"]),
    (["traefik_log_level=WARNING"],
     ["traefik_log_level = 'WARNING'",
      "expected one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL, PANIC", "did you mean 'WARN'"]),
]


@pytest.mark.parametrize("data,fragments", BAD_INPUTS,
                         ids=[d[0][0].split("=")[0] + ":" + d[0][0].split("=")[1]
                              for d in BAD_INPUTS])
def test_bad_input_stops_before_any_operation(tmp_path, data, fragments):
    root = tmp_path / "mnemos"
    settings = {"mnemos_root": str(root), "secrets_state_path": f"{tmp_path}/state/s.json"}
    settings.update(item.split("=", 1) for item in data)
    args = [str(REPO / ".venv/bin/pyinfra") if (REPO / ".venv/bin/pyinfra").exists() else "pyinfra",
            "@local", "deploys/tree.py", "-y"]
    for key, value in settings.items():
        args += ["--data", f"{key}={value}"]
    result = run(args, cwd=REPO)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "nothing on the host was changed" in output
    for fragment in fragments:
        assert fragment in output, f"{fragment!r} not in:\n{output}"
    assert "Traceback" not in output
    assert not root.exists() and not (tmp_path / "state").exists(), "an operation ran"


def test_all_problems_are_reported_together():
    with pytest.raises(SettingsError) as err:
        # "redis": None removes that port from the merged ports (see merge_layers)
        validate({"bind_address": "nope", "environment": "qa",
                  "ports": {"postgres": 70000, "redis": None}})
    text = str(err.value)
    assert "bind_address = 'nope'" in text
    assert "environment = 'qa'" in text
    assert "ports['postgres'] = 70000" in text and "between 1 and 65535" in text
    assert "missing the port 'redis'" in text


def test_overlapping_subnets_are_refused():
    with pytest.raises(SettingsError) as err:
        validate({"stack_subnets": {"frontend": "172.20.0.0/16", "backend": "172.20.5.0/24",
                                    "data": "172.22.0.0/24"}})
    assert "stack_subnets['frontend'] = '172.20.0.0/16'" in str(err.value) or \
        "overlaps stack_subnets" in str(err.value)
    assert "overlaps" in str(err.value)


def test_invalid_cidr_is_refused():
    with pytest.raises(SettingsError) as err:
        validate({"stack_subnets": {"frontend": "172.20.0.1/24", "backend": "172.21.0.0/24",
                                    "data": "172.22.0.0/33"}})
    text = str(err.value)
    assert "stack_subnets['frontend'] = '172.20.0.1/24'" in text
    assert "stack_subnets['data'] = '172.22.0.0/33'" in text


def test_port_used_twice_is_refused():
    ports = dict(validate({}).ports)
    ports["grafana"] = ports["prometheus"]
    with pytest.raises(SettingsError) as err:
        validate({"ports": ports})
    assert "already used by ports['prometheus']" in str(err.value)


def test_unpinned_image_is_refused():
    images = dict(validate({}).images)
    images["redis"] = "redis:latest"
    images["loki"] = "grafana/loki"
    with pytest.raises(SettingsError) as err:
        validate({"images": images})
    text = str(err.value)
    assert "images['redis'] = 'redis:latest'" in text and "pinned" in text
    assert "images['loki'] = 'grafana/loki'" in text


def test_weak_supplied_secret_is_refused_without_printing_it():
    with pytest.raises(SettingsError) as err:
        validate({"secrets": {"POSTGRES_PASSWORD": "password123"}})
    text = str(err.value)
    assert "secrets['POSTGRES_PASSWORD']" in text and "too weak" in text
    assert "password123" not in text


def test_strings_from_the_command_line_are_parsed():
    s = validate({"launch_stack": "false", "stack_wait_timeout": "60", "tools": "yq,trivy"})
    assert s.launch_stack is False and s.stack_wait_timeout == 60 and s.tools == ["yq", "trivy"]


def test_traefik_log_level_is_read_in_any_case():
    assert validate({"traefik_log_level": "debug"}).traefik_log_level == "DEBUG"


def test_traefik_log_level_is_not_a_dotenv_override():
    """Traefik reads its level from config/traefik/traefik.yml; .env only mirrors the setting."""
    with pytest.raises(SettingsError) as err:
        validate({"dotenv_overrides": {"TRAEFIK_LOG_LEVEL": "DEBUG"}})
    assert "dotenv_overrides['TRAEFIK_LOG_LEVEL']" in str(err.value)
    assert "set traefik_log_level instead" in str(err.value)


def test_pyinfra_connection_keys_are_not_settings():
    s = validate({"ssh_user": "deploy", "_sudo": True})
    assert s.bind_address == "127.0.0.1"


@pytest.mark.parametrize("env", ["dev", "staging", "production", "ci", "fleet"])
def test_every_environment_is_valid(env, monkeypatch):
    import runpy
    monkeypatch.chdir(REPO)  # group_data/fleet.py reads group_data/ci.py from pyinfra's directory
    data = {k: v for k, v in runpy.run_path(str(REPO / f"group_data/{env}.py")).items()
            if not k.startswith("__") and not hasattr(v, "__spec__")}
    validate(data, controller_path_exists=lambda p: True)


def test_tls_certificates_are_made_once_with_private_keys(tmp_path):
    pyinfra = str(REPO / ".venv/bin/pyinfra")
    args = [pyinfra, "@local", "deploys/tree.py", "-y", "--data", f"mnemos_root={tmp_path}/mnemos",
            "--data", f"secrets_state_path={tmp_path}/state/s.json",
            "--data", "vault_tls=true", "--data", "traefik_tls=true"]
    first = run(args, cwd=REPO)
    assert first.returncode == 0, first.stdout + first.stderr
    vault_crt = tmp_path / "mnemos/config/vault/tls/vault.crt"
    sans = run(["openssl", "x509", "-in", str(vault_crt), "-noout",
                "-ext", "subjectAltName"]).stdout
    assert "IP Address:127.0.0.1" in sans and "DNS:vault" in sans
    # Vault's key: read by the image's vault uid (100) and root only, in a directory of root
    # (docs/security.md); a run that is not root keeps it its own, 0400. Traefik's the same way,
    # TRAEFIK_UID's: Traefik runs as that uid (docs/cis-docker-benchmark.md).
    for key_path, uid in (("config/vault/tls/vault.key", 100),
                          ("config/traefik/certs/mnemos.key", TRAEFIK_UID)):
        key_stat = (tmp_path / "mnemos" / key_path).stat()
        assert oct(key_stat.st_mode & 0o777) == "0o400", key_path
        if os.geteuid() == 0:
            assert key_stat.st_uid == uid, key_path
            tls_dir = (tmp_path / "mnemos" / key_path).parent.stat()
            assert (tls_dir.st_uid, oct(tls_dir.st_mode & 0o777)) == (0, "0o755"), key_path
    before = vault_crt.read_bytes()
    second = run(args, cwd=REPO)
    from tests.harness import parse_results
    rows = parse_results(second.stdout + second.stderr)
    assert rows and not any(r["success"] for r in rows.values()), rows
    assert vault_crt.read_bytes() == before
    # An earlier deploy's certs directory (the user's, its key 0600, Traefik then root) is
    # replaced: a directory of root, a new key TRAEFIK_UID's, 0400.
    key = tmp_path / "mnemos/config/traefik/certs/mnemos.key"
    key.chmod(0o600)
    third = run(args, cwd=REPO)
    rows = parse_results(third.stdout + third.stderr)
    assert [name for name, r in rows.items() if r["success"]] == [
        f"MNEMOS tree | TLS certificates | Self-signed certificate {tmp_path}/mnemos/config/"
        "traefik/certs/mnemos.crt"], rows
    assert oct(key.stat().st_mode & 0o777) == "0o400"
    if os.geteuid() == 0:
        assert key.stat().st_uid == TRAEFIK_UID


def test_secrets_file_is_read_by_the_deploy_and_must_be_private(tmp_path):
    """Secrets from a 0600 file on the controller: refused while others can read it; used once
    private; never printed, even at -vvv --debug (pyinfra prints its own data at --debug)."""
    secret = "Zq9xW2vB7nM4kL8pR3tYa81"
    path = tmp_path / "secrets.yml"
    path.write_text(f"POSTGRES_PASSWORD: {secret}\n")
    path.chmod(0o644)
    with pytest.raises(SettingsError) as err:
        validate({"secrets_file": str(path)})
    assert "other accounts can read it; run `chmod 600" in str(err.value)
    path.chmod(0o600)
    assert validate({"secrets_file": str(path)}).secrets["POSTGRES_PASSWORD"] == secret
    with pytest.raises(SettingsError) as err:
        validate({"secrets_file": str(path), "secrets": {"POSTGRES_PASSWORD": secret}})
    assert "supply each secret once" in str(err.value) and secret not in str(err.value)
    root = tmp_path / "mnemos"
    result = run([str(REPO / ".venv/bin/pyinfra"), "@local", "deploys/tree.py", "-y", "-vvv",
                  "--debug", "--data", f"mnemos_root={root}", "--data",
                  f"secrets_state_path={tmp_path}/state/s.json", "--data", f"secrets_file={path}"],
                 cwd=REPO)
    assert result.returncode == 0, (result.stdout + result.stderr)[-2000:]
    assert f"POSTGRES_PASSWORD={secret}" in (root / ".env").read_text()
    assert secret not in result.stdout + result.stderr


def test_no_input_of_any_type_makes_a_traceback():
    """Every setting given values of every JSON type (and bad values inside each dict setting):
    validation either accepts it or names the problem; what it accepts renders."""
    from mnemos_provision import render, secret_store
    from mnemos_provision.settings import load_defaults
    values = [None, 0, -1, 1.5, True, "", "x", "a\nb", [], ["x"], [1], {}, {"x": 1}, {"x": None}]
    secrets = secret_store.complete({}, {})
    for key, default in load_defaults().items():
        cases = [{key: v} for v in values]
        if isinstance(default, dict):
            for inner in list(default)[:4] or ["LOG_LEVEL"]:
                cases += [{key: {**default, inner: v}} for v in values]
        for data in cases:
            try:
                settings = validate(data, controller_path_exists=lambda p: True)
            except SettingsError:
                continue
            render.render_tree(settings, "/home/dev", secrets)


def test_paths_are_absolute_and_normalized_and_never_climb():
    s = validate({"mnemos_root": "/srv//mnemos/./tree/", "vault_keys_path": "~/.config//k.json"})
    assert (s.mnemos_root, s.vault_keys_path) == ("/srv/mnemos/tree", "~/.config/k.json")
    with pytest.raises(SettingsError, match="home directory itself"):
        validate({"mnemos_root": "~/./"})
    for data in ({"mnemos_root": "/srv/m/../etc"}, {"secrets_state_path": "~/../root/s.json"},
                 {"image_archives": ["/srv/../x.tar"]}):
        with pytest.raises(SettingsError) as err:
            validate(data, controller_path_exists=lambda p: True)
        assert "without '..'" in str(err.value)


def test_daemon_json_turns_on_what_the_cis_benchmark_checks_and_no_new_privileges_on_request():
    """2.2, 2.15, 2.16 by default; 2.14 (daemon-wide no-new-privileges) only with
    docker_no_new_privileges, and a layer can still remove any entry (the dict merge rule)."""
    default = daemon_config(validate({}))
    assert default == {"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "3"},
                       "icc": False, "live-restore": True, "userland-proxy": False}
    assert daemon_config(validate({"docker_no_new_privileges": True}))["no-new-privileges"] is True
    kept_proxy = daemon_config(validate({"docker_daemon_config": {"userland-proxy": None}}))
    assert "userland-proxy" not in kept_proxy and kept_proxy["icc"] is False
