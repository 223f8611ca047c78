"""
HTTP on the target host's loopback, for the Vault (hvac) and MinIO (minio SDK) clients that run on
the controller.

Vault and MinIO listen on the host's 127.0.0.1, which is not the controller's when the host is
reached over SSH or is a container. Instead of a tunnel, requests are executed ON the host by
curl, through whatever connector pyinfra uses (@local, SSH, @docker):

- one host command sends any number of requests (`HostHTTP.send`): they travel on the command's
  standard input (base64-encoded), so a token or an unseal key is never on a command line, where
  `ps` or pyinfra's debug output would show it, and never in a file: a batch whose bodies are
  text goes to ONE curl process as its config, through a pipe (`_ONE_CURL`; curl 7.75 or later);
  otherwise (a binary body, a kept answer) the command hands each request's headers and body to a
  curl of its own through pipes (`_LOOP`); curl's answers come back through a pipe too,
  base64-encoded (binary-safe); nothing is written to `TMPDIR`, so nothing is left there whatever
  ends the command (a signal included);
- what the host's environment could change is shut out (docs/security-http.md): no proxy
  (`--noproxy '*'`, the proxy variables unset), no curl rc file (`-q` first), no TLS key log;
  the URL is given with `--url`; a header whose name or value holds CR, LF or NUL is refused
  before anything is sent; an answer larger than `max_answer` bytes is an error naming its URL;
- `HostHTTP.prefetch` records the requests a list of client calls would send, sends them in one
  command, and `request` answers each of them once from what came back (the Vault and MinIO plans
  read a converged server in one host command, whatever the number of secrets or buckets);
- `ahead`: the prefetch first takes the answers the fact batch's command brought for requests
  registered at plan time (`record`, fact_batch.expect_http / planned_answers: one host command
  fewer per service), and sends only the others;
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
import re
import secrets
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

from mnemos_provision.connection import (
    connector_arguments,
    make_private_upload_dir,
    private_upload_dir,
)
from mnemos_provision.operations.util import (
    AS_USER,
    as_user,
    make_dirs_script,
    stage_dir,
    staged_name,
)


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
# base64, "-" for no body), then END. Each answer is three or four lines of its output: "@@ANSWER",
# then "R:" + base64 of what curl wrote (the headers, then the body unless kept: cut after
# max_answer + 1 bytes), with a Keep "K:" + base64 of the body kept, then "E:" + base64 of curl's
# error message, "@@CODE <HTTP status>" and "@@RC <curl's exit code>".
#
# Nothing goes to disk (but a Keep's file): the headers reach curl on its standard input (-H @-),
# the body on a pipe as its fd 3 (--data-binary @/dev/fd/3), the answer goes through a pipe to
# base64 (fd 4: the command's output) and curl's stderr into a variable (fd 5). Nothing of the
# host's environment changes the request: -q first (no ~/.curlrc), no proxy (--noproxy '*' and the
# variables unset), no TLS key log (SSLKEYLOGFILE unset), the URL given as --url.
_END = "@@END@@"
_LOOP = r"""
umask 077
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy NO_PROXY no_proxy \
      SSLKEYLOGFILE CURL_HOME
exec 4>&1
%(prepare)s
while read -r m u h b; do
  [ "$m" = %(end)s ] && break
  [ "$b" = - ] && b=
  if [ "$m" = HEAD ]; then set -- -I; else set -- -X "$m" %(output)s; fi
  [ -z "$b" ] || set -- "$@" --data-binary @/dev/fd/3
  echo @@ANSWER
  printf 'R:'
  e=$( {
         { printf '%%s' "$b" | base64 -d | {
             printf '%%s' "$h" | base64 -d |
             curl -q -sS -g --noproxy '*' --max-time %(timeout)d --max-filesize %(cap)d \
                  %(cacert)s"$@" -H @- -w '%%{stderr}@@CODE %%{http_code}\n' --url "$u" 2>&5
           } 3<&0
           echo "@@RC $?" >&5
         } | head -c %(limit)d | base64 | tr -d '\n' >&4
       } 5>&1 )
  echo
%(keep)s  printf 'E:'; printf '%%s\n' "$e" | tail -c 600 | base64 | tr -d '\n'; echo
done
echo %(end)s
"""


# A batch of requests with no kept answer and bodies that are text: ONE curl process sends them
# all (curl's `next`: one section per request, with its own headers, body, output and write-out),
# rather than a dozen processes per request in _LOOP. Its config comes on the command's standard
# input, base64 (as _LOOP's headers: never a token on a command line or in plain on the input),
# decoded by a pipe straight into curl (--config -): nothing on disk. -q first (no ~/.curlrc),
# each section with noproxy "*", the proxy variables unset, globoff, the URL given as `url`, a
# body as `data-raw` (never read from a file, whatever it starts with). What curl writes (each
# answer's headers and body, then a line with a random mark, curl's exit code for it, the HTTP
# status and curl's error message: curl 7.75 or later) comes back base64, cut after `limit`
# bytes (the cap for one answer, plus the other answers' mark lines).
_ONE_CURL = r"""
umask 077
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy NO_PROXY no_proxy \
      SSLKEYLOGFILE CURL_HOME
echo @@B64
base64 -d | curl -q --config - | head -c %(limit)d | base64
echo %(end)s
"""

MAX_ANSWER = 8 * 1024 * 1024  # Vault's and MinIO's answers here are a few kilobytes

# an HTTP header name (RFC 9110 token); CR, LF or NUL in a value would end the header's line and
# start another header (or cut it) in the header lines curl reads (-H @file)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _check(r: Request) -> None:
    """Refuses what curl would read other than as one request: a method that is not a token, a URL
    with a space or a control character, a header name that is not a token, a header value with
    CR, LF or NUL. The error names the header, never its value (a token, a signature)."""
    what = f"{r.method} {_redact(r.url)}"
    if not _TOKEN.fullmatch(r.method) or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7f
                                             for c in r.url):
        raise HostHTTPError(f"{what}: not a URL curl can be given")
    for name, value in r.headers.items():
        if not _TOKEN.fullmatch(name):
            raise HostHTTPError(f"{what}: refused, the header name {name!r} is not an HTTP "
                                f"header name (it holds CR, LF, NUL or another character a name "
                                f"cannot have)")
        if any(c in value for c in "\r\n\0"):
            raise HostHTTPError(f"{what}: refused, the value of the header {name} holds CR, LF or "
                                f"NUL (it would start another header)")


class HostHTTP:
    """
    Sends HTTP requests from the host with curl: each `send` is one host command, whatever the
    number of requests. `request` sends one (or answers it from a `prefetch`).
    """

    def __init__(self, runner: Runner, timeout: int = 30, cacert: str | None = None,
                 max_answer: int = MAX_ANSWER,
                 ahead: Callable[[list[Request]], list[Answer | None]] | None = None):
        self.runner = runner
        self.timeout = timeout
        self.cacert = cacert
        self.max_answer = max_answer  # bytes of an answer, headers and body: more is an error
        # answers sent ahead (fact_batch.planned_answers: the requests registered at plan time,
        # sent by the fact batch's command), asked by `prefetch` first; None where not answered
        self.ahead = ahead
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
        recorded = self.record(calls)
        early = self.ahead(recorded) if self.ahead is not None and recorded else []
        unanswered = []
        for i, wanted in enumerate(recorded):
            answer = early[i] if i < len(early) else None
            if answer is None:
                unanswered.append(wanted)
            else:
                self._prefetched.setdefault(wanted.key(), []).append(answer)
        if not unanswered:
            return
        for sent, got in zip(unanswered, self.send(unanswered)):
            if not isinstance(got, HostHTTPError):
                self._prefetched.setdefault(sent.key(), []).append(got)

    def record(self, calls: list[Callable[[], object]]) -> list[Request]:
        """The first request each call makes, recorded, nothing sent (for `prefetch`, and for the
        fact batch's command: fact_batch.expect_http)."""
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
        return recorded

    def send(self, batch: list[Request], keep: Keep | None = None
             ) -> list[Answer | HostHTTPError]:
        """One host command for every request of `batch`; an answer, or the error of its curl."""
        if keep is not None and len(batch) != 1:
            raise ValueError("an answer is kept only for a request sent alone")
        for r in batch:  # all refused before anything is sent
            _check(r)
        self.commands += 1
        logger.debug("host_http: %d request(s) in one host command: %s", len(batch),
                     ", ".join(f"{r.method} {urlsplit(r.url).path}" for r in batch))
        if keep is None and all(_configurable(r.body) for r in batch):
            # one curl process for the whole batch (its requests on a config read from stdin)
            mark = new_mark()
            rc, out = self.runner.run(_one_curl_script(len(batch), self.max_answer),
                                      stdin=self._config_lines(batch, mark))
            answers = self.parse_one_curl(out, batch, mark)
        else:
            lines = []
            for r in batch:
                encoded_headers = _b64(("\n".join(_header_lines(r)) + "\n").encode())
                lines.append(f"{r.method} {r.url} {encoded_headers} "
                             f"{_b64(r.body) if r.body else '-'}")
            lines.append(_END)
            rc, out = self.runner.run(self._command(keep), stdin=lines)
            answers = _parse(out, batch, self.max_answer)
        if rc != 0 or answers is None:
            tail = out.strip().splitlines()[-1] if out.strip() else "no output"
            first = batch[0]
            raise HostHTTPError(f"{first.method} {_redact(first.url)}"
                                f"{f' and {len(batch) - 1} more' if len(batch) > 1 else ''} from "
                                f"the host failed (exit {rc}): {tail}")
        return answers

    # for the fact batch's command (fact_batch._read_with_http), which sends the requests
    # registered at plan time in one curl beside its parts
    END = _END

    @staticmethod
    def new_mark() -> str:
        return new_mark()

    def one_curl_step(self, count: int) -> str:
        return one_curl_step(count, self.max_answer)

    @staticmethod
    def encode_config(sections: list[str]) -> list[str]:
        return encode_config(sections)

    def parse_one_curl(self, output: str, batch: list[Request], mark: str
                       ) -> list[Answer | HostHTTPError] | None:
        return parse_one_curl(output, batch, mark, self.max_answer)

    def _config_lines(self, batch: list[Request], mark: str) -> list[str]:
        """curl's config (one section per request, `next` between them), base64, 76 a line."""
        return encode_config(self.config_sections(batch, mark))

    def config_sections(self, batch: list[Request], mark: str) -> list[str]:
        """curl's config section of each request (with this client's timeout, CA file and cap),
        each ending with a write-out line of `mark`."""
        sections = []
        for r in batch:
            lines = [f"url = {_cfg(r.url)}", "globoff", "silent", "noproxy = \"*\"",
                     f"max-time = {int(self.timeout)}", f"max-filesize = {int(self.max_answer)}"]
            if self.cacert:
                lines.append(f"cacert = {_cfg(self.cacert)}")
            lines += ["head"] if r.method == "HEAD" else [f"request = {_cfg(r.method)}", "include"]
            for line in _header_lines(r):
                lines.append(f"header = {_cfg(line)}")
            if r.body:
                lines.append(f"data-raw = {_cfg(r.body.decode())}")
            lines.append(f"write-out = \"\\n{mark} %{{exitcode}} %{{http_code}} "
                         f"%{{errormsg}}\\n\"")
            sections.append("\n".join(lines))
        return sections

    def _command(self, keep: Keep | None) -> str:
        q = shlex.quote
        prepare, output, keep_step = (("", "-i", "") if keep is None
                                      else _keep_steps(keep, self.max_answer))
        return _LOOP % {"prepare": prepare, "output": output, "keep": keep_step, "end": q(_END),
                        "timeout": self.timeout, "cap": self.max_answer,
                        "limit": self.max_answer + 1,
                        "cacert": f"--cacert {q(self.cacert)} " if self.cacert else ""}


def encode_config(sections: list[str]) -> list[str]:
    """curl's config of `sections` (`next` between them), base64, 76 characters a line: the
    standard input of a _ONE_CURL command."""
    encoded = _b64(("\nnext\n".join(sections) + "\n").encode())
    return [encoded[i:i + 76] for i in range(0, len(encoded), 76)]


def one_curl_limit(count: int, max_answer: int = MAX_ANSWER) -> int:
    """The most bytes a _ONE_CURL command of `count` requests passes on: one answer over the cap
    plus the other answers' markers (the batch's answers together within the cap; see
    _parse_one_curl)."""
    return max_answer + 1 + 1024 * count


def _one_curl_script(count: int, max_answer: int = MAX_ANSWER) -> str:
    """The _ONE_CURL command of `count` requests (HostHTTP.send runs it; one_curl_step embeds
    it)."""
    return _ONE_CURL % {"limit": one_curl_limit(count, max_answer), "end": shlex.quote(_END)}


def one_curl_step(count: int, max_answer: int = MAX_ANSWER) -> str:
    """
    The shell of a _ONE_CURL batch of `count` requests as one step of a larger script (the fact
    batch's: fact_batch.read), in a subshell of its own: its umask and unset variables stay there.
    It reads curl's config (encode_config) from the script's standard input, and writes its
    answers (base64) to the script's standard output, between a "@@B64" line and an END line
    (`HostHTTP.END`), never into a file.
    """
    return "(" + _one_curl_script(count, max_answer) + ")"


def parse_one_curl(output: str, batch: list[Request], mark: str, max_answer: int = MAX_ANSWER
                   ) -> list[Answer | HostHTTPError] | None:
    """The answers of a one_curl_step's output (in the order of `batch`); None when it is not
    that output."""
    return _parse_one_curl(output, batch, max_answer, mark, one_curl_limit(len(batch), max_answer))


def new_mark() -> str:
    """A write-out mark for one batch: random, so an answer's body cannot hold it."""
    return "@@" + secrets.token_hex(8)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _header_lines(r: Request) -> list[str]:
    lines = [f"{k}: {v}" for k, v in r.headers.items()
             if k.lower() not in ("content-length", "host", "connection", "expect")]
    lines.append("Expect:")  # no 100-continue round trip
    if r.body and not any(k.lower() == "content-type" for k in r.headers):
        lines.append("Content-Type:")  # no curl default (form-urlencoded)
    return lines


_MAX_CONFIG_BODY = 1024 * 1024  # curl reads a config line of up to 10 MB; these bodies are small


def _configurable(body: bytes | None) -> bool:
    """Whether a body can be a quoted string of curl's config: UTF-8 text without NUL (JSON, as
    Vault's are; a binary body, or a large one, goes the way of _LOOP, one curl per request)."""
    if not body:
        return True
    if len(body) > _MAX_CONFIG_BODY or b"\0" in body:
        return False
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True


def _cfg(value: str) -> str:
    """A quoted string of curl's config file (tool_parsecfg.c: backslash escapes \\ \" \t \n
    \r \v); the value stays one line whatever it holds."""
    for char, escaped in (("\\", "\\\\"), ('"', '\\"'), ("\t", "\\t"), ("\n", "\\n"),
                          ("\r", "\\r"), ("\v", "\\v")):
        value = value.replace(char, escaped)
    return f'"{value}"'


def _parse_one_curl(out: str, batch: list[Request], cap: int, mark: str, limit: int
                    ) -> list[Answer | HostHTTPError] | None:
    """
    The answers of _ONE_CURL's output, in the order sent; None when it is not that output. What
    curl wrote for each request (its headers, then its body) is followed by a line
    "<mark> <curl's exit code> <HTTP status> <curl's error message>" (mark: random, per batch).
    When the command stopped passing curl's output on (`limit` bytes: an answer over the cap, or
    the answers together), the answer it stopped in is refused (over the cap, or not received
    whole), and so is every later one (not answered); each can be sent again alone.
    """
    lines = out.splitlines()
    try:
        start, end = lines.index("@@B64"), lines.index(_END)
    except ValueError:
        return None
    if end < start:
        return None
    data = base64.b64decode("".join(lines[start + 1:end]))
    cut = len(data) >= limit
    answers: list[Answer | HostHTTPError] = []
    separator = f"\n{mark} ".encode()
    at = 0
    while len(answers) < len(batch):
        sent = batch[len(answers)]
        found = data.find(separator, at)
        stop = data.find(b"\n", found + len(separator)) if found >= 0 else -1
        if found < 0 or stop < 0:
            if not cut:
                return None
            what = f"{sent.method} {_redact(sent.url)}"
            answers.append(HostHTTPError(
                f"{what}: the answer is larger than {cap} bytes, the most an answer from the "
                f"host may be (max_answer); nothing of it is used" if len(data) - at > cap else
                f"{what}: not received whole (the batch's answers together are over "
                f"{cap} bytes); send it alone"))
            answers += [HostHTTPError(f"{r.method} {_redact(r.url)}: not answered (an earlier "
                                      f"answer of its batch was cut); send it alone")
                        for r in batch[len(answers):]]
            break
        raw = data[at:found]
        rc, _, status_and_message = (data[found + len(separator):stop]
                                     .decode(errors="replace").partition(" "))
        message = status_and_message.partition(" ")[2].strip()
        error = (f"curl: ({rc}) {message}\n" if rc != "0" else "") + f"@@RC {rc or 'unknown'}"
        answers.append(_answer(sent, raw, None, error, cap))
        at = stop + 1
    return answers


def _parse(out: str, batch: list[Request], cap: int) -> list[Answer | HostHTTPError] | None:
    """The answers in the command's output, in the order sent; None when the output is cut."""
    lines = out.splitlines()
    answers: list[Answer | HostHTTPError] = []
    i = 0
    while i < len(lines) and len(answers) < len(batch):
        if lines[i] != "@@ANSWER":
            i += 1
            continue
        kinds = [r[:2] for r in lines[i + 1:i + 4]]
        if kinds[:2] == ["R:", "E:"]:  # R (headers and body), E
            record, kept = lines[i + 1:i + 3], None
        elif kinds == ["R:", "K:", "E:"]:  # with a Keep: R (headers), K (body), E
            record, kept = [lines[i + 1], lines[i + 3]], base64.b64decode(lines[i + 2][2:])
        else:
            return None
        raw, error = (base64.b64decode(r[2:]) for r in record)
        i += 4 if kept is not None else 3
        answers.append(_answer(batch[len(answers)], raw, kept,
                               error.decode(errors="replace"), cap))
    if len(answers) != len(batch) or _END not in lines[i:]:
        return None
    return answers


def _answer(sent: Request, raw: bytes, kept: bytes | None, error: str, cap: int
            ) -> Answer | HostHTTPError:
    """The answer from what curl wrote: `raw` (its headers, then the body unless `kept`), and its
    stderr, which ends with "@@CODE <status>" and "@@RC <exit code>"."""
    what = f"{sent.method} {_redact(sent.url)}"
    rc = error.rpartition("@@RC ")[2].strip() if "@@RC " in error else "unknown"
    # curl's own line ("curl: (7) Failed to connect ..."), not the advice some errors add
    message = [line for line in error.splitlines() if line.startswith("curl: (")] or [
        line for line in error.splitlines() if line.strip() and not line.startswith("@@")]
    if len(raw) > cap or (kept is not None and len(kept) > cap) or rc == "63":
        return HostHTTPError(f"{what}: the answer is larger than {cap} bytes, the most an answer "
                             f"from the host may be (max_answer); nothing of it is used")
    if rc != "0":
        return HostHTTPError(f"{what} from the host failed (curl exit {rc}): "
                             f"{message[0] if message else 'no message'}")
    # curl writes every response's headers (a 100 Continue, then the answer's): keep the last;
    # what follows the last headers is the body (nothing for HEAD, sent with curl -I)
    head, rest = None, raw
    while rest.startswith(b"HTTP/"):
        ends = [(at, len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (at := rest.find(sep)) >= 0]
        at, size = min(ends) if ends else (len(rest), 0)
        head, rest = rest[:at].decode("latin-1"), rest[at + size:]
        status = head.split(None, 2)[1:2]
        if not (status and status[0].isdigit() and status[0].startswith("1")):
            break
    if head is None:
        return HostHTTPError(f"{what}: no HTTP response")
    status_line, *header_lines = head.replace("\r", "").split("\n")
    fields = status_line.split()
    if len(fields) < 2 or not fields[1].isdigit():
        return HostHTTPError(f"{what}: no HTTP response")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    return int(fields[1]), headers, kept if kept is not None else rest


def _keep_steps(keep: Keep, cap: int) -> tuple[str, str, str]:
    """The shell that prepares before the request, the curl options that write the body, and the
    step that keeps a 200 answer (Keep). Root writes nothing where another account can write
    (docs/security.md): curl writes the body into a 0700 directory of root's own in /tmp; the
    folder of the kept file is made, and the file written and renamed into place, by the account
    of `keep.owner`, reading root's copy on its standard input. Both are removed on every exit,
    signals included (dash runs no EXIT trap when a signal ends it: each signal is trapped too)."""
    q = shlex.quote
    folder = posixpath.dirname(keep.path) or "."
    staged = staged_name(folder, keep.path)
    stage = stage_dir()
    body = f"{stage}/body"
    user, _, group = (keep.owner or "").partition(":")
    cleanup = f"rm -rf {q(stage)}; {as_user(user, group, 'rm', '-f', staged)} 2>/dev/null"
    # the folder is made 0700 when missing; an existing one is never changed (docs/secrets.md)
    prepare = (f"{AS_USER}\nif ! ( {make_dirs_script(folder, user, group, '700', False)} ); "
               f"then echo {q('cannot create ' + folder + ' to keep the answer in')} >&2; exit 1; "
               f"fi\n"
               f"mkdir -m 700 {q(stage)} || exit 1\n"
               f"trap {q(cleanup)} EXIT\n"
               f"trap {q(cleanup + '; exit 129')} HUP\n"
               f"trap {q(cleanup + '; exit 130')} INT\n"
               f"trap {q(cleanup + '; exit 143')} TERM")
    output = f"-D - -o {q(body)}"
    script = ('umask 077; set -C; cat > "$2" && { { [ ! -e "$1" ] && [ ! -L "$1" ]; } || '
              'mv -f "$1" "$1.replaced-$(date -u +%Y%m%dT%H%M%SZ)"; } && mv -f "$2" "$1" || '
              '{ rm -f "$2"; exit 1; }')
    keep_step = ("  rc=${e##*@@RC }; code=${e##*@@CODE }; code=${code%%[!0-9]*}\n"
                 f"  printf 'K:'; head -c {cap + 1} {q(body)} 2>/dev/null | base64 | "
                 f"tr -d '\\n'; echo\n"
                 f"  if [ \"$rc\" = 0 ] && [ \"$code\" = 200 ] && [ -s {q(body)} ] && "
                 f"[ \"$(wc -c < {q(body)})\" -le {cap} ]; then "
                 f"{as_user(user, group, 'sh', '-c', script, '-', keep.path, staged)} "
                 f"< {q(body)} 2>/dev/null; fi\n"
                 f"  rm -f {q(body)}\n")
    return prepare, output, keep_step


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
