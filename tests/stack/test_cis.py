"""
The CIS Docker Benchmark items this project controls, checked item by item on the engine the deploy
installed in the stack tier's machine and on the stack's running containers (PostgreSQL, Redis,
Prometheus and Traefik stand-ins), with `docker inspect`, `docker info` and the kernel's own view
(/proc) where Docker's answer is only a setting. Each test is named after the benchmark's number
as docker-bench-security numbers it (tests/2_docker_daemon_configuration.sh,
tests/5_container_runtime.sh); docs/cis-docker-benchmark.md lists what the project does for each
item and what still warns.

group_data/ci.py turns docker_no_new_privileges on (off by default), so 2.14 is checked here.
"""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.stack

# The containers of the ci profile and the server process in each (its name in /proc/<pid>/comm).
SERVERS = {"mnemos-postgres": "postgres", "mnemos-redis": "redis-server",
           "mnemos-prometheus": "prometheus", "mnemos-traefik": "traefik"}
# The capabilities each keeps (the rest dropped): what its entrypoint needs to chown and drop to its
# user; the capability numbers of linux/capability.h.
CAPABILITIES = {
    "mnemos-postgres": {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "SETGID": 6, "SETUID": 7},
    "mnemos-redis": {"CHOWN": 0, "DAC_OVERRIDE": 1, "SETGID": 6, "SETUID": 7},
    "mnemos-prometheus": {},
    "mnemos-traefik": {},
}
# The PIDs limit of each (PostgreSQL: max_connections 100 plus 100 of its own).
PIDS = {"mnemos-postgres": 200, "mnemos-redis": 128, "mnemos-prometheus": 512,
        "mnemos-traefik": 512}


def inspect(machine, *names: str) -> dict[str, dict]:
    infos = json.loads(machine.exec("docker inspect " + " ".join(names)).stdout)
    return {info["Name"].lstrip("/"): info for info in infos}


def daemon_json(machine) -> dict:
    return json.loads(machine.exec("cat /etc/docker/daemon.json").stdout)


# A process that has exited but is not reaped (the machine's PID 1, `tail`, reaps nothing) keeps
# its /proc entry in state Z.
ALIVE = "[ -d /proc/$1 ] && ! grep -q '^State:[[:space:]]*Z' /proc/$1/status 2>/dev/null"


def processes_named(machine, comm: str) -> list[str]:
    """PIDs (in the machine) of the live processes whose /proc/<pid>/comm is `comm`."""
    out = machine.exec(
        "alive() { " + ALIVE + "; }; for p in /proc/[0-9]*; do "
        "[ \"$(cat $p/comm 2>/dev/null)\" = " + comm + " ] && alive ${p#/proc/} "
        "&& echo ${p#/proc/}; done; true").stdout
    return out.split()


# ---------------------------------------------------------------- 2: the daemon

def test_cis_2_2_no_traffic_between_containers_on_the_default_bridge(provisioned):
    machine, _ = provisioned
    assert daemon_json(machine)["icc"] is False
    bridge = json.loads(machine.exec("docker network inspect bridge").stdout)[0]
    assert bridge["Options"].get("com.docker.network.bridge.enable_icc") == "false", \
        bridge["Options"]


def test_cis_2_14_containers_get_no_new_privileges_by_default(provisioned):
    """A container started with no security option at all: its process has NoNewPrivs set."""
    machine, _ = provisioned
    assert daemon_json(machine)["no-new-privileges"] is True
    status = machine.exec("docker run --rm --entrypoint cat "
                          f"{machine.image('mnemos-standin/redis:debian12')} "
                          "/proc/self/status").stdout
    assert "NoNewPrivs:\t1" in status, status


def test_cis_2_16_no_userland_proxy_the_published_ports_are_nat(provisioned):
    """No docker-proxy process serves the published ports (they answer, tests/stack/
    test_gateway.py and test_stack.py ask them); the engine lets 127.0.0.1 be routed to its
    bridges (route_localnet), which a published 127.0.0.1 port needs without the proxy."""
    machine, _ = provisioned
    assert daemon_json(machine)["userland-proxy"] is False
    assert processes_named(machine, "docker-proxy") == []
    bridges = machine.exec("ls /proc/sys/net/ipv4/conf").stdout.split()
    hostaccess = json.loads(machine.exec("docker network inspect mnemos_hostaccess").stdout)[0]
    bridge = "br-" + hostaccess["Id"][:12]
    assert bridge in bridges, bridges
    assert machine.exec(f"cat /proc/sys/net/ipv4/conf/{bridge}/route_localnet").stdout.strip() \
        == "1"
    assert machine.exec("bash -c 'exec 3<>/dev/tcp/127.0.0.1/5432'", check=False).returncode == 0


def test_cis_2_15_live_restore_the_stack_runs_through_an_engine_restart(provisioned):
    """dockerd stopped and started again (as the deploy restarts it for a new daemon.json without
    systemd): every container keeps its process and its start time, a published port answers
    while the engine is down, and the stack is healthy after."""
    machine, _ = provisioned
    assert daemon_json(machine)["live-restore"] is True
    assert machine.exec("docker info --format '{{.LiveRestoreEnabled}}'").stdout.strip() == "true"
    names = list(SERVERS)
    before = {n: (i["State"]["Pid"], i["State"]["StartedAt"])
              for n, i in inspect(machine, *names).items()}
    [dockerd] = processes_named(machine, "dockerd")
    try:
        machine.exec("alive() { " + ALIVE + "; }; kill " + dockerd + "; i=0; while alive "
                     + dockerd + " && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done; "
                     "! alive " + dockerd)
        assert machine.exec("docker version --format '{{.Server.Version}}'",
                            check=False).returncode != 0, "the engine still answers"
        for name, (pid, _) in before.items():
            assert machine.exec(f"test -d /proc/{pid}", check=False).returncode == 0, \
                f"{name} stopped with the engine"
        # the NAT rule stays: PostgreSQL's published port answers with no engine
        assert machine.exec("bash -c 'exec 3<>/dev/tcp/127.0.0.1/5432'",
                            check=False).returncode == 0
    finally:
        # started again as the deploy starts it without systemd (operations/docker.py, daemon)
        if not processes_named(machine, "dockerd"):
            machine.exec("setsid nohup dockerd >>/var/log/dockerd.log 2>&1 </dev/null &")
        machine.exec("i=0; until docker version >/dev/null 2>&1; do sleep 1; i=$((i+1)); "
                     "[ $i -lt 60 ] || exit 1; done")
    after = {n: (i["State"]["Pid"], i["State"]["StartedAt"], i["State"]["Status"])
             for n, i in inspect(machine, *names).items()}
    for name, (pid, started) in before.items():
        assert after[name] == (pid, started, "running"), (name, before[name], after[name])
    deadline = time.time() + 120
    while time.time() < deadline:
        health = {n: i["State"].get("Health", {}).get("Status")
                  for n, i in inspect(machine, *names).items()}
        if set(health.values()) == {"healthy"}:
            break
        time.sleep(2)
    assert set(health.values()) == {"healthy"}, health


# ---------------------------------------------------------------- 4 and 5: the containers

def test_cis_4_1_every_server_runs_as_a_user_not_root(provisioned):
    """The server process of each container, as the kernel sees it. Traefik runs as its user from
    the start (Config.User); PostgreSQL's and Redis's entrypoints start as root to chown their
    data and then drop to their users (docker-bench still reports those two: it reads
    Config.User only)."""
    machine, _ = provisioned
    infos = inspect(machine, *SERVERS)
    assert infos["mnemos-traefik"]["Config"]["User"] == "65532:65532"
    for name, comm in SERVERS.items():
        out = machine.exec(
            f"docker exec {name} sh -c 'for p in /proc/[0-9]*; do "
            f"[ \"$(cat $p/comm 2>/dev/null)\" = {comm} ] && grep \"^Uid:\" $p/status; done; "
            "true'").stdout
        uids = {line.split()[1] for line in out.splitlines()}
        assert uids and "0" not in uids, f"{name}: {comm} runs as uid {uids or 'nothing found'}"


def test_cis_5_4_every_capability_is_dropped_but_those_the_entrypoint_needs(provisioned):
    """Docker's record (CapDrop/CapAdd) and the kernel's: the bounding set of the container's
    first process holds exactly the kept capabilities."""
    machine, _ = provisioned
    for name, info in inspect(machine, *CAPABILITIES).items():
        kept = CAPABILITIES[name]
        assert info["HostConfig"]["CapDrop"] == ["ALL"], name
        added = sorted(c.removeprefix("CAP_") for c in info["HostConfig"]["CapAdd"] or [])
        assert added == sorted(kept), (name, added)
        status = machine.exec(f"cat /proc/{info['State']['Pid']}/status").stdout
        bounding = int(next(line.split()[1] for line in status.splitlines()
                            if line.startswith("CapBnd:")), 16)
        assert bounding == sum(1 << bit for bit in kept.values()), (name, hex(bounding))


def test_cis_5_8_no_privileged_port_is_mapped_inside_a_container(provisioned):
    """The container side of every published port (what `docker port` lists, as docker-bench
    reads it; an image's EXPOSE alone, such as Traefik's 80, maps nothing)."""
    machine, _ = provisioned
    for name, info in inspect(machine, *SERVERS).items():
        ports = [int(p.split("/")[0]) for p, bindings in
                 (info["NetworkSettings"]["Ports"] or {}).items() if bindings]
        assert ports and all(port >= 1024 for port in ports), (name, ports)


def test_cis_5_13_every_root_filesystem_is_read_only(provisioned):
    machine, _ = provisioned
    for name, info in inspect(machine, *SERVERS).items():
        assert info["HostConfig"]["ReadonlyRootfs"] is True, name
        write = machine.exec(f"docker exec {name} sh -c 'echo x > /cis-probe'", check=False)
        assert write.returncode != 0 and "Read-only file system" in write.stderr, \
            (name, write.stderr)
    # PostgreSQL writes its socket and the entrypoint its here-documents on tmpfs
    tmpfs = inspect(machine, "mnemos-postgres")["mnemos-postgres"]["HostConfig"]["Tmpfs"]
    assert sorted(tmpfs) == ["/tmp", "/var/run/postgresql"], tmpfs


def test_cis_5_26_every_container_has_no_new_privileges(provisioned):
    machine, _ = provisioned
    for name, info in inspect(machine, *SERVERS).items():
        assert "no-new-privileges:true" in (info["HostConfig"]["SecurityOpt"] or []), name
        status = machine.exec(f"cat /proc/{info['State']['Pid']}/status").stdout
        assert "NoNewPrivs:\t1" in status, name


def test_cis_5_29_every_container_has_a_pids_limit(provisioned):
    machine, _ = provisioned
    for name, info in inspect(machine, *PIDS).items():
        assert info["HostConfig"]["PidsLimit"] == PIDS[name], (name, info["HostConfig"])


def test_cis_5_32_no_container_mounts_the_docker_socket(provisioned):
    machine, _ = provisioned
    ids = machine.exec("docker ps -aq").stdout.split()
    assert ids
    for info in json.loads(machine.exec("docker inspect " + " ".join(ids)).stdout):
        sources = [m["Source"] for m in info["Mounts"]]
        assert not [s for s in sources if s.endswith("docker.sock")], (info["Name"], sources)
