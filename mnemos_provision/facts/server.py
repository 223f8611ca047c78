"""
Facts that read many things in one command, so that a converged host costs few round trips.

- HostSnapshot: OS, WSL, resources, listening ports, routes, Docker state, the user: one command.
- TreeState: type, mode, owner and sha256 of every managed path of the tree: one command.
- ComposeState: the containers of the compose project with their config hash and health.

Every command is POSIX sh with tools a minimal Debian/Ubuntu has (coreutils, mawk, getent).
"""

from __future__ import annotations

import ipaddress
import shlex
import socket
import struct
from dataclasses import dataclass, field

from pyinfra.api import FactBase


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


class HostSnapshot(FactBase):
    """
    The whole host in one command: OS, WSL, memory, CPUs, disk free under `path`, listening TCP
    ports, IPv4 routes, Docker state and `user`'s account. Returns a Snapshot. The Compose
    version costs a start of the 60 MB plugin: read only when `compose_version`.
    """

    requires_command = "sh"

    def command(self, user: str | None, path: str, compose_project: str, compose_version: bool = True):
        # no mnemos_user: the account pyinfra connects as, or the one that ran sudo
        compose_version = ('echo "compose_version=$(docker compose version --short 2>/dev/null)"'
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
  docker info --format 'docker_server_version={{{{.ServerVersion}}}}{{{{"\\n"}}}}docker_operating_system={{{{.OperatingSystem}}}}' 2>/dev/null
  {compose_version}
  ids=$(docker network ls -q 2>/dev/null)
  [ -n "$ids" ] && docker network inspect --format 'network={{{{.Id}}}},{{{{.Name}}}},{{{{range .IPAM.Config}}}}{{{{.Subnet}}}} {{{{end}}}}' $ids 2>/dev/null
  docker ps --filter label=com.docker.compose.project={shlex.quote(compose_project)} \
    --format 'project_ports={{{{.Ports}}}}' 2>/dev/null
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
                    net = ipaddress.ip_network(f"{_hex_to_ipv4(dest)}/{_hex_to_ipv4(mask)}", strict=False)
                    snap.routes.append((iface, net))
                except (ValueError, struct.error):
                    pass
            elif key == "network":
                net_id, name, subnets = (value.split(",", 2) + ["", ""])[:3]
                snap.docker_networks.append((net_id, name, subnets.split()))
            elif key == "project_ports":
                # "127.0.0.1:5432->5432/tcp, 127.0.0.1:6379->6379/tcp"
                for part in value.split(","):
                    host_side = part.strip().split("->")[0]
                    port = host_side.rsplit(":", 1)[-1]
                    if port.isdigit():
                        snap.project_ports.add(int(port))
            elif key in ("wsl_interop", "systemd", "user_exists", "desktop_integration"):
                setattr(snap, key, value == "1")
            elif key in ("mem_kib", "cpus", "disk_free_kib"):
                setattr(snap, key, int(value) if value.isdigit() else 0)
            elif key == "user_groups":
                snap.user_groups = value.split()
            elif hasattr(snap, key):
                setattr(snap, key, value)
        return snap


@dataclass
class PathState:
    kind: str  # "directory" | "regular file" | other stat %F values
    mode: str  # octal, e.g. "644"
    owner: str
    group: str
    sha256: str | None = None
    size: int | None = None
    mtime: int | None = None  # seconds since the epoch
    links: int = 1  # hard links to the inode (more than one: the same file is also elsewhere)


class TreeState(FactBase):
    """
    Type, mode, owner, size, mtime and (for `files`) sha256 of the given paths under `root`, in
    one command; `unhashed` files are only stat'ed (large files compared by size and mtime).
    Returns {relative path: PathState}; paths that do not exist are absent.
    """

    requires_command = "sh"

    @staticmethod
    def default():
        return {}

    def command(self, root: str, dirs: list[str], files: list[str], unhashed: list[str] = ()):
        quoted_dirs = " ".join(shlex.quote(p) for p in dirs)
        quoted_files = " ".join(shlex.quote(p) for p in files)
        quoted_unhashed = " ".join(shlex.quote(p) for p in unhashed)
        hashes = f"sha256sum -- {quoted_files} 2>/dev/null; " if files else ""
        return (
            f"cd {shlex.quote(root)} 2>/dev/null || exit 0; "
            f"stat -c 'S|%F|%a|%U|%G|%s|%Y|%h|%n' -- {quoted_dirs} {quoted_files} {quoted_unhashed} "
            f"2>/dev/null; {hashes}true"
        )

    def process(self, output):
        states: dict[str, PathState] = {}
        hashes: dict[str, str] = {}
        for line in output:
            if line.startswith("S|"):
                _, kind, mode, owner, group, size, mtime, links, name = line.split("|", 8)
                states[name] = PathState(kind, mode, owner, group, None, int(size), int(mtime),
                                         int(links))
            else:
                digest, _, name = line.partition("  ")
                hashes[name] = digest
        for name, digest in hashes.items():
            if name in states:
                states[name].sha256 = digest
        return states


class ComposeStatus(FactBase):
    """
    What the rendered compose file wants and what runs, in one command:
    {"wanted": {service: config hash} | None, "running": {service: {"hash", "state", "health"}} | None}.
    `wanted` comes from `docker compose config --hash '*'` in the tree (active profiles only);
    either is None when Docker does not answer or the file is not there.
    """

    requires_command = "docker"

    @staticmethod
    def default():
        return {"wanted": None, "running": None}

    def command(self, root: str, project: str):
        fmt = (
            'R|{{.Label "com.docker.compose.service"}}|{{.Label "com.docker.compose.config-hash"}}|'
            "{{.State}}|{{.Status}}"
        )
        return (
            f"docker ps -a --filter label=com.docker.compose.project={shlex.quote(project)} "
            f"--format {shlex.quote(fmt)} 2>/dev/null || {{ echo DOCKER_DOWN; exit 0; }}; "
            f"cd {shlex.quote(root)} 2>/dev/null && [ -f docker-compose.yml ] && "
            "docker compose config --hash '*' 2>/dev/null | sed 's/^/W|/' || echo NO_COMPOSE_FILE"
        )

    def process(self, output):
        if output and output[0] == "DOCKER_DOWN":
            return {"wanted": None, "running": None}
        wanted: dict | None = {}
        running: dict = {}
        for line in output:
            if line == "NO_COMPOSE_FILE":
                wanted = None
            elif line.startswith("W|"):
                parts = line[2:].split()
                if len(parts) == 2 and wanted is not None:
                    wanted[parts[0]] = parts[1]
            elif line.startswith("R|"):
                parts = line[2:].split("|")
                if len(parts) != 4:
                    continue
                service, config_hash, state, status = parts
                health = "none"
                for word in ("healthy", "unhealthy", "health: starting"):
                    if f"({word})" in status:
                        health = word.replace("health: ", "")
                running[service] = {"hash": config_hash, "state": state, "health": health}
        return {"wanted": wanted, "running": running}


class UserGroups(FactBase):
    """The groups of `user` (id -Gn); [] when the user does not exist."""

    def command(self, user: str):
        return f"id -Gn {shlex.quote(user)} 2>/dev/null || true"

    def process(self, output):
        return output[0].split() if output else []


class LineInFile(FactBase):
    """Whether `path` has `line` as a whole line: "present", "absent", or "missing" (no such file)."""

    def command(self, path: str, line: str):
        q = shlex.quote
        return (f"[ -f {q(path)} ] || {{ echo missing; exit 0; }}; "
                f"grep -qxF -- {q(line)} {q(path)} && echo present || echo absent")

    def process(self, output):
        return output[0] if output else "missing"


class AptPackages(FactBase):
    """
    For each name: whether it is installed (and which version) and, for those that are not,
    whether apt has a candidate, in one command (apt-cache runs only for missing packages: it
    costs up to a second per call on a host with large package lists).
    Returns {name: {"installed": bool, "version": str, "candidate": bool}}, plus the key
    "DPKG_INTERRUPTED" when an interrupted dpkg run must be finished first.
    """

    requires_command = "dpkg-query"

    @staticmethod
    def default():
        return {}

    def command(self, names: list[str]):
        quoted = " ".join(shlex.quote(n) for n in names)
        return (
            # one dpkg-query for all names; a name dpkg never heard of prints nothing
            f"s=$(dpkg-query -W -f='S|${{Package}}|${{db:Status-Abbrev}}|${{Version}}\\n' {quoted} 2>/dev/null); "
            'printf "%s\\n" "$s"; '
            f"missing=$(printf '%s\\n' \"$s\" | awk -F'|' -v want={shlex.quote(' '.join(names))} "
            "'$3 ~ /^ii/ {ok[$2]=1} END {n=split(want, w, \" \"); "
            "for (i=1; i<=n; i++) if (!(w[i] in ok)) printf \"%s \", w[i]}'); "
            '[ -n "$missing" ] && apt-cache policy $missing 2>/dev/null | '
            "awk '/^[^ ]/{p=$1; sub(/:$/, \"\", p)} /Candidate:/{print \"C\", p, $2}'; "
            # an interrupted dpkg run leaves files here; apt refuses to work until it is finished
            "ls -A /var/lib/dpkg/updates 2>/dev/null | grep -q . && echo 'DPKG_INTERRUPTED'; true"
        )

    def process(self, output):
        out: dict[str, dict] = {}
        for line in output:
            if line.startswith("S|"):
                _, name, status, version = (line.split("|") + ["", "", ""])[:4]
                installed = status.strip().startswith("ii")
                if installed or name not in out:  # multi-arch: installed for any architecture
                    out[name] = {"installed": installed, "version": version, "candidate": installed}
                continue
            parts = line.split()
            if parts == ["DPKG_INTERRUPTED"]:
                out["DPKG_INTERRUPTED"] = {"installed": False, "version": "", "candidate": False}
            elif len(parts) == 3 and parts[0] == "C":
                info = out.setdefault(parts[1], {"installed": False, "version": "", "candidate": False})
                info["candidate"] = parts[2] not in ("none", "(none)")
        return out


class DockerAnswers(FactBase):
    """Whether `docker info` answers (the engine is up and reachable)."""

    def command(self):
        return "docker info >/dev/null 2>&1 && echo yes || echo no"

    def process(self, output):
        return bool(output) and output[0] == "yes"


class AptListsAge(FactBase):
    """Seconds since apt's package lists were last refreshed; None when there are none."""

    def command(self):
        return (
            "t=$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -printf '%T@\\n' "
            "2>/dev/null | sort -n | tail -n 1); "
            '[ -n "$t" ] && echo $(( $(date +%s) - ${t%.*} )) || echo none'
        )

    def process(self, output):
        value = output[0] if output else "none"
        return int(value) if value.lstrip("-").isdigit() else None


class DockerImagesPresent(FactBase):
    """Which of `images` the engine has locally. Returns a set; None when Docker does not answer."""

    requires_command = "docker"

    def command(self, images: list[str]):
        quoted = " ".join(shlex.quote(i) for i in images)
        return ("docker info >/dev/null 2>&1 || { echo DOCKER_DOWN; exit 0; }; "
                f"for i in {quoted}; do docker image inspect \"$i\" >/dev/null 2>&1 && echo \"$i\"; done; true")

    def process(self, output):
        if output and output[0] == "DOCKER_DOWN":
            return None
        return set(output)


class ProcessRunning(FactBase):
    """Whether a process with this exact name (comm) runs; reads /proc (no procps needed)."""

    def command(self, comm: str):
        return f"grep -qsx -- {shlex.quote(comm)} /proc/[0-9]*/comm && echo yes || echo no"

    def process(self, output):
        return bool(output) and output[-1] == "yes"
