"""
Facts about the host and its accounts: HostSnapshot (the whole host in one command), UserGroups,
ProcessRunning.

Every command is POSIX sh with tools a minimal Debian/Ubuntu has (coreutils, mawk, getent).
"""

from __future__ import annotations

import ipaddress
import shlex
import socket
import struct
from dataclasses import dataclass, field

from pyinfra.api import FactBase

from mnemos_provision.facts.docker import (
    ENGINE_API_SH,
    ENGINE_CURL,
    engine_url,
    json_list,
    project_containers,
)

# Go templates of `docker version` and `docker network inspect` in HostSnapshot's command.
# `docker version` (the /version endpoint) costs a tenth of `docker info` on a busy engine;
# Server.Platform.Name is "Docker Desktop <version> (<build>)" on Docker Desktop, as `docker info`'s
# OperatingSystem says "Docker Desktop"; empty or "Docker Engine - ..." otherwise.
DOCKER_VERSION_FORMAT = ('docker_server_version={{.Server.Version}}{{"\\n"}}'
                         "docker_operating_system={{.Server.Platform.Name}}")
NETWORK_FORMAT = "network={{.Id}},{{.Name}},{{range .IPAM.Config}}{{.Subnet}} {{end}}"

# The same three reads from the Engine API, with one curl (facts/docker.py, `engine_api`): the
# snapshot is on every run's critical path (95 ms against 53 ms on the host, docs/performance.md).
# Each answer is one line of JSON, printed as docker_api_<read>=<json>.
DOCKER_API_READS = ("version", "networks", "containers")


def _engine_api_sh(compose_project: str) -> str:
    urls = {"version": engine_url("/version"), "networks": engine_url("/networks"),
            # running ones only, as `docker ps` without -a
            "containers": project_containers(compose_project, stopped=False)}
    outputs = " ".join(f'-o "$t/{read}" {urls[read]}' for read in DOCKER_API_READS)
    return (
        f"{ENGINE_API_SH}\n"
        f"  da() {{ {ENGINE_CURL} {outputs} 2>/dev/null </dev/null || return 1\n"
        f"    for r in {' '.join(DOCKER_API_READS)}; do "
        """printf 'docker_api_%s=' "$r"; tr -d '\\n' <"$t/$r"; echo; rm -f "$t/$r"; done; }"""
    )


def _hex_to_ipv4(text: str) -> str:
    return socket.inet_ntoa(struct.pack("<I", int(text, 16)))


@dataclass
class Snapshot:
    os_id: str = ""
    os_version: str = ""
    os_codename: str = ""
    kernel: str = ""
    wsl_interop: bool = False
    arch: str = ""
    uname_arch: str = ""
    mem_kib: int = 0
    cpus: int = 0
    systemd: bool = False
    whoami: str = ""
    user: str = ""
    user_exists: bool = False
    user_home: str = ""
    user_group: str = ""
    user_groups: list = field(default_factory=list)
    disk_free_kib: int = 0
    disk_path: str = ""
    listening_ports: set = field(default_factory=set)
    routes: list = field(default_factory=list)  # (iface, network)
    docker_cli: str = ""
    docker_server_version: str = ""
    docker_operating_system: str = ""
    compose_version: str = ""
    docker_networks: list = field(default_factory=list)  # (id, name, [subnets])
    project_ports: set = field(default_factory=set)  # host ports published by our own containers
    desktop_integration: bool = False

    @property
    def wsl_version(self) -> int | None:
        """2 for WSL2, 1 for WSL1, None outside WSL."""
        kernel = self.kernel.lower()
        if "microsoft" not in kernel and not self.wsl_interop:
            return None
        # WSL2 kernels are named like 5.15.153.1-microsoft-standard-WSL2;
        # WSL1 reports the Windows build, e.g. 4.4.0-19041-Microsoft.
        if "wsl2" in kernel or "microsoft-standard" in kernel:
            return 2
        return 1

    @property
    def docker_desktop(self) -> bool:
        return self.desktop_integration or "docker desktop" in self.docker_operating_system.lower()


class HostSnapshot(FactBase[Snapshot]):
    """
    The whole host in one command: OS, WSL, memory, CPUs, disk free under `path`, listening TCP
    ports, IPv4 routes, Docker state and `user`'s account. Returns a Snapshot. The Compose
    version costs a start of the 60 MB plugin: read only when `compose_version`.
    """

    def requires_command(self, *args, **kwargs) -> str:
        return "sh"

    def command(self, user: str | None, path: str, compose_project: str,
                compose_version: bool = True):
        # no mnemos_user: the account pyinfra connects as, or the one that ran sudo
        compose_sh = ('echo "compose_version=$(docker compose version --short 2>/dev/null)"'
                      if compose_version else ":")
        user_sh = shlex.quote(user) if user else '"${SUDO_USER:-$(id -un)}"'
        return f"""
. /etc/os-release 2>/dev/null
echo "os_id=$ID"; echo "os_version=$VERSION_ID"; echo "os_codename=$VERSION_CODENAME"
echo "kernel=$(cat /proc/sys/kernel/osrelease 2>/dev/null)"
[ -e /proc/sys/fs/binfmt_misc/WSLInterop ] && echo "wsl_interop=1"
echo "arch=$(dpkg --print-architecture 2>/dev/null)"; echo "uname_arch=$(uname -m)"
echo "mem_kib=$(awk '/^MemTotal:/{{print $2}}' /proc/meminfo)"
echo "cpus=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)"
[ -d /run/systemd/system ] && echo "systemd=1"
echo "whoami=$(id -un)"
u={user_sh}; echo "user=$u"
pw=$(getent passwd "$u")
if [ -n "$pw" ]; then
  echo "user_exists=1"
  home=$(echo "$pw" | cut -d: -f6); echo "user_home=$home"
  echo "user_group=$(id -gn "$u")"; echo "user_groups=$(id -Gn "$u")"
else
  home=/nonexistent
fi
p={shlex.quote(path)}
case "$p" in "~/"*) p="$home${{p#\\~}}";; "~") p="$home";; esac
while [ ! -e "$p" ] && [ "$p" != "/" ]; do p=$(dirname "$p"); done
df -Pk "$p" 2>/dev/null | awk -v p="$p" 'NR==2{{print "disk_free_kib="$4; print "disk_path="p}}'
for f in /proc/net/tcp /proc/net/tcp6; do
  [ -r "$f" ] && awk 'NR>1 && $4=="0A"{{n=split($2,a,":"); print "listen_hex="a[n]}}' "$f"
done
[ -r /proc/net/route ] && awk 'NR>1{{print "route="$1","$2","$8}}' /proc/net/route
[ -d /mnt/wsl/docker-desktop ] && echo "desktop_integration=1"
if command -v docker >/dev/null 2>&1; then
  echo "docker_cli=$(readlink -f "$(command -v docker)")"
  dv() {{ docker version --format '{DOCKER_VERSION_FORMAT}' 2>/dev/null; }}
  dc() {{ {compose_sh}; }}
  dn() {{ ids=$(docker network ls -q 2>/dev/null)
    [ -n "$ids" ] && docker network inspect --format '{NETWORK_FORMAT}' $ids 2>/dev/null; }}
  dp() {{ docker ps --filter label=com.docker.compose.project={shlex.quote(compose_project)} \
    --format 'project_ports={{{{.Ports}}}}' 2>/dev/null; }}
  {_engine_api_sh(compose_project)}
  # side by side, each staged in a private directory (mktemp -d: 0700, a new name, in /tmp,
  # whose sticky bit keeps other accounts from renaming it; not TMPDIR) and printed
  # in order; one after the other when there is no such directory. The Engine API's answers
  # when the CLI would ask the same engine and it answers, else the CLI's.
  if t=$(mktemp -d /tmp/mnemos-snapshot.XXXXXXXXXX 2>/dev/null); then
    dc >"$t/c" &
    if ! {{ engine_api && da >"$t/a"; }}; then
      : >"$t/a"; dv >"$t/v" & dn >"$t/n" & dp >"$t/p" &
    fi
    wait; cat "$t/a" "$t/v" "$t/c" "$t/n" "$t/p" 2>/dev/null; rm -rf "$t"
  else
    dv; dc; dn; dp
  fi
fi
true
"""

    def process(self, output):
        snap = Snapshot()
        for line in output:
            key, _, value = line.partition("=")
            if key == "listen_hex":
                try:
                    snap.listening_ports.add(int(value, 16))
                except ValueError:
                    pass
            elif key == "route":
                try:
                    iface, dest, mask = value.split(",")
                    net = ipaddress.ip_network(f"{_hex_to_ipv4(dest)}/{_hex_to_ipv4(mask)}",
                                               strict=False)
                    snap.routes.append((iface, net))
                except (ValueError, struct.error):
                    pass
            elif key == "network":
                net_id, name, subnets = (value.split(",", 2) + ["", ""])[:3]
                snap.docker_networks.append((net_id, name, subnets.split()))
            elif key == "project_ports":
                # "127.0.0.1:5432->5432/tcp, 127.0.0.1:6379->6379/tcp"; consecutive ports of one
                # container come as a range: "127.0.0.1:9000-9001->9000-9001/tcp" (MinIO)
                for part in value.split(","):
                    host_side = part.strip().split("->")[0]
                    first, _, last = host_side.rsplit(":", 1)[-1].partition("-")
                    if first.isdigit() and (last.isdigit() or not last):
                        snap.project_ports.update(range(int(first), int(last or first) + 1))
            elif key == "docker_api_version":
                answer = (json_list(f"[{value}]") or [{}])[0]
                platform = answer.get("Platform")
                snap.docker_server_version = str(answer.get("Version") or "")
                snap.docker_operating_system = str(
                    (platform.get("Name") if isinstance(platform, dict) else "") or "")
            elif key == "docker_api_networks":
                for entry in json_list(value):
                    ipam = entry.get("IPAM")
                    ipam = ipam if isinstance(ipam, dict) else {}
                    subnets = [str(c["Subnet"]) for c in ipam.get("Config") or []
                               if isinstance(c, dict) and c.get("Subnet")]
                    snap.docker_networks.append((str(entry.get("Id", "")),
                                                 str(entry.get("Name", "")),
                                                 subnets))
            elif key == "docker_api_containers":
                # the host ports of published ports, as `docker ps`' Ports column shows them
                for container in json_list(value):
                    for port in container.get("Ports") or []:
                        public = port.get("PublicPort") if isinstance(port, dict) else None
                        if isinstance(public, int) and public > 0:
                            snap.project_ports.add(public)
            elif key in ("wsl_interop", "systemd", "user_exists", "desktop_integration"):
                setattr(snap, key, value == "1")
            elif key in ("mem_kib", "cpus", "disk_free_kib"):
                setattr(snap, key, int(value) if value.isdigit() else 0)
            elif key == "user_groups":
                snap.user_groups = value.split()
            elif hasattr(snap, key):
                setattr(snap, key, value)
        return snap


class UserGroups(FactBase[list[str]]):
    """The groups of `user` (id -Gn); [] when the user does not exist."""

    def command(self, user: str):
        return f"id -Gn {shlex.quote(user)} 2>/dev/null || true"

    def process(self, output):
        return output[0].split() if output else []


class ProcessRunning(FactBase[bool]):
    """Whether a process with this exact name (comm) runs; reads /proc (no procps needed)."""

    def command(self, comm: str):
        return f"grep -qsx -- {shlex.quote(comm)} /proc/[0-9]*/comm && echo yes || echo no"

    def process(self, output):
        return bool(output) and output[-1] == "yes"
