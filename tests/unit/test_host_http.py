"""
mnemos_provision/host_http.py on this machine (curl here stands for curl on the host): a batch of
requests in one command on its standard input, answers kept apart by who asked, nothing left
behind, nothing secret on a command line.
"""

from __future__ import annotations

import http.server
import json
import os
import threading

import pytest

from mnemos_provision.host_http import (
    HostHTTP,
    HostHTTPError,
    Keep,
    LocalRunner,
    Request,
    host_session,
)

pytestmark = pytest.mark.unit


class Echo(http.server.BaseHTTPRequestHandler):
    """Answers with what it was sent: method, path, token, content type, body."""

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        out = json.dumps({"method": self.command, "path": self.path,
                          "token": self.headers.get("X-Vault-Token"),
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
                                    "content_type": None, "body": ""}
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
