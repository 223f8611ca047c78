"""
Operation decisions, tested the way pyinfra tests its own operations: facts in, the commands that
would run (or the no-op reason) out. The preflight and the Docker source are decided from a
Snapshot fixture: WSL or not, Docker Desktop or not, systemd or not, ports and routes.
"""

from __future__ import annotations

import getpass
import grp
import hashlib
import ipaddress
import os
import re
import shlex
import subprocess

import pytest

from mnemos_provision.facts.apt import AptState
from mnemos_provision.facts.files import LineInFile, PathState
from mnemos_provision.facts.server import Snapshot
from mnemos_provision.operations import apt, compose, docker, files, server
from mnemos_provision.operations.util import AS_USER, ROOT_ONLY_CWD
from mnemos_provision.render import TreeEntry
from mnemos_provision.settings import validate
from roles.preflight import evaluate
from tests.conftest import run_op

pytestmark = pytest.mark.unit


def snapshot(**kw) -> Snapshot:
    base = dict(os_id="ubuntu", os_version="24.04", os_codename="noble",
                kernel="5.15.153.1-microsoft-standard-WSL2", mem_kib=16 * 1024 * 1024, cpus=8,
                disk_free_kib=600 * 1024 * 1024, disk_path="/home", user="dev", user_exists=True,
                user_home="/home/dev", user_group="dev")
    base.update(kw)
    return Snapshot(**base)


# ------------------------------------------------------------ preflight

def test_wsl2_with_enough_resources_passes():
    problems, warnings = evaluate(validate({}), snapshot())
    assert problems == [] and warnings == []


def test_wsl1_is_refused_with_the_fix():
    problems, _ = evaluate(validate({}), snapshot(kernel="4.4.0-19041-Microsoft"))
    assert any("WSL1" in p and "wsl --set-version" in p for p in problems)


def test_plain_linux_is_not_wsl():
    assert snapshot(kernel="6.1.0-18-amd64").wsl_version is None
    assert snapshot().wsl_version == 2


def test_unsupported_os_is_refused():
    problems, _ = evaluate(validate({}), snapshot(os_id="ubuntu", os_version="20.04"))
    assert any("OS ubuntu 20.04 is not supported" in p for p in problems)


def test_below_minimum_fails_unless_not_strict():
    small = snapshot(cpus=2, mem_kib=4 * 1024 * 1024)
    problems, _ = evaluate(validate({}), small)
    assert any("CPUs: 2 is below the design minimum (min_cpus = 4)" in p for p in problems)
    assert any(p.startswith("memory: 4.0 GiB") for p in problems)
    problems, warnings = evaluate(validate({"preflight_strict": False}), small)
    assert problems == [] and len(warnings) == 2


def test_eight_gb_machine_meets_the_eight_gb_minimum():
    problems, warnings = evaluate(validate({}), snapshot(mem_kib=7_900_000))
    assert not any("memory" in p for p in problems)
    assert any("memory" in w and "recommended" in w for w in warnings)


def test_port_in_use_by_another_process_is_refused_but_ours_is_fine():
    problems, _ = evaluate(validate({}), snapshot(listening_ports={5432, 9090},
                                                  project_ports={9090}))
    assert any("port 5432 (ports['postgres']) is already in use" in p for p in problems)
    assert not any("9090" in p for p in problems)


def test_a_port_range_of_our_own_container_is_ours():
    """docker ps shows consecutive published ports of one container as a range (MinIO's 9000 and
    9001): the converge tier's second run with MinIO enabled was refused as "port in use"."""
    from mnemos_provision.facts.server import HostSnapshot
    snap = HostSnapshot().process(["project_ports=127.0.0.1:9000-9001->9000-9001/tcp, "
                                   "127.0.0.1:8200->8200/tcp"])
    assert snap.project_ports == {9000, 9001, 8200}
    problems, _ = evaluate(validate({"compose_profiles": ["minio"]}),
                           snapshot(listening_ports={9000, 9001}, project_ports=snap.project_ports))
    assert problems == []


def test_ports_of_disabled_services_are_not_checked():
    problems, _ = evaluate(validate({"compose_profiles": ["postgres"]}),
                           snapshot(listening_ports={3000}))
    assert problems == []


def test_subnet_overlapping_a_docker_network_or_route_is_refused():
    snap = snapshot(
        docker_networks=[("abc123", "other_net", ["172.20.0.0/16"]),
                         ("def4567890123", "mnemos_data", ["172.22.0.0/24"])],
        routes=[("eth0", ipaddress.ip_network("172.21.0.0/20")),
                ("br-def456789012", ipaddress.ip_network("172.22.0.0/24")),
                ("eth0", ipaddress.ip_network("0.0.0.0/0"))],
    )
    problems, _ = evaluate(validate({}), snap)
    assert any("stack_subnets['frontend']" in p and "other_net" in p for p in problems)
    assert any("stack_subnets['backend']" in p and "host route 172.21.0.0/20 on eth0" in p
               for p in problems)
    assert not any("stack_subnets['data']" in p for p in problems), \
        "our own network is not a conflict"


def test_desktop_requested_but_absent_is_refused():
    problems, _ = evaluate(validate({"docker_source": "desktop"}), snapshot())
    assert any("Docker Desktop's WSL integration was not found" in p for p in problems)


def test_desktop_too_old_is_refused():
    snap = snapshot(desktop_integration=True, docker_server_version="23.0.6",
                    compose_version="2.19.1")
    problems, _ = evaluate(validate({}), snap)
    assert any("engine 23.0.6" in p for p in problems)
    assert any("Compose 2.19.1" in p for p in problems)


# ------------------------------------------------------------ docker source

@pytest.mark.parametrize("setting,desktop,expected", [
    ("auto", True, "desktop"), ("auto", False, "docker-ce"),
    ("distro", True, "distro"), ("docker-ce", False, "docker-ce"),
])
def test_docker_source_resolution(setting, desktop, expected):
    from mnemos_provision.context import HostContext
    from roles.docker_engine import resolve_source
    ctx = HostContext(validate({"docker_source": setting}), snapshot(desktop_integration=desktop),
                      "dev", "dev", "/home/dev")
    assert resolve_source(ctx) == expected


def test_docker_ce_repository_line_uses_the_keyring_and_codename():
    from mnemos_provision.context import HostContext
    from roles.docker_engine import docker_ce_source_line
    ctx = HostContext(validate({}), snapshot(arch="amd64"), "dev", "dev", "/home/dev")
    assert docker_ce_source_line(ctx) == ("deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc] "
                                          "https://download.docker.com/linux/ubuntu noble stable\n")


# ------------------------------------------------------------ operations

def test_docker_running_is_a_noop():
    commands, noops = run_op(docker, docker.daemon,
                             {"DockerAnswers": True}, systemd=True, timeout=10)
    assert commands == [] and noops == ["Docker Engine answers"]


def test_docker_started_by_systemd_when_present():
    commands, _ = run_op(docker, docker.daemon,
                         {"DockerAnswers": False}, systemd=True, timeout=10)
    assert commands[0].startswith("systemctl enable --now docker.service")
    assert "journalctl -u docker.service" in commands[0]


def test_docker_started_detached_without_systemd():
    commands, _ = run_op(docker, docker.daemon,
                         {"DockerAnswers": False}, systemd=False, timeout=10)
    assert commands[0].startswith("setsid nohup dockerd >>/var/log/dockerd.log")
    assert "tail -n 20 /var/log/dockerd.log" in commands[0]


def test_apt_install_only_missing_and_available_optional():
    facts = {"AptPackages": AptState({
        "git": {"installed": True, "version": "1", "candidate": True},
        "jq": {"installed": False, "version": "", "candidate": True},
        "python3.11": {"installed": False, "version": "", "candidate": False},
        "software-properties-common": {"installed": False, "version": "", "candidate": True},
    })}
    commands, _ = run_op(apt, apt.packages, facts, packages=["git", "jq"],
                         optional=["python3.11", "software-properties-common"])
    assert ran(commands) == ["env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                             "--no-install-recommends "
                             "-o DPkg::Lock::Timeout=300 jq software-properties-common"]


def test_apt_install_noop_when_present_and_pinned_version_matches():
    facts = {"AptPackages": AptState({"trivy": {"installed": True, "version": "0.58.1",
                                                "candidate": True}})}
    commands, noops = run_op(apt, apt.packages, facts, packages=["trivy=0.58.1"])
    assert commands == [] and noops
    commands, _ = run_op(apt, apt.packages, facts, packages=["trivy=0.59.0"])
    assert commands and commands[0].endswith("trivy=0.59.0")


def ran(commands: list[str]) -> list[str]:
    """The command each `alive` wrapper runs (operations/progress.py: its last line is `alive
    LABEL COMMAND...`)."""
    return [" ".join(shlex.split(c.splitlines()[-1])[2:]) for c in commands]


def test_apt_refresh_respects_the_cache_age():
    assert run_op(apt, apt.update, {"AptListsAge": 100}, cache_time=3600)[0] == []
    assert ran(run_op(apt, apt.update, {"AptListsAge": None}, cache_time=3600)[0]) == [
        "apt-get update -q -o DPkg::Lock::Timeout=300"]
    assert ran(run_op(apt, apt.update, {"AptListsAge": 100}, cache_time=3600,
                      force=True)[0]) == ["apt-get update -q -o DPkg::Lock::Timeout=300"]


def test_apt_refresh_asks_a_callable_force_when_it_executes():
    # roles pass force=changes(source_list), asked when the refresh runs (a function is truthy:
    # taken as is, every run would refresh the lists after adding Docker's or trivy's repository)
    facts = {"AptListsAge": 100}
    assert run_op(apt, apt.update, facts, cache_time=3600,
                  force=lambda: False)[0] == []
    assert ran(run_op(apt, apt.update, facts, cache_time=3600,
                      force=lambda: True)[0]) == ["apt-get update -q -o DPkg::Lock::Timeout=300"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_sync_tree_noop_when_everything_matches():
    entries = [TreeEntry("config", "directory", "755"),
               TreeEntry("config/a.yml", "file", "644", b"a: 1\n")]
    state = {".": PathState("directory", "755", "dev", "dev"),
             ".git": PathState("directory", "755", "dev", "dev"),
             "config": PathState("directory", "755", "dev", "dev"),
             "config/a.yml": PathState("regular file", "644", "dev", "dev", _sha(b"a: 1\n"))}
    commands, noops = run_op(files, files.tree, {"TreeState": state}, root="/r",
                             entries=entries, user="dev", group="dev")
    assert commands == [] and "all 2 managed paths up to date" in noops[0]


def test_sync_tree_repairs_only_what_drifted():
    entries = [TreeEntry("config", "directory", "755"),
               TreeEntry("logs", "directory", "755"),
               TreeEntry("config/a.yml", "file", "644", b"a: 1\n"),
               TreeEntry("config/b.yml", "file", "644", b"b: 1\n"),
               TreeEntry(".env", "file", "600", b"SECRET=x\n", secret=True)]
    state = {".": PathState("directory", "755", "dev", "dev"),
             ".git": PathState("directory", "755", "dev", "dev"),
             "config": PathState("directory", "755", "dev", "dev"),
             "config/a.yml": PathState("regular file", "644", "dev", "dev", _sha(b"edited\n")),
             "config/b.yml": PathState("regular file", "644", "dev", "dev", _sha(b"b: 1\n")),
             ".env": PathState("regular file", "644", "dev", "dev", _sha(b"SECRET=x\n"))}
    commands, _ = run_op(files, files.tree, {"TreeState": state}, root="/r",
                         entries=entries, user="dev", group="dev")
    stage = re.fullmatch(r"mkdir -m 700 (/tmp/mnemos-stage-[0-9a-f]{32})", commands[0])
    assert stage, commands[0]
    stage = stage.group(1)
    # root uploads into its own stage; everything in the tree is done by dev (as_user): the new
    # directory, the mode of .env, a.yml written under a new name beside its place and renamed
    assert commands[1] == f"UPLOAD {stage}/0" and len(commands) == 3
    assert commands[2].startswith(AS_USER + "; ( ")
    assert commands[2].endswith(f" ); rc=$?; rm -rf {stage}; exit $rc")
    steps = commands[2][len(AS_USER) + 4:].rsplit(" ); rc=$?", 1)[0].split(" && as_user ")
    assert steps[0] == f"as_user dev dev sh -c {shlex.quote(files._MKDIRS)} - 755 /r/logs"
    assert steps[1] == "dev dev chmod 600 /r/.env"
    assert re.fullmatch(r"dev dev sh -c .* - /r/config/a\.yml "
                        rf"/r/config/\.a\.yml\.mnemos-[0-9a-f]{{32}} 644 < {stage}/0", steps[2])
    assert len(steps) == 3 and "chown" not in commands[2]


@pytest.mark.parametrize("kind,links,fragment", [
    ("symbolic link", 1, "/r/config/a.yml is a symbolic link; the deploy never writes through one"),
    ("directory", 2, "/r/config/a.yml should be a regular file but is a directory"),
    ("regular file", 2, "/r/config/a.yml is a hard link (2 names for one file)"),
])
def test_sync_tree_refuses_a_path_it_would_write_through(kind, links, fragment):
    entries = [TreeEntry("config", "directory", "755"),
               TreeEntry("config/a.yml", "file", "644", b"a: 1\n")]
    state = {".": PathState("directory", "755", "dev", "dev"),
             ".git": PathState("directory", "755", "dev", "dev"),
             "config": PathState("directory", "755", "dev", "dev"),
             "config/a.yml": PathState(kind, "644", "dev", "dev", _sha(b"old"), links=links)}
    commands, _ = run_op(files, files.tree, {"TreeState": state}, root="/r",
                         entries=entries, user="dev", group="dev")
    assert len(commands) == 1 and commands[0].endswith(">&2; exit 1"), commands
    assert fragment in commands[0]


def test_sync_tree_writes_secrets_through_a_new_private_directory_and_inits_git():
    entries = [TreeEntry(".env", "file", "600", b"SECRET=x\n", secret=True)]
    state = {".": PathState("directory", "755", "dev", "dev")}
    commands, _ = run_op(files, files.tree, {"TreeState": state}, root="/r",
                         entries=entries, user="dev", group="dev")
    stage = re.fullmatch(r"mkdir -m 700 (/tmp/mnemos-stage-[0-9a-f]{32})", commands[0])
    assert stage, commands[0]
    stage = stage.group(1)
    assert commands[1] == f"UPLOAD {stage}/0"
    # written 0600 from its creation by dev, beside its place, then renamed; git init by dev
    assert re.search(r"as_user dev dev sh -c .*umask 077.* - /r/\.env "
                     rf"/r/\.\.env\.mnemos-[0-9a-f]{{32}} 600 < {stage}/0", commands[2])
    assert "as_user dev dev git -C /r init -q -b main" in commands[2]
    assert commands[2].endswith(f"rm -rf {stage}; exit $rc")
    assert not any("SECRET" in c for c in commands)


# upgrade.ServiceImages of a host whose services run no container yet (operations/upgrade.py)
NO_CONTAINERS = {"containers": {}, "pg_version": None}


@pytest.mark.parametrize("running,reason", [
    ({}, "postgres: no container"),
    ({"postgres": {"hash": "old", "state": "running", "health": "healthy"}},
     "postgres: configuration changed"),
    ({"postgres": {"hash": "h1", "state": "exited", "health": "none"}}, "postgres: exited"),
    ({"postgres": {"hash": "h1", "state": "running", "health": "unhealthy"}},
     "postgres: unhealthy"),
    ({"postgres": {"hash": "h1", "state": "running", "health": "healthy"},
      "grafana": {"hash": "x", "state": "running", "health": "healthy"}},
     "grafana: orphan container"),
])
def test_compose_up_runs_when_the_stack_differs(running, reason):
    facts = {"ComposeStatus": {"wanted": {"postgres": "h1"}, "running": running},
             "ServiceImages": NO_CONTAINERS}
    commands, _ = run_op(compose, compose.stack, facts, root="/r", project="mnemos",
                         images={"postgres": "postgres:16.11-alpine"}, services=["postgres"],
                         timeout=60)
    assert any(reason in r for r in compose.stack_differences({"postgres": "h1"}, running))
    assert "docker compose up -d --wait --wait-timeout 60 --remove-orphans" in commands[0]
    assert 'set images["postgres"] (or image_registry) in group_data' in commands[0]


def test_compose_up_noop_when_healthy_and_current():
    facts = {"ComposeStatus": {"wanted": {"postgres": "h1"},
                               "running": {"postgres": {"hash": "h1", "state": "running",
                                                        "health": "healthy"}}},
             "ServiceImages": NO_CONTAINERS}
    commands, noops = run_op(compose, compose.stack, facts, root="/r", project="mnemos",
                             images={"postgres": "p:1"}, services=["postgres"], timeout=60)
    assert commands == [] and "healthy" in noops[0]


def test_apt_install_finishes_an_interrupted_dpkg_first():
    facts = {"AptPackages": AptState(
        {"git": {"installed": True, "version": "1", "candidate": True}}, dpkg_interrupted=True)}
    commands, _ = run_op(apt, apt.packages, facts, packages=["git"])
    assert commands == ["DEBIAN_FRONTEND=noninteractive dpkg --configure -a"]


def test_compose_up_runs_when_docker_is_not_there_yet():
    facts = {"ComposeStatus": {"wanted": None, "running": None},
             "ServiceImages": NO_CONTAINERS}
    commands, _ = run_op(compose, compose.stack, facts, root="/r", project="mnemos",
                         images={"postgres": "p:1"}, services=["postgres"], timeout=60)
    assert "docker compose up -d --wait" in commands[0]


def test_system_files_uploads_only_what_differs():
    state = {
        "etc/docker/daemon.json": PathState("regular file", "644", "root", "root", _sha(b"{}\n")),
        "etc/cron.d/mnemos-backup": PathState("regular file", "600", "root", "root", _sha(b"x\n")),
    }
    commands, _ = run_op(files, files.system_files, {"TreeState": state}, files=[
        ("/etc/docker/daemon.json", b"{}\n", "644"),
        ("/etc/cron.d/mnemos-backup", b"x\n", "644"),
        ("/usr/local/lib/docker/cli-plugins/docker-compose", b"ELF", "755")])
    stage = re.fullmatch(r"mkdir -m 700 (/tmp/mnemos-stage-[0-9a-f]{32})", commands[0])
    assert stage, commands[0]
    stage = stage.group(1)
    assert commands[1] == f"UPLOAD {stage}/0" and len(commands) == 3
    # only the mode of the cron entry and the missing plugin, each inside its directory checked
    # root-only after cd -P; the plugin copied to a new name there and renamed into place
    steps = commands[2]
    assert steps.startswith(AS_USER + "; ( ")
    assert steps.endswith(f" ); rc=$?; rm -rf {stage}; exit $rc")
    assert "daemon.json" not in steps
    assert (f"( cd -P -- /etc/cron.d && {{ {ROOT_ONLY_CWD} || ") in steps
    assert "} && chmod 644 mnemos-backup && chown -h root:root mnemos-backup )" in steps
    assert (f"mkdir -p /usr/local/lib/docker/cli-plugins && ( cd -P -- "
            f"/usr/local/lib/docker/cli-plugins && {{ {ROOT_ONLY_CWD} || ") in steps
    assert re.search(rf"cp {stage}/0 (\.docker-compose\.mnemos-[0-9a-f]{{32}}) && chmod 755 \1 "
                     r"&& chown root:root \1 && mv -f \1 docker-compose ", steps)


def test_system_files_compares_a_controller_file_by_size_and_mtime(tmp_path):
    plugin = tmp_path / "docker-compose"
    plugin.write_bytes(b"ELF" * 1000)
    os.utime(plugin, (1_700_000_000, 1_700_000_000))
    dest = "/usr/local/lib/docker/cli-plugins/docker-compose"
    wanted = [(dest, plugin, "755")]

    def state(size, mtime, mode="755"):
        return {"TreeState": {dest.lstrip("/"): PathState("regular file", mode, "root", "root",
                                                          None, size, mtime)}}

    commands, noops = run_op(files, files.system_files, state(3000, 1_700_000_000), files=wanted)
    assert commands == [] and noops
    def uploads(facts) -> bool:
        """The plugin uploaded (the controller file's path) and given its mtime in place."""
        commands = run_op(files, files.system_files, facts, files=wanted)[0]
        return (len(commands) == 3 and commands[1].startswith("UPLOAD /tmp/mnemos-stage-")
                and re.search(r"touch -m -d @1700000000 (\.docker-compose\.mnemos-[0-9a-f]{32})"
                              r" && mv -f \1 docker-compose ", commands[2]) is not None)
    assert uploads(state(3001, 1_700_000_000))
    assert uploads(state(3000, 1_700_000_001))
    assert uploads({"TreeState": {}})
    changed_mode = state(3000, 1_700_000_000, "700")
    assert run_op(files, files.system_files, changed_mode, files=wanted)[0] == [
        f"( cd -P -- /usr/local/lib/docker/cli-plugins && {{ {ROOT_ONLY_CWD} || {{ echo "
        "'mnemos: /usr/local/lib/docker/cli-plugins '\"is writable by another account than "
        "$(id -un); nothing was written there\" >&2; exit 1; }; } && chmod 755 docker-compose "
        "&& chown -h root:root docker-compose )"]


def _line_state(path, line) -> str:
    fact = LineInFile()
    out = subprocess.run(["sh", "-c", fact.command(path=str(path), line=line)],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    return fact.process(out)


@pytest.mark.parametrize("before, state", [
    (None, "missing"), ("", "absent"), ("alias ll='ls -l'\n", "absent"),
    ("alias ll='ls -l'", "absent"),  # no final newline: the line must not be glued to it
    ("# export DOCKER_BUILDKIT=1\n", "absent"),  # commented out is not set
    ("export DOCKER_BUILDKIT=1\n", "present"),
])
def test_profile_line_is_added_once_and_its_commands_work(tmp_path, before, state):
    profile = tmp_path / ".profile"
    if before is not None:
        profile.write_text(before)
    line = "export DOCKER_BUILDKIT=1"
    assert _line_state(profile, line) == state  # the real fact, run by sh
    user, group = getpass.getuser(), grp.getgrgid(os.getgid()).gr_name
    commands, noops = run_op(files, files.line, {"LineInFile": state},
                             path=str(profile), line=line, user=user, group=group)
    if state == "present":
        assert commands == [] and noops
        return
    for command in commands:  # what the host would run
        subprocess.run(["sh", "-c", command], check=True)
    kept = (before or "") + ("\n" if before and not before.endswith("\n") else "")
    assert profile.read_text() == kept + line + "\n"
    if before is None:
        assert profile.stat().st_mode & 0o777 == 0o644
    assert _line_state(profile, line) == "present"  # so the next run does nothing


def test_user_joins_the_docker_group_only_once():
    assert run_op(server, server.group_member, {"UserGroups": ["dev", "docker"]},
                  user="dev", group="docker")[0] == []
    assert run_op(server, server.group_member, {"UserGroups": ["dev"]},
                  user="dev", group="docker")[0] == ["usermod -a -G docker dev"]


# ------------------------------------------------------------ tool downloads, run with file:// URLs

def test_tool_download_is_verified_and_failures_are_one_clear_line(tmp_path):
    import subprocess

    from roles.tools import download_command
    source = tmp_path / "yq_linux_amd64"
    source.write_bytes(b"#!/bin/sh\necho yq\n")
    good = hashlib.sha256(source.read_bytes()).hexdigest()
    dest = tmp_path / "bin" / "yq"
    dest.parent.mkdir()

    def run_cmd(url, sha):
        return subprocess.run(["sh", "-c", download_command("yq", url, sha, str(dest))],
                              capture_output=True, text=True)

    ok = run_cmd(f"file://{source}", good)
    assert ok.returncode == 0, ok.stderr
    assert dest.read_bytes() == source.read_bytes() and dest.stat().st_mode & 0o755 == 0o755
    dest.unlink()
    wrong = run_cmd(f"file://{source}", "0" * 64)
    assert wrong.returncode == 1 and not dest.exists()
    assert wrong.stderr.strip().splitlines()[-1] == \
        f"tool yq: sha256 of file://{source} is not {'0' * 64}; refusing it"
    missing = run_cmd(f"file://{tmp_path}/nothing-here", good)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1].startswith(
        f"tool yq: cannot download file://{tmp_path}/nothing-here; leave it out with tools")


def test_claude_code_version_is_read_where_npm_install_g_prefix_puts_it(tmp_path):
    """The no-op's fact reads the package npm installed under claude_code_npm_prefix (npm's
    documented global layout: <prefix>/lib/node_modules/<name>, the command linked in
    <prefix>/bin) without running npm; a half-installed package, or one under another prefix
    (npm's own configured one, say), is not installed there."""
    import subprocess

    from roles.tools import installed_npm_version_command
    name = "@anthropic-ai/claude-code"

    def npm_layout(prefix, version="2.0.14", link=True, cli=True):
        package = prefix / "lib/node_modules" / name
        package.mkdir(parents=True)
        (package / "package.json").write_text(
            '{\n  "name": "%s",\n  "version": "%s",\n  "bin": {\n    "claude": "cli.js"\n  }\n}\n'
            % (name, version))
        if cli:
            (package / "cli.js").write_text("#!/usr/bin/env node\n")
            (package / "cli.js").chmod(0o755)
        if link:
            (prefix / "bin").mkdir()
            (prefix / "bin/claude").symlink_to(f"../lib/node_modules/{name}/cli.js")

    def installed(prefix):
        command = installed_npm_version_command(str(prefix), name, "claude")
        # no npm process: nothing but the paths names npm
        assert "npm" not in command.replace(str(prefix), "").replace("node_modules", ""), command
        result = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
        assert result.returncode == 0 and not result.stderr, result
        return result.stdout.strip()

    npm_layout(tmp_path / "usr local")  # a prefix with a space: quoted
    assert installed(tmp_path / "usr local") == "2.0.14"
    npm_layout(tmp_path / "npm-global", version="2.0.13")  # npm's own prefix, not ours
    assert installed(tmp_path / "elsewhere") == ""
    npm_layout(tmp_path / "no-link", link=False)  # unpacked, never linked: half installed
    assert installed(tmp_path / "no-link") == ""
    npm_layout(tmp_path / "dangling", cli=False)  # the link leads nowhere
    assert installed(tmp_path / "dangling") == ""


def test_every_role_gets_the_same_new_secrets_on_a_first_run(monkeypatch):
    """On a fresh host (no state file yet) the tree, Vault and MinIO roles must not each generate
    their own secrets: .env's VAULT_TOKEN must be the token Vault gets."""
    from types import SimpleNamespace

    from mnemos_provision import connection
    from mnemos_provision.context import HostContext
    from mnemos_provision.secret_store import load

    reads = []

    def fresh_host(command):  # what a fresh host answers to the state read: nothing at all
        reads.append(command)
        return True, ["== state missing", "== env missing", "== state_dir missing",
                      "== backups 0", "== volumes docker"], []

    monkeypatch.setattr(load, "host", SimpleNamespace(name="fresh-host"))
    monkeypatch.setattr(connection, "run_as_operations", fresh_host)
    monkeypatch.setattr(load, "_RUN_SECRETS", {})
    ctx = HostContext(validate({}), snapshot(), "dev", "dev", "/home/dev")
    first = load.load_secrets(ctx)
    assert load.load_secrets(ctx) == first
    assert len(reads) == 1, "the state was read more than once in one run"
    assert first["VAULT_TOKEN"].startswith("mnemos") and len(first["VAULT_TOKEN"]) == 40


def test_snapshot_picks_the_user_who_ran_sudo_when_no_user_is_set():
    """`sudo scripts/bootstrap` must lay out the tree for the invoking account, not root's."""
    import os
    import subprocess

    from mnemos_provision.facts.server import HostSnapshot
    fact = HostSnapshot()
    command = fact.command(user=None, path="~/mnemos", compose_project="mnemos")
    env = dict(os.environ, SUDO_USER="nobody")
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env).stdout
    snap = fact.process(output.splitlines())
    assert snap.user == "nobody" and snap.user_exists
    env.pop("SUDO_USER")
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env).stdout
    assert fact.process(output.splitlines()).user == subprocess.run(
        ["id", "-un"], capture_output=True, text=True).stdout.strip()
    explicit = fact.process(subprocess.run(
        ["sh", "-c", fact.command(user="root", path="/", compose_project="mnemos")],
        capture_output=True, text=True,
        env=dict(os.environ, SUDO_USER="nobody")).stdout.splitlines())
    assert explicit.user == "root"


# ------------------------------------------------------------ the backup schedule's cron line

@pytest.mark.parametrize("root", ["/home/dev/mnemos", "/srv/my %d dir;x"])
def test_the_cron_line_is_one_line_whose_paths_are_single_words(root):
    import shlex

    from mnemos_provision.context import HostContext
    from roles.backup import cron_entry
    settings = validate({"mnemos_root": root, "backup_schedule": "*/30 1-5 * jan-jun mon,fri"})
    ctx = HostContext(settings, snapshot(), "dev", "dev", "/home/dev")
    lines = cron_entry(ctx).splitlines()
    assert len(lines) == 4 and lines[1:3] == [
        "SHELL=/bin/sh", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    command = lines[3].split(" ", 6)
    assert command[:6] == ["*/30", "1-5", "*", "jan-jun", "mon,fri", "dev"]
    # what cron hands to sh: "\%" becomes "%", an unescaped % would end the command
    text = command[6]
    assert not re.search(r"(?<!\\)%", text)
    assert shlex.split(text.replace("\\%", "%")) == [
        "/bin/sh", f"{root}/scripts/backup/backup-all.sh", ">>", f"{root}/data/logs/backup.log",
        "2>&1"]


# ------------------------------------------------------------ backups anywhere count (issue 22)

@pytest.mark.parametrize("storage", [None, "/srv/backups/mnemos", "../elsewhere"])
def test_every_directory_backups_are_written_to_is_looked_at(storage):
    from mnemos_provision.context import HostContext
    from mnemos_provision.secret_store.load import backup_locations
    data = {"mnemos_root": "/srv/m"}
    if storage:
        data["dotenv_overrides"] = {"BACKUP_STORAGE_PATH": storage}
    ctx = HostContext(validate(data), snapshot(), "dev", "dev", "/home/dev")
    expected = {None: [], "/srv/backups/mnemos": ["/srv/backups/mnemos"],
                "../elsewhere": ["/srv/elsewhere"]}[storage]
    assert backup_locations(ctx) == ["/srv/m/data/backups", *expected]


def test_archives_where_backup_storage_path_points_keep_their_key(tmp_path):
    """State and .env lost, the archives not in data/backups: the key is not generated anew."""
    from mnemos_provision.secret_store import (
        StateError,
        decide,
        parse_read,
        read_command,
    )
    default, elsewhere = tmp_path / "mnemos/data/backups", tmp_path / "elsewhere with space"
    default.mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "mnemos-backup-20260101T030000Z.tar.gz.gpg").write_bytes(b"x")
    (elsewhere / "mnemos-backup-20260101T030000Z.tar.gz.gpg.sha256").write_bytes(b"x")
    command = read_command(str(tmp_path / "state/s.json"), str(tmp_path / "mnemos/.env"),
                           [str(default), str(elsewhere), str(tmp_path / "missing")], "p")
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    found = parse_read(output.stdout.splitlines())
    assert (found.backups, found.backup_dirs) == (1, [str(elsewhere)])
    found.volumes = set()
    with pytest.raises(StateError) as err:
        decide(found, {}, state_path="s.json", env_path=".env", project="p")
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith("BACKUP_ENCRYPTION_KEY is in neither")
    assert f"1 encrypted backup archive(s) in {elsewhere} open only with" in err.value.problems[0]
    # only in the default directory, as before: the same
    (elsewhere / "mnemos-backup-20260101T030000Z.tar.gz.gpg").rename(
        default / "mnemos-backup-20260101T030000Z.tar.gz.gpg")
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    assert parse_read(output.stdout.splitlines()).backup_dirs == [str(default)]
    # and with no archive anywhere, a key is generated
    (default / "mnemos-backup-20260101T030000Z.tar.gz.gpg").unlink()
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    nothing = parse_read(output.stdout.splitlines())
    nothing.volumes = set()
    assert nothing.backups == 0
    assert decide(nothing, {}, state_path="s.json", env_path=".env",
                  project="p").values["BACKUP_ENCRYPTION_KEY"]


def test_sync_tree_never_chowns_a_directory_and_rewrites_a_file_of_another_owner():
    """Root never chowns in the tree (docs/security.md): a directory of another account
    stops the run with the chown to run; a file of another account is written again by dev; a
    group that drifted is set back by dev."""
    entries = [TreeEntry("config", "directory", "755"),
               TreeEntry("config/a.yml", "file", "644", b"a: 1\n"),
               TreeEntry("config/b.yml", "file", "644", b"b: 1\n")]
    state = {".": PathState("directory", "755", "dev", "dev"),
             ".git": PathState("directory", "755", "dev", "dev"),
             "config": PathState("directory", "755", "root", "root"),
             "config/a.yml": PathState("regular file", "644", "root", "root", _sha(b"a: 1\n")),
             "config/b.yml": PathState("regular file", "644", "dev", "adm", _sha(b"b: 1\n"))}
    commands, _ = run_op(files, files.tree, {"TreeState": state}, root="/r",
                         entries=entries, user="dev", group="dev")
    assert len(commands) == 1 and "/r/config belongs to root, not dev" in commands[0]
    assert "sudo chown dev:dev /r/config" in commands[0] and commands[0].endswith("exit 1")
    state["config"] = PathState("directory", "755", "dev", "dev")
    commands, _ = run_op(files, files.tree, {"TreeState": state}, root="/r",
                         entries=entries, user="dev", group="dev")
    assert commands[1].startswith("UPLOAD /tmp/mnemos-stage-")  # a.yml, written again by dev
    assert "as_user dev dev chgrp dev /r/config/b.yml" in commands[2]
    assert re.search(r"as_user dev dev sh -c .* - /r/config/a\.yml ", commands[2])
    assert "chown" not in commands[2]
