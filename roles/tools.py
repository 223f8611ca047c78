"""
The design's extra tools, each optional through `tools`: yq and hadolint (pinned downloads,
verified by sha256), trivy (its signed apt repository, pinned version) and the Claude Code CLI
(npm; logging in stays the user's step). An unreachable source is one clear line naming the tool
and how to leave it out.
"""

from __future__ import annotations

import functools
import shlex
from typing import Callable

import pyinfra.operations.server
from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.facts.files import Sha256File
from pyinfra.facts.server import Command

from mnemos_provision.context import HostContext, fail
from mnemos_provision.fact_batch import later
from mnemos_provision.operations import apt, files
from mnemos_provision.operations.util import changes

TRIVY_KEYRING = "/usr/share/keyrings/trivy.gpg"
UNAME_ARCH = {"amd64": "x86_64", "arm64": "arm64"}


def _differs(read: Callable[[], str | None], sha256: str) -> bool:
    return read() != sha256


def _leave_out(tool: str) -> str:
    return f"leave it out with tools = [...] without {tool!r} in group_data"


def download_command(tool: str, url: str, sha256: str, dest: str) -> str:
    """Download to a temporary file, verify sha256, then install; one clear line on failure."""
    tmp = f"{dest}.download"
    q = shlex.quote
    return (
        f"curl -fsSL --retry 2 -o {q(tmp)} {q(url)} || "
        f"{{ rm -f {q(tmp)}; "
        f"echo {q(f'tool {tool}: cannot download {url}; {_leave_out(tool)}')} >&2; exit 1; }}\n"
        f"echo {q(sha256 + '  ' + tmp)} | sha256sum -c --status || "
        f"{{ rm -f {q(tmp)}; "
        f"echo {q(f'tool {tool}: sha256 of {url} is not {sha256}; refusing it')} >&2; exit 1; }}\n"
        f"install -m 755 {q(tmp)} {q(dest)} && rm -f {q(tmp)}"
    )


def installed_npm_version_command(prefix: str, name: str, command: str) -> str:
    """A command printing the version of the npm package `name` installed globally under
    `prefix` (npm install -g --prefix: <prefix>/lib/node_modules/<name>, its command linked in
    <prefix>/bin), nothing when absent or half there (no executable <prefix>/bin/<command>).
    It reads the files npm wrote, without running npm (0.3-0.4 s of a no-op's fact batch)."""
    q = shlex.quote
    package_json = q(f"{prefix}/lib/node_modules/{name}/package.json")
    return (f"[ -f {package_json} ] && [ -x {q(f'{prefix}/bin/{command}')} ] && "
            f"sed -n 's/^  \"version\": \"\\(.*\\)\",\\{{0,1\\}}$/\\1/p' "
            f"{package_json} || true")


@deploy("Tools")
def tools(ctx: HostContext):
    s = ctx.settings
    arch = ctx.snap.arch
    problems = []
    for tool in ("yq", "hadolint"):
        if tool in s.tools and arch not in s.tool_downloads[tool]["sha256"]:
            problems.append(f"tool_downloads[{tool!r}]['sha256'] has no checksum for {arch}; "
                            f"add one or {_leave_out(tool)}")
    if problems:
        fail("tools cannot be installed verified:", problems)

    for tool in ("yq", "hadolint"):
        if tool not in s.tools:
            continue
        spec = s.tool_downloads[tool]
        sha256 = spec["sha256"][arch]
        dest = f"/usr/local/bin/{tool}"
        url = spec["url"].format(version=spec["version"], arch=arch,
                                 uname_arch=UNAME_ARCH.get(arch, arch))
        installed = later(Sha256File, path=dest)
        pyinfra.operations.server.shell(
            name=f"Install {tool} {spec['version']} (unless installed, sha256 verified)",
            commands=[download_command(tool, url, sha256, dest)],
            _if=functools.partial(_differs, installed, sha256))

    if "trivy" in s.tools:
        trivy_key = later(Sha256File, path=TRIVY_KEYRING)
        key_failed = shlex.quote("tool trivy: cannot fetch its apt key; " + _leave_out("trivy"))
        pyinfra.operations.server.shell(
            name="Install trivy's apt key",
            commands=[f"curl -fsSL {shlex.quote(s.trivy_apt_repo_url)}/public.key | "
                      f"gpg --dearmor -o {TRIVY_KEYRING}.new && "
                      f"mv {TRIVY_KEYRING}.new {TRIVY_KEYRING} || {{ echo {key_failed} >&2; "
                      "exit 1; }"],
            _if=lambda: trivy_key() is None,
        )
        source = files.system_files(
            name="Add trivy's apt repository",
            files=[("/etc/apt/sources.list.d/trivy.list",
                    f"deb [signed-by={TRIVY_KEYRING}] {s.trivy_apt_repo_url} "
                    f"{ctx.snap.os_codename} main\n".encode(), "644")],
        )
        apt.update(name="Refresh the apt cache for trivy's repository",
                   cache_time=s.apt_cache_valid_time, force=changes(source))
        apt.packages(name=f"Install trivy {s.trivy_version}", packages=[f"trivy={s.trivy_version}"])

    if "claude-code" in s.tools:
        apt.packages(name="Install Node.js and npm for the Claude Code CLI",
                     packages=["nodejs", "npm"])
        package = s.claude_code_npm_package
        name, _, version = package.rpartition("@")
        npm_failed = shlex.quote("tool claude-code: npm install failed (Node.js 18+ and the npm "
                                 "registry are needed); " + _leave_out("claude-code"))
        prefix = s.claude_code_npm_prefix
        # the installed version (empty when none): the package.json npm wrote under the prefix
        # the deploy gives it (not npm's configured one: asking npm costs a no-op 0.3-0.4 s)
        installed = later(Command, command=installed_npm_version_command(prefix, name, "claude"))
        pyinfra.operations.server.shell(
            name=f"Install the Claude Code CLI ({package})",
            commands=[f"npm install -g --prefix {shlex.quote(prefix)} --no-audit --no-fund "
                      f"{shlex.quote(package)} || {{ echo {npm_failed} >&2; exit 1; }}"],
            _if=lambda: (installed() or "").strip() != version,
        )
        logger.info(f"[{host.name}] Claude Code CLI: log in yourself once with `claude` "
                    "(the deploy never handles your credentials)")
