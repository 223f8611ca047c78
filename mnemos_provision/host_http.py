"""
HTTP on the target host's loopback, for the Vault (hvac) and MinIO (minio SDK) clients that run on
the controller.

Vault and MinIO listen on the host's 127.0.0.1, which is not the controller's when the host is
reached over SSH or is a container. Instead of a tunnel, each request is executed ON the host by
curl, through whatever connector pyinfra uses (@local, SSH, @docker):

- the request's headers and body are uploaded to a 0700 temporary directory on the host (so a
  token or an unseal key is never on a command line, where `ps` or pyinfra's debug output would
  show it), curl sends them, and the response comes back base64-encoded (binary-safe);
- `HostSession` is a requests.Session for hvac; `HostPoolManager` is the urllib3-style client the
  minio SDK accepts as `http_client`;
- an answer that must not be lost (Vault's sys/init: the only copy of the unseal keys) can be
  written into a file on the host by the same command that sends the request (`Keep`,
  `responses_kept`), so it is safe on the host before the controller reads it.

`Runner` is the only part that touches a host: `PyinfraRunner` uses the current pyinfra host,
`LocalRunner` runs on this machine (tests, and @local without pyinfra).
"""

from __future__ import annotations

import base64
import hashlib
import os
import posixpath
import shlex
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from urllib.parse import urlsplit

import requests
import urllib3
from pyinfra.api import OperationError


class HostHTTPError(Exception):
    """The request could not be sent from the host (curl failed: nothing listens, timeout...)."""


class Runner:
    def put(self, data: bytes, remote: str) -> None:
        raise NotImplementedError

    def run(self, command: str) -> tuple[int, str]:
        raise NotImplementedError


class LocalRunner(Runner):
    def put(self, data: bytes, remote: str) -> None:
        fd = os.open(remote, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    def run(self, command: str) -> tuple[int, str]:
        result = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
        return result.returncode, result.stdout + result.stderr


class PyinfraRunner(Runner):
    """Through the current pyinfra host's connector; nothing is printed (print_output=False)."""

    def __init__(self, host):
        self.host = host

    # With the privileges of the run's operations (--sudo and the like): the keys file and the
    # answers kept belong where only the operations can write.
    def put(self, data: bytes, remote: str) -> None:
        from mnemos_provision.context import (
            connector_arguments,
            make_private_upload_dir,
            private_upload_dir,
        )
        private = private_upload_dir(self.host)  # over SSH with sudo: the login account's own
        try:
            if private:
                make_private_upload_dir(None, self.host, private)
            done = self.host.put_file(BytesIO(data), remote, print_output=False, print_input=False,
                                      remote_temp_filename=f"{private}/upload" if private else None,
                                      **connector_arguments(self.host))
        except (OSError, OperationError):
            done = False
        finally:
            if private:
                self.host.run_shell_command(f"rm -rf {shlex.quote(private)}", print_output=False)
        if not done:
            raise HostHTTPError(f"cannot upload a request file to {remote} on {self.host.name}")

    def run(self, command: str) -> tuple[int, str]:
        from mnemos_provision.context import connector_arguments
        ok, output = self.host.run_shell_command(command, print_output=False, print_input=False,
                                                 **connector_arguments(self.host))
        return (0 if ok else 1), "\n".join(output.stdout_lines + output.stderr_lines)


@dataclass
class Keep:
    """
    Where the body of a 200 answer is also written on the host, by the command that sent the
    request: `path`, 0600, in a directory made 0700 (and owned by `owner`, "user:group", when
    given) before the request is sent; the request is not sent when that fails. A file already at
    `path` is moved aside to `<path>.replaced-<UTC time>`, never overwritten. Any other answer
    leaves `path` alone.
    """
    path: str
    owner: str | None = None


class HostHTTP:
    """Sends one HTTP request from the host with curl; returns (status, headers, body)."""

    def __init__(self, runner: Runner, workdir: str | None = None, timeout: int = 30,
                 cacert: str | None = None):
        self.runner = runner
        self.workdir = workdir
        self.timeout = timeout
        self.cacert = cacert
        self._made_workdir = False

    def _dir(self) -> str:
        if self.workdir is None:
            self.workdir = tempfile.mkdtemp(prefix="mnemos-http-") if isinstance(
                self.runner, LocalRunner) else "/tmp/mnemos-http-" + os.urandom(6).hex()
        if not self._made_workdir:
            rc, out = self.runner.run(f"install -d -m 700 {shlex.quote(self.workdir)}")
            if rc != 0:
                raise HostHTTPError(f"cannot create {self.workdir} on the host: {out}")
            self._made_workdir = True
        return self.workdir

    def close(self) -> None:
        if self._made_workdir and self.workdir:
            self.runner.run(f"rm -rf {shlex.quote(self.workdir)}")
            self._made_workdir = False

    def request(self, method: str, url: str, headers: dict[str, str] | None = None,
                body: bytes | None = None, keep: Keep | None = None
                ) -> tuple[int, dict[str, str], bytes]:
        d = self._dir()
        tag = hashlib.sha256(os.urandom(16)).hexdigest()[:12]
        header_file, body_file = f"{d}/{tag}.h", f"{d}/{tag}.b"
        lines = [f"{k}: {v}" for k, v in (headers or {}).items()
                 if k.lower() not in ("content-length", "host", "connection")]
        self.runner.put(("\n".join(lines) + "\n").encode(), header_file)
        q = shlex.quote
        parts = ["curl", "-sS", "-g", "--max-time", str(self.timeout), "-X", q(method.upper()),
                 "-H", q("@" + header_file), "-H", "'Expect:'", "-D", q(f"{d}/{tag}.rh"),
                 "-o", q(f"{d}/{tag}.rb")]
        if self.cacert:
            parts += ["--cacert", q(self.cacert)]
        if body:
            self.runner.put(body, body_file)
            parts += ["--data-binary", q("@" + body_file)]
            if not any(k.lower() == "content-type" for k in (headers or {})):
                parts += ["-H", "'Content-Type:'"]  # no curl default (form-urlencoded)
        parts.append(q(url))
        if keep is None:
            send = " ".join(parts) + "; rc=$?; "
        else:
            send = _send_and_keep(parts, f"{d}/{tag}", keep)
        command = (send + f"cat {q(d)}/{tag}.rh 2>/dev/null; echo '@@BODY@@'; "
                   f"base64 {q(d)}/{tag}.rb 2>/dev/null | tr -d '\\n'; echo; "
                   f"rm -f {q(d)}/{tag}.*; exit $rc")
        rc, out = self.runner.run(command)
        if rc != 0 or "@@BODY@@" not in out:
            raise HostHTTPError(f"{method} {_redact(url)} from the host failed (curl exit {rc}): "
                                f"{out.strip().splitlines()[-1] if out.strip() else 'no output'}")
        head, _, encoded = out.partition("@@BODY@@")
        body_bytes = base64.b64decode(encoded.strip() or b"")
        # curl -D writes every response's headers (e.g. after a redirect or 100): keep the last
        blocks = [b for b in head.replace("\r", "").split("\n\n") if b.strip().startswith("HTTP/")]
        if not blocks:
            raise HostHTTPError(f"{method} {_redact(url)}: no HTTP response")
        status_line, *header_lines = blocks[-1].strip().split("\n")
        status = int(status_line.split()[1])
        response_headers: dict[str, str] = {}
        for line in header_lines:
            key, _, value = line.partition(":")
            response_headers[key.strip()] = value.strip()
        return status, response_headers, body_bytes


def _send_and_keep(curl: list[str], prefix: str, keep: Keep) -> str:
    """The shell that sends the request (curl's arguments) and keeps a 200 answer (see Keep)."""
    q = shlex.quote
    folder = posixpath.dirname(keep.path) or "."
    staged = posixpath.join(folder, "." + posixpath.basename(prefix) + ".kept")

    def owned(target: str) -> str:
        return f" && chown {q(keep.owner)} {q(target)}" if keep.owner else ""
    # the folder is made 0700 when missing; an existing one is never changed (README: Secrets)
    return (f"umask 077; if ! {{ [ -d {q(folder)} ] || "
            f"{{ mkdir -m 700 {q(folder)}{owned(folder)}; }}; }}; then "
            f"echo {q('cannot create ' + folder + ' to keep the answer in')} >&2; exit 1; fi; "
            f"code=$({' '.join(curl)} -w '%{{http_code}}'); rc=$?; "
            f"if [ $rc -eq 0 ] && [ \"$code\" = 200 ] && [ -s {q(prefix + '.rb')} ]; then "
            f"{{ cp {q(prefix + '.rb')} {q(staged)}{owned(staged)} && "
            f"{{ [ ! -e {q(keep.path)} ] || mv -f {q(keep.path)} "
            f"{q(keep.path + '.replaced-')}\"$(date -u +%Y%m%dT%H%M%SZ)\"; }} && "
            f"mv -f {q(staged)} {q(keep.path)}; }} 2>/dev/null; fi; ")


def _redact(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class _HostAdapter(requests.adapters.BaseAdapter):
    def __init__(self, http: HostHTTP):
        super().__init__()
        self.http = http
        self.keep: Keep | None = None

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        body = request.body
        if isinstance(body, str):
            body = body.encode()
        status, headers, content = self.http.request(request.method, request.url,
                                                     dict(request.headers), body, keep=self.keep)
        response = requests.Response()
        response.status_code = status
        response.headers = requests.structures.CaseInsensitiveDict(headers)
        response._content = content
        response.url = request.url
        response.request = request
        response.encoding = "utf-8"
        response.reason = ""
        return response

    def close(self):
        pass


def host_session(http: HostHTTP) -> requests.Session:
    """A requests.Session whose every request is sent from the host (for hvac's `session=`)."""
    session = requests.Session()
    adapter = _HostAdapter(http)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


@contextmanager
def responses_kept(session: requests.Session, keep: Keep):
    """Within the block, each 200 answer of `session` (a host_session) is kept on the host."""
    adapters = {id(a): a for a in session.adapters.values() if isinstance(a, _HostAdapter)}
    if not adapters:
        raise HostHTTPError("responses can be kept only by a session that sends from the host")
    for adapter in adapters.values():
        adapter.keep = keep
    try:
        yield
    finally:
        for adapter in adapters.values():
            adapter.keep = None


class HostPoolManager(urllib3.PoolManager):
    """A urllib3.PoolManager (the type the minio SDK requires) whose `urlopen` sends from the
    host."""

    def __init__(self, http: HostHTTP):
        super().__init__()
        self.http = http

    # the minio SDK calls urlopen with these keywords only; urllib3's full signature is not needed
    def urlopen(self, method, url, body=None, headers=None, preload_content=True,  # type: ignore[override]
                **_):
        if body is not None and not isinstance(body, (bytes, bytearray)):
            body = body.read() if hasattr(body, "read") else bytes(body)
        status, response_headers, content = self.http.request(
            method, url, {k: str(v) for k, v in (headers or {}).items()}, body)
        return urllib3.HTTPResponse(
            body=BytesIO(content), headers=urllib3.HTTPHeaderDict(response_headers),
            status=status, preload_content=preload_content, decode_content=False,
            request_method=method)

    def clear(self):
        pass
