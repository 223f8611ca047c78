"""
mnemos_provision/host_http.py on this machine (curl here stands for curl on the host): a batch of
requests in one command on its standard input, answers kept apart by who asked, nothing left
behind, nothing secret on a command line; and nothing of the host's environment in the way: a
real proxy set in every proxy variable receives nothing, a ~/.curlrc is not read, a header that
would start another one is refused, an answer over the cap is an error, and a request killed by
SIGTERM, SIGINT or SIGHUP leaves nothing in TMPDIR (nothing is ever written there).
"""

from __future__ import annotations

import glob
import http.server
import json
import os
import signal
import socketserver
import subprocess
import threading
import time

import pytest

from mnemos_provision.host_http import (
    HostHTTP,
    HostHTTPError,
    Keep,
    LocalRunner,
    Request,
    Runner,
    host_session,
)

pytestmark = pytest.mark.unit

PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "ALL_PROXY",
                   "all_proxy")


class Echo(http.server.BaseHTTPRequestHandler):
    """Answers with what it was sent: method, path, token, content type, body."""

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        out = json.dumps({"method": self.command, "path": self.path,
                          "token": self.headers.get("X-Vault-Token"),
                          "authorization": self.headers.get("Authorization"),
                          "content_type": self.headers.get("Content-Type"),
                          "body": body.decode()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_HEAD = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def echo():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


class Recording(LocalRunner):
    """LocalRunner that keeps every command line and input it was given."""

    def __init__(self):
        self.commands: list[str] = []
        self.inputs: list[list[str]] = []

    def run(self, command, stdin=None):
        self.commands.append(command)
        self.inputs.append(list(stdin or []))
        return super().run(command, stdin)


def test_a_batch_is_one_command_and_each_answer_is_its_requests(echo):
    runner = Recording()
    http = HostHTTP(runner)
    answers = http.send([Request("GET", f"{echo}/a?x=1", {"X-Vault-Token": "token-a"}),
                         Request("POST", f"{echo}/b", {}, b'{"k": "v"}'),
                         Request("HEAD", f"{echo}/c"),
                         Request("GET", "http://127.0.0.1:9/nothing-listens")])
    assert http.commands == len(runner.commands) == 1
    first, second, third, fourth = answers
    assert not isinstance(first, HostHTTPError) and not isinstance(second, HostHTTPError)
    assert not isinstance(third, HostHTTPError)
    assert json.loads(first[2]) == {"method": "GET", "path": "/a?x=1", "token": "token-a",
                                    "authorization": None, "content_type": None, "body": ""}
    # a body without a content type is sent without one (curl's form-urlencoded default removed)
    assert json.loads(second[2])["body"] == '{"k": "v"}'
    assert json.loads(second[2])["content_type"] is None
    assert third[0] == 200 and third[2] == b""  # HEAD: headers only
    assert isinstance(fourth, HostHTTPError) and "curl exit 7" in str(fourth)
    # the token travelled on the command's input, base64 like everything else there
    assert "token-a" not in runner.commands[0]
    assert not any("token-a" in line for line in runner.inputs[0])


def test_prefetched_answers_are_given_once_and_only_to_who_asked(echo):
    http = HostHTTP(LocalRunner())
    session = host_session(http)

    def read(token: str | None):
        return session.get(f"{echo}/p", headers={"X-Vault-Token": token} if token else {}).json()

    http.prefetch([lambda: read("token-a"), lambda: read(None)])
    assert http.commands == 1
    assert read("token-a")["token"] == "token-a" and http.commands == 1  # from the batch
    assert read("token-b")["token"] == "token-b" and http.commands == 2  # not asked by it
    assert read(None)["token"] is None and http.commands == 2
    assert read(None)["token"] is None and http.commands == 3  # each answer once
    # a new prefetch drops what the last one brought
    http.prefetch([lambda: read("token-a")])
    http.prefetch([lambda: read(None)])
    assert read("token-a")["token"] == "token-a" and http.commands == 6


def test_prefetch_takes_the_answers_sent_ahead_and_sends_only_the_others(echo):
    """`ahead` (fact_batch.planned_answers: the fact batch's answers of requests registered at
    plan time): a request it answers is not sent again; one it does not answer (not registered,
    failed, or stale) is sent by the prefetch's own command, as without it."""
    asked: list[Request] = []

    def ahead(requests):
        asked.extend(requests)
        return [(200, {"Content-Type": "application/json"}, b'{"token": "from the batch"}')
                if r.headers.get("X-Vault-Token") == "token-a" else None for r in requests]

    http = HostHTTP(LocalRunner(), ahead=ahead)
    session = host_session(http)

    def read(token: str):
        return session.get(f"{echo}/p", headers={"X-Vault-Token": token}).json()

    http.prefetch([lambda: read("token-a"), lambda: read("token-b")])
    assert [r.headers["X-Vault-Token"] for r in asked] == ["token-a", "token-b"]
    assert http.commands == 1  # token-b's request only
    assert read("token-a")["token"] == "from the batch"
    assert read("token-b")["token"] == "token-b" and http.commands == 1
    http.prefetch([lambda: read("token-a")])
    assert http.commands == 1  # every request answered ahead: no command
    assert read("token-a")["token"] == "from the batch"


def test_prefetched_s3_answers_go_only_to_the_access_key_that_asked(echo):
    """MinIO's root and application clients sign the same request with their own access keys
    (AWS SigV4): a prefetched answer goes to the access key that asked, whatever the signature
    and date of the request that takes it (they change from one signing to the next)."""
    http = HostHTTP(LocalRunner())
    session = host_session(http)

    def signed(key: str, signature: str, date: str = "20261206") -> str:
        return (f"AWS4-HMAC-SHA256 Credential={key}/{date}/us-east-1/s3/aws4_request, "
                f"SignedHeaders=host;x-amz-date, Signature={signature}")

    def read(key: str, signature: str, date: str = "20261206"):
        return session.get(f"{echo}/mnemos-artifacts?versioning",
                           headers={"Authorization": signed(key, signature, date)}).json()

    http.prefetch([lambda: read("mnemos-root", "aaaa"), lambda: read("mnemos-app", "bbbb")])
    assert http.commands == 1
    # the application key's request is answered with its own prefetched answer, then the root's
    assert "Credential=mnemos-app/" in read("mnemos-app", "cccc")["authorization"]
    assert "Credential=mnemos-root/" in read("mnemos-root", "dddd", "20261207")["authorization"]
    assert http.commands == 1  # both from the batch, signed anew
    # a third access key was never prefetched: its request goes to the server
    assert "Credential=other/" in read("other", "eeee")["authorization"]
    assert http.commands == 2


def test_a_kept_answer_is_written_0600_before_it_is_returned_and_never_over_a_file(echo, tmp_path):
    path = tmp_path / "keys" / "vault-keys.json"
    http = HostHTTP(LocalRunner())
    status, _, body = http.request("PUT", f"{echo}/v1/sys/init", {}, b"{}", keep=Keep(str(path)))
    assert status == 200 and path.read_bytes() == body
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    http.request("PUT", f"{echo}/v1/sys/init", {}, b"{}", keep=Keep(str(path)))
    kept = sorted(p.name for p in path.parent.iterdir())
    assert kept[0] == "vault-keys.json" and kept[1].startswith("vault-keys.json.replaced-")
    assert len(kept) == 2


def test_nothing_is_left_in_the_temporary_directory(echo, tmp_path):
    http = HostHTTP(LocalRunner())
    before = set(os.listdir(tmp_path))
    os.environ["TMPDIR"], saved = str(tmp_path), os.environ.get("TMPDIR")
    try:
        http.send([Request("GET", f"{echo}/x"), Request("POST", f"{echo}/y", {}, b"z")])
    finally:
        if saved is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = saved
    assert set(os.listdir(tmp_path)) == before


# --- the host's environment has no say: proxy, curl rc file ---------------------------------------

class Seen(http.server.BaseHTTPRequestHandler):
    """Records each request it is sent (method, path, headers, body) and answers with its body."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, dict(self.headers), body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = _answer

    def log_message(self, *args) -> None:
        pass


def serve(handler) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.seen = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


@pytest.fixture
def seen():
    server, url = serve(Seen)
    yield server, url
    server.shutdown()
    server.server_close()


class ProxyListener(socketserver.BaseRequestHandler):
    """A proxy that must receive nothing: counts connections and bytes, answers 502."""

    def handle(self) -> None:
        self.server.connections += 1  # type: ignore[attr-defined]
        self.request.settimeout(2)
        try:
            data = self.request.recv(65536)
            self.server.received += data  # type: ignore[attr-defined]
            self.request.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
        except OSError:
            pass


@pytest.fixture
def proxy():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), ProxyListener)
    server.daemon_threads = True
    server.connections = 0  # type: ignore[attr-defined]
    server.received = b""  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_no_proxy_is_used_whatever_the_environment_says(seen, proxy, monkeypatch):
    server, url = seen
    listener, proxy_url = proxy
    for name in PROXY_VARIABLES:  # what the shell of the command inherits
        monkeypatch.setenv(name, proxy_url)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    http = HostHTTP(LocalRunner())
    answers = http.send([Request("GET", f"{url}/v1/sys/health", {"X-Vault-Token": "token-a"}),
                         Request("PUT", f"{url}/v1/sys/unseal", {}, b'{"key": "unseal-key"}')])
    assert [a[:1] for a in answers if not isinstance(a, HostHTTPError)] == [(200,), (200,)]
    assert [(m, p, b) for m, p, _, b in server.seen] == [
        ("GET", "/v1/sys/health", b""), ("PUT", "/v1/sys/unseal", b'{"key": "unseal-key"}')]
    assert server.seen[0][2]["X-Vault-Token"] == "token-a"
    assert (listener.connections, listener.received) == (0, b""), "the proxy was used"


def test_no_curl_rc_file_is_read(seen, proxy, tmp_path, monkeypatch):
    server, url = seen
    listener, proxy_url = proxy
    home = tmp_path / "home"
    home.mkdir()
    (home / ".curlrc").write_text(f'proxy = "{proxy_url}"\n'
                                  'header = "X-From-Curlrc: yes"\n'
                                  'user-agent = "from-curlrc"\n')
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CURL_HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    for name in PROXY_VARIABLES + ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    status, _, body = HostHTTP(LocalRunner()).request("POST", f"{url}/rc", {}, b"body")
    assert (status, body) == (200, b"body")
    [(method, path, headers, _)] = server.seen
    assert (method, path) == ("POST", "/rc")
    assert "X-From-Curlrc" not in headers and headers.get("User-Agent") != "from-curlrc"
    assert (listener.connections, listener.received) == (0, b""), "the proxy was used"


# --- a header that would start another one is refused ------------------------------------------

@pytest.mark.parametrize("name,value,named", [
    ("X-Vault-Token", "token\r\nX-Injected: 1", "header X-Vault-Token"),
    ("X-Vault-Token", "token\nX-Injected: 1", "header X-Vault-Token"),
    ("X-Vault-Token", "token\rX", "header X-Vault-Token"),
    ("X-Vault-Token", "tok\0en", "header X-Vault-Token"),
    ("X-Injected: 1\r\nX-Vault-Token", "token", repr("X-Injected: 1\r\nX-Vault-Token")),
    ("X-Vault-Token\n", "token", repr("X-Vault-Token\n")),
    ("X-Vault\0-Token", "token", repr("X-Vault\0-Token")),
])
def test_a_header_with_cr_lf_or_nul_is_refused_before_anything_is_sent(echo, name, value, named):
    runner = Recording()
    http = HostHTTP(runner)
    with pytest.raises(HostHTTPError) as refused:
        http.send([Request("GET", f"{echo}/fine"),  # the whole batch is refused, not only one
                   Request("PUT", f"{echo}/v1/sys/unseal", {name: value}, b"{}")])
    assert named in str(refused.value) and "/v1/sys/unseal" in str(refused.value)
    assert "token\r" not in str(refused.value) and "tok\0en" not in str(refused.value)
    assert runner.commands == [] and http.commands == 0


# --- an answer over the cap ---------------------------------------------------------------------

class Big(http.server.BaseHTTPRequestHandler):
    """GET /<length|chunked>/<n>: n bytes, with a Content-Length or chunked (no size known)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        framing, size = self.path.strip("/").split("/")
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if framing == "length":
            self.send_header("Content-Length", size)
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        left = int(size)
        try:
            while left:
                piece = b"x" * min(left, 65536)
                left -= len(piece)
                self.wfile.write(piece if framing == "length"
                                 else b"%x\r\n%s\r\n" % (len(piece), piece))
            if framing == "chunked":
                self.wfile.write(b"0\r\n\r\n")
        except OSError:  # curl stopped reading: what the cap is for
            self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def big():
    server, url = serve(Big)
    yield url
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_an_answer_over_the_cap_is_a_clear_error_naming_its_url(big, framing):
    http = HostHTTP(LocalRunner(), max_answer=2000)
    status, _, body = http.request("GET", f"{big}/{framing}/1000")
    assert (status, body) == (200, b"x" * 1000)
    with pytest.raises(HostHTTPError) as refused:
        http.request("GET", f"{big}/{framing}/5000")
    assert f"GET {big}/{framing}/5000" in str(refused.value)
    assert "larger than 2000 bytes" in str(refused.value)


def test_the_default_cap_holds_without_a_size_announced(big):
    size = 8 * 1024 * 1024 + 1  # one byte over the default
    with pytest.raises(HostHTTPError, match="larger than 8388608 bytes"):
        HostHTTP(LocalRunner()).request("GET", f"{big}/chunked/{size}")


# --- nothing written to TMPDIR, nothing left whatever ends the command ----------------------------

class Held(http.server.BaseHTTPRequestHandler):
    """Sends the headers and the first 10 bytes of a 100-byte answer, then holds the rest back
    until the test releases it."""

    protocol_version = "HTTP/1.1"

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "100")
        self.end_headers()
        self.wfile.write(b'{"keys": [')
        self.wfile.flush()
        self.server.arrived.set()  # type: ignore[attr-defined]
        self.server.release.wait(30)  # type: ignore[attr-defined]
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


def stages() -> set[str]:
    """Root's staging directories in /tmp (operations/util.py's stage_dir)."""
    return set(glob.glob("/tmp/mnemos-stage-*"))


def new_stages(before: set[str]) -> list[str]:
    return sorted(stages() - before)


def default_signals() -> None:
    """SIGINT and SIGHUP as a terminal session has them. A test run started under `nohup` or as a
    background job of a script inherits them ignored, and a shell that starts with a signal
    ignored can neither trap it nor be killed by it (POSIX): the case under test would not exist."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


class Killed(Runner):
    """Runs the command in a process group of its own and, while the server holds the answer
    back, sends the group `sig` (Ctrl-C, a dropped SSH session, a `kill`)."""

    def __init__(self, server, sig: int, tmpdir: str, staged_in: set[str] | None = None):
        self.server, self.sig, self.tmpdir, self.staged_in = server, sig, tmpdir, staged_in
        self.during: list[str] | None = None
        self.staged: list[str] = []
        self.returncode: int | None = None

    def run(self, command, stdin=None):
        with subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True, preexec_fn=default_signals) as process:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write("".join(line + "\n" for line in stdin or []).encode())
            process.stdin.close()
            try:
                assert self.server.arrived.wait(20), "the request never reached the server"
                if self.staged_in is not None:  # kill once root's stage holds the half answer
                    deadline = time.monotonic() + 5
                    while not self.staged and time.monotonic() < deadline:
                        self.staged = [d for d in new_stages(self.staged_in)
                                       if os.path.exists(os.path.join(d, "body"))]
                        time.sleep(0.01)
                self.during = sorted(os.listdir(self.tmpdir))
                os.killpg(process.pid, self.sig)
                process.wait(timeout=20)
            finally:
                self.server.release.set()
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            out = process.stdout.read()  # a few lines: no pipe filled up meanwhile
        self.returncode = process.returncode
        return process.returncode, out.decode(errors="replace")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=["SIGTERM", "SIGINT", "SIGHUP"])
@pytest.mark.parametrize("kept", [False, True], ids=["sent", "kept"])
def test_a_request_killed_leaves_nothing_behind(sig, kept, tmp_path, monkeypatch):
    tmpdir, keys = tmp_path / "tmp", tmp_path / "keys"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    server, url = serve(Held)
    server.arrived, server.release = threading.Event(), threading.Event()  # type: ignore[attr-defined]
    before = stages()
    runner = Killed(server, sig, str(tmpdir), before if kept else None)
    try:
        with pytest.raises(HostHTTPError):
            HostHTTP(runner).request("PUT", f"{url}/v1/sys/init", {"X-Vault-Token": "token-a"},
                                     b'{"secret_shares": 1}',
                                     keep=Keep(str(keys / "vault-keys.json")) if kept else None)
    finally:
        server.shutdown()
        server.server_close()
    assert runner.returncode != 0
    assert os.listdir(tmpdir) == [], f"left in TMPDIR: {os.listdir(tmpdir)}"
    assert runner.during == [], f"written to TMPDIR while the request ran: {runner.during}"
    if kept:  # the half-received answer was staged in root's stage: removed, none kept
        assert runner.staged, "the command was killed before it staged the answer"
        assert new_stages(before) == [], f"root's stage left behind: {new_stages(before)}"
        assert os.listdir(keys) == [], f"left beside the keys file: {os.listdir(keys)}"


def test_a_kept_request_with_another_answer_than_200_keeps_nothing_and_returns_it(seen, tmp_path):
    server, url = seen
    path = tmp_path / "keys" / "vault-keys.json"
    http = HostHTTP(LocalRunner())
    status, _, body = http.request("PUT", f"{url}/v1/sys/init", {}, b"", keep=Keep(str(path)))
    assert status == 200 and body == b""  # empty: nothing to keep
    assert os.listdir(path.parent) == []

    class Refusing(Seen):
        def do_PUT(self) -> None:
            self.send_response(400)
            self.send_header("Content-Length", "22")
            self.end_headers()
            self.wfile.write(b'{"errors": ["sealed"]}')
    refusing, refusing_url = serve(Refusing)
    try:
        status, _, body = http.request("PUT", f"{refusing_url}/v1/sys/init", {}, b"{}",
                                       keep=Keep(str(path)))
    finally:
        refusing.shutdown()
        refusing.server_close()
    assert (status, body) == (400, b'{"errors": ["sealed"]}')
    assert os.listdir(path.parent) == []


def test_binary_bodies_larger_than_a_pipe_go_and_come_back_whole(seen):
    server, url = seen
    payload = bytes(range(256)) * 1024  # 256 KiB, every byte value, NUL and newlines included
    http = HostHTTP(LocalRunner())
    answers = http.send([Request("PUT", f"{url}/a", {"Content-Type": "application/octet-stream"},
                                 payload),
                         Request("HEAD", f"{url}/b"),
                         Request("POST", f"{url}/c", {}, b"\n")])
    assert [a[0] for a in answers if not isinstance(a, HostHTTPError)] == [200, 200, 200]
    assert answers[0][2] == payload and answers[1][2] == b"" and answers[2][2] == b"\n"
    assert [body for _, _, _, body in server.seen] == [payload, b"", b"\n"]


# --- one curl process for a batch (docs/performance.md) ------------------------------------------

@pytest.fixture
def counted_curl(tmp_path, monkeypatch):
    """curl on PATH counts its processes (a line each in a file), then runs the real curl."""
    import shutil
    real = shutil.which("curl")
    assert real, "curl is not installed"
    bin_dir, log = tmp_path / "bin", tmp_path / "curl-runs"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text(f"#!/bin/sh\necho run >> {log}\nexec {real} \"$@\"\n")
    (bin_dir / "curl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return lambda: len(log.read_text().splitlines()) if log.exists() else 0


def test_a_batch_of_text_requests_is_one_curl_process(seen, counted_curl):
    server, url = seen
    batch = [Request("GET", f"{url}/v1/secret/{i}", {"X-Vault-Token": "token-a"})
             for i in range(12)]
    batch.append(Request("POST", f"{url}/v1/auth/token/lookup", {}, b'{"token": "token-b"}'))
    answers = HostHTTP(LocalRunner()).send(batch)
    assert [a[0] for a in answers if not isinstance(a, HostHTTPError)] == [200] * 13
    assert [(m, p) for m, p, _, _ in server.seen] == [(r.method, r.url[len(url):]) for r in batch]
    assert counted_curl() == 1, "one curl process per request, not one per batch"
    # a binary body cannot be a line of curl's config: that batch takes one curl per request
    HostHTTP(LocalRunner()).send([Request("PUT", f"{url}/bin", {}, b"\0\xff"),
                                  Request("GET", f"{url}/after")])
    assert counted_curl() == 3


def test_a_text_body_is_sent_as_it_is_never_read_from_a_file(seen):
    server, url = seen
    bodies = [b'@/etc/passwd', b'{"a": "q\\"uote\\\\"}\n\ttab\r\vend "', "é ü 😀".encode(),
              b"-d @/etc/hostname next url = http://127.0.0.1:1/"]
    answers = HostHTTP(LocalRunner()).send([Request("POST", f"{url}/{i}", {}, body)
                                            for i, body in enumerate(bodies)])
    assert [a[2] for a in answers if not isinstance(a, HostHTTPError)] == bodies
    assert [b for _, _, _, b in server.seen] == bodies


def test_answers_over_the_cap_together_are_refused_each_and_can_be_sent_alone(big):
    http = HostHTTP(LocalRunner(), max_answer=3000)
    # each within the cap; the batch passes on the cap plus 1 KiB a request (7097 bytes here)
    answers = http.send([Request("GET", f"{big}/chunked/2500") for _ in range(3)]
                        + [Request("GET", f"{big}/length/10")])
    first, second, third, fourth = answers
    assert not isinstance(first, HostHTTPError) and first[2] == b"x" * 2500
    assert not isinstance(second, HostHTTPError) and second[2] == b"x" * 2500
    assert isinstance(third, HostHTTPError) and "not received whole" in str(third)
    assert f"GET {big}/chunked/2500" in str(third)
    assert isinstance(fourth, HostHTTPError) and "not answered" in str(fourth)
    assert http.request("GET", f"{big}/chunked/2500")[2] == b"x" * 2500


def test_each_request_of_one_curl_carries_only_its_own_token_headers_and_body(seen, counted_curl):
    """One curl process sends the batch (one config section a request, `next` between them): a
    token, a header, a method or a body of one request is never sent with another."""
    server, url = seen
    batch = [Request("POST", f"{url}/first", {"X-Vault-Token": "token-a", "X-Extra": "one"},
                     b'{"secret": "s"}'),
             Request("GET", f"{url}/second"),
             Request("GET", f"{url}/third", {"Authorization": "AWS4-HMAC-SHA256 Credential=k/x"}),
             Request("HEAD", f"{url}/fourth", {"X-Vault-Token": "token-b"})]
    answers = HostHTTP(LocalRunner()).send(batch)
    assert counted_curl() == 1
    assert [a[0] for a in answers if not isinstance(a, HostHTTPError)] == [200] * 4
    sent = [(method, path, {k.lower(): v for k, v in headers.items()}, body)
            for method, path, headers, body in server.seen]
    assert [(m, p, b) for m, p, _, b in sent] == [("POST", "/first", b'{"secret": "s"}'),
                                                  ("GET", "/second", b""),
                                                  ("GET", "/third", b""), ("HEAD", "/fourth", b"")]
    first, second, third, fourth = (headers for _, _, headers, _ in sent)
    assert first["x-vault-token"] == "token-a" and first["x-extra"] == "one"
    assert not {"x-vault-token", "x-extra", "authorization", "content-length"} & set(second)
    assert third["authorization"] == "AWS4-HMAC-SHA256 Credential=k/x"
    assert not {"x-vault-token", "x-extra"} & set(third)
    assert fourth["x-vault-token"] == "token-b" and "authorization" not in fourth
