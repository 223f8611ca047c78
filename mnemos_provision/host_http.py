"""
HTTP on the target host's loopback, for the Vault (hvac) and MinIO (minio SDK) clients that run on
the controller.

Vault and MinIO listen on the host's 127.0.0.1, which is not the controller's when the host is
reached over SSH or is a container. Instead of a tunnel, requests are executed ON the host by
curl, through whatever connector pyinfra uses (@local, SSH, @docker):

- one host command sends any number of requests (`HostHTTP.send`): they travel on the command's
  standard input (headers and bodies base64-encoded), so a token or an unseal key is never on a
  command line, where `ps` or pyinfra's debug output would show it, and never in a file the
  command does not remove (a 0700 directory of its own, removed on exit); the answers come back
  base64-encoded (binary-safe);
- `HostHTTP.prefetch` records the requests a list of client calls would send, sends them in one
  command, and `request` answers each of them once from what came back (the Vault and MinIO plans
  read a converged server in one host command, whatever the number of secrets or buckets);
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
import os
import posixpath
import shlex
import subprocess
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from urllib.parse import urlsplit

import requests
import urllib3
from pyinfra import logger
from pyinfra.api import OperationError


class HostHTTPError(Exception):
    """The request could not be sent from the host (curl failed: nothing listens, timeout...)."""


class Runner:
    def put(self, data: bytes, remote: str) -> None:
        raise NotImplementedError

    def run(self, command: str, stdin: list[str] | None = None) -> tuple[int, str]:
        """Run `command` on the host, `stdin` (lines) on its standard input; (exit code, output)."""
        raise NotImplementedError


class LocalRunner(Runner):
    def put(self, data: bytes, remote: str) -> None:
        fd = os.open(remote, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    def run(self, command: str, stdin: list[str] | None = None) -> tuple[int, str]:
        result = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                                input="".join(line + "\n" for line in stdin or []))
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
            raise HostHTTPError(f"cannot upload {remote} to {self.host.name}")

    def run(self, command: str, stdin: list[str] | None = None) -> tuple[int, str]:
        from mnemos_provision.context import connector_arguments
        # pyinfra writes `_stdin` to the command (local, SSH, docker exec -i) and then closes it;
        # sudo's password, when there is one, goes through its askpass helper, not this input
        arguments = dict(connector_arguments(self.host))
        if stdin:
            arguments["_stdin"] = stdin
        ok, output = self.host.run_shell_command(command, print_output=False, print_input=False,
                                                 **arguments)
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


@dataclass
class Request:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None

    def key(self) -> tuple[str, str, bytes, str]:
        """What identifies the answer: the request and who asks (the Vault token, the S3 access
        key), not its date or signature."""
        return self.method, self.url, self.body or b"", identity(self.headers)


Answer = tuple[int, dict[str, str], bytes]  # status, headers, body


def identity(headers: dict[str, str]) -> str:
    """Who a request is sent as: its Vault token, or the access key of its AWS signature."""
    sent = {k.lower(): v for k, v in headers.items()}
    if "x-vault-token" in sent:
        return "vault:" + sent["x-vault-token"]
    credential = sent.get("authorization", "").partition("Credential=")[2]
    return "aws:" + credential.split("/", 1)[0] if credential else ""


class _Recorded(Exception):
    """Raised to the client while HostHTTP.prefetch records its calls' requests."""


# Each request is one line of the command's standard input: METHOD URL HEADERS BODY (the last two
# base64, "-" for no body), then END. Each answer is five lines of its output: the curl exit code,
# then "H:", "B:" and "E:" + base64 of the answer's headers, body and curl's error message.
_END = "@@END@@"
_LOOP = r"""
umask 077
d=$(mktemp -d "${TMPDIR:-/tmp}/mnemos-http.XXXXXXXXXX") || exit 1
trap 'rm -rf "$d"' EXIT
%(prepare)s
while read -r m u h b; do
  [ "$m" = %(end)s ] && break
  rm -f "$d/rh" "$d/rb" "$d/e"
  printf '%%s' "$h" | base64 -d > "$d/h"
  if [ "$m" = HEAD ]; then set -- -I; else set -- -X "$m"; fi
  if [ "$b" != - ]; then
    printf '%%s' "$b" | base64 -d > "$d/b"; set -- "$@" --data-binary "@$d/b"
  fi
  code=$(curl -sS -g --max-time %(timeout)d %(cacert)s"$@" -H "@$d/h" -D "$d/rh" -o "$d/rb" \
         -w '%%{http_code}' "$u" </dev/null 2>"$d/e"); rc=$?
%(keep)s  echo "@@ANSWER $rc"
  printf 'H:'; base64 < "$d/rh" 2>/dev/null | tr -d '\n'; echo
  printf 'B:'; base64 < "$d/rb" 2>/dev/null | tr -d '\n'; echo
  printf 'E:'; tail -c 300 "$d/e" 2>/dev/null | base64 | tr -d '\n'; echo
done
echo %(end)s
"""


class HostHTTP:
    """
    Sends HTTP requests from the host with curl: each `send` is one host command, whatever the
    number of requests. `request` sends one (or answers it from a `prefetch`).
    """

    def __init__(self, runner: Runner, timeout: int = 30, cacert: str | None = None):
        self.runner = runner
        self.timeout = timeout
        self.cacert = cacert
        self.commands = 0  # host commands sent: the cost the tests and the bench count
        self._prefetched: dict[tuple, list[Answer]] = {}
        self._recording: list[Request] | None = None

    def close(self) -> None:
        """Nothing is left on the host between commands; what was prefetched is dropped."""
        self._prefetched.clear()

    def request(self, method: str, url: str, headers: dict[str, str] | None = None,
                body: bytes | None = None, keep: Keep | None = None) -> Answer:
        wanted = Request(method.upper(), url, dict(headers or {}), body or None)
        if self._recording is not None:
            self._recording.append(wanted)
            raise _Recorded(f"{wanted.method} {_redact(url)} recorded")
        answers = self._prefetched.get(wanted.key())
        if answers and keep is None:
            return answers.pop(0)
        answer = self.send([wanted], keep=keep)[0]
        if isinstance(answer, HostHTTPError):
            raise answer
        return answer

    def prefetch(self, calls: list[Callable[[], object]]) -> None:
        """
        Run each call with nothing sent, recording the request it makes first, then send all of
        them in one host command; `request` answers each once from those answers (a request a
        call did not reach, or whose sending failed, is sent when it is made).
        """
        self._prefetched.clear()  # answers of an earlier prefetch are not answers any more
        recorded: list[Request] = []
        self._recording = recorded
        try:
            for call in calls:
                try:
                    call()
                except _Recorded:
                    pass
        finally:
            self._recording = None
        if not recorded:
            return
        for sent, answer in zip(recorded, self.send(recorded)):
            if not isinstance(answer, HostHTTPError):
                self._prefetched.setdefault(sent.key(), []).append(answer)

    def send(self, batch: list[Request], keep: Keep | None = None
             ) -> list[Answer | HostHTTPError]:
        """One host command for every request of `batch`; an answer, or the error of its curl."""
        if keep is not None and len(batch) != 1:
            raise ValueError("an answer is kept only for a request sent alone")
        lines = []
        for r in batch:
            if any(c.isspace() for c in r.url + r.method):
                raise HostHTTPError(f"{r.method} {_redact(r.url)}: not a URL curl can be given")
            header_lines = [f"{k}: {v}" for k, v in r.headers.items()
                            if k.lower() not in ("content-length", "host", "connection", "expect")]
            header_lines.append("Expect:")  # no 100-continue round trip
            if r.body and not any(k.lower() == "content-type" for k in r.headers):
                header_lines.append("Content-Type:")  # no curl default (form-urlencoded)
            encoded_headers = _b64(("\n".join(header_lines) + "\n").encode())
            lines.append(f"{r.method} {r.url} {encoded_headers} {_b64(r.body) if r.body else '-'}")
        lines.append(_END)
        self.commands += 1
        logger.debug("host_http: %d request(s) in one host command: %s", len(batch),
                     ", ".join(f"{r.method} {urlsplit(r.url).path}" for r in batch))
        rc, out = self.runner.run(self._command(keep), stdin=lines)
        answers = _parse(out, batch)
        if rc != 0 or answers is None:
            tail = out.strip().splitlines()[-1] if out.strip() else "no output"
            first = batch[0]
            raise HostHTTPError(f"{first.method} {_redact(first.url)}"
                                f"{f' and {len(batch) - 1} more' if len(batch) > 1 else ''} from "
                                f"the host failed (exit {rc}): {tail}")
        return answers

    def _command(self, keep: Keep | None) -> str:
        q = shlex.quote
        prepare, keep_step = ("", "") if keep is None else _keep_steps(keep)
        return _LOOP % {"prepare": prepare, "keep": keep_step, "end": q(_END),
                        "timeout": self.timeout,
                        "cacert": f"--cacert {q(self.cacert)} " if self.cacert else ""}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _parse(out: str, batch: list[Request]) -> list[Answer | HostHTTPError] | None:
    """The answers in the command's output, in the order sent; None when the output is cut."""
    lines = out.splitlines()
    answers: list[Answer | HostHTTPError] = []
    i = 0
    while i < len(lines) and len(answers) < len(batch):
        if not lines[i].startswith("@@ANSWER "):
            i += 1
            continue
        rc, record = lines[i].split()[1], lines[i + 1:i + 4]
        if len(record) != 3 or [r[:2] for r in record] != ["H:", "B:", "E:"]:
            return None
        head, body, error = (base64.b64decode(r[2:]) for r in record)
        sent = batch[len(answers)]
        answers.append(_answer(sent, rc, head.decode(errors="replace"), body,
                               error.decode(errors="replace").strip()))
        i += 4
    if len(answers) != len(batch) or _END not in lines[i:]:
        return None
    return answers


def _answer(sent: Request, rc: str, head: str, body: bytes, error: str) -> Answer | HostHTTPError:
    what = f"{sent.method} {_redact(sent.url)}"
    if rc != "0":
        return HostHTTPError(f"{what} from the host failed (curl exit {rc}): "
                             f"{error.splitlines()[-1] if error else 'no message'}")
    # curl -D writes every response's headers (e.g. after a redirect or 100): keep the last
    blocks = [b for b in head.replace("\r", "").split("\n\n") if b.strip().startswith("HTTP/")]
    if not blocks:
        return HostHTTPError(f"{what}: no HTTP response")
    status_line, *header_lines = blocks[-1].strip().split("\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    # HEAD is sent with curl -I, which writes the headers where the body would go
    return int(status_line.split()[1]), headers, b"" if sent.method == "HEAD" else body


def _keep_steps(keep: Keep) -> tuple[str, str]:
    """The shell that prepares the folder before the request, and keeps a 200 answer (Keep): both
    done by the account of `keep.owner` (docs/security-writes.md), root only opening its own
    copy of the answer for it."""
    from mnemos_provision.operations.util import AS_USER, as_user, make_dirs_script, staged_name
    q = shlex.quote
    folder = posixpath.dirname(keep.path) or "."
    staged = staged_name(folder, keep.path)
    user, _, group = (keep.owner or "").partition(":")
    # the folder is made 0700 when missing; an existing one is never changed (README: Secrets)
    prepare = (f"{AS_USER}\nif ! ( {make_dirs_script(folder, user, group, '700', False)} ); "
               f"then echo {q('cannot create ' + folder + ' to keep the answer in')} >&2; exit 1; "
               f"fi")
    script = ('umask 077; set -C; cat > "$2" && { { [ ! -e "$1" ] && [ ! -L "$1" ]; } || '
              'mv -f "$1" "$1.replaced-$(date -u +%Y%m%dT%H%M%SZ)"; } && mv -f "$2" "$1" || '
              '{ rm -f "$2"; exit 1; }')
    keep_step = (f"  if [ $rc -eq 0 ] && [ \"$code\" = 200 ] && [ -s \"$d/rb\" ]; then "
                 f"{as_user(user, group, 'sh', '-c', script, '-', keep.path, staged)} "
                 f"< \"$d/rb\" 2>/dev/null; fi\n")
    return prepare, keep_step


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
