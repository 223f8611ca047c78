"""
The batched facts (mnemos_provision/fact_batch.py), run for real:
- each part of a batch, run by a real sh, gives exactly what its fact gives when run on its own;
  a part that fails or lacks its command is not used;
- in a real pyinfra run on @local, the declared facts cost one command, and an operation after a
  change never decides on an answer read before that change.
"""

from __future__ import annotations

import getpass
import grp
import hashlib
import os
import subprocess
import sys
import textwrap
import time

import pytest
from pyinfra.api import FactBase
from pyinfra.facts.files import File, Sha256File
from pyinfra.facts.server import Which

from mnemos_provision import fact_batch
from mnemos_provision.facts.apt import AptListsAge, AptPackages
from mnemos_provision.facts.files import TreeState
from mnemos_provision.facts.server import ProcessRunning, UserGroups
from tests.conftest import REPO
from tests.harness import decoded_base64, facts_read, host_commands

pytestmark = pytest.mark.unit


class Fails(FactBase):
    def command(self):
        return "echo partial; exit 3"

    def process(self, output):
        return output


class NeedsAMissingTool(FactBase):
    requires_command = "mnemos-no-such-tool"

    def command(self):
        return "mnemos-no-such-tool --version"

    def process(self, output):
        return output


class NoNewline(FactBase):
    def command(self):
        return "printf 'no newline at the end'"

    def process(self, output):
        return output


def alone(cls, **kwargs):
    """What pyinfra derives from the fact's own command: process(lines), or default() without
    output."""
    (fact,), ((_, command),) = fact_batch.prepare_parts([(cls, kwargs)])
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    return fact.process(lines) if lines else fact.default()


def test_every_part_gives_what_its_fact_gives_alone(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "a.yml").write_text("a: 1\n")
    (tmp_path / "big.bin").write_bytes(b"x" * 4096)
    specs = [
        (TreeState, {"root": str(tmp_path), "dirs": [".", "config", "absent"],
                     "files": ["config/a.yml", "config/absent.yml"], "unhashed": ["big.bin"]}),
        (AptPackages, {"names": ["dpkg", "mnemos-no-such-package"]}),
        (AptListsAge, {}),
        (UserGroups, {"user": getpass.getuser()}),
        (ProcessRunning, {"comm": "mnemos-no-such-process"}),
        # pyinfra's own facts read by _if conditions (tools, the Docker key, the certificates)
        (File, {"path": str(tmp_path / "config" / "a.yml")}),
        (File, {"path": str(tmp_path / "absent")}),
        (Sha256File, {"path": str(tmp_path / "big.bin")}),
        (Which, {"command": "sh"}),
        (Fails, {}),
        (NeedsAMissingTool, {}),
        (NoNewline, {}),
    ]
    marker = "@@mnemos-fact-test"
    facts, parts = fact_batch.prepare_parts(specs)
    command = fact_batch.FactBatch().command(parts=parts, marker=marker)
    started = time.monotonic()
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    assert result.returncode == 0
    outputs = fact_batch.split_batch_output(result.stdout.splitlines(), marker)
    answers = {}
    for index, fact in enumerate(facts):
        status, lines = outputs[index]
        answers[index] = fact_batch.answer_from_part(fact, status, lines)

    for index, (cls, kwargs) in enumerate(specs[:9]):
        usable, value = answers[index]
        assert usable, cls.__name__
        if cls is AptListsAge and value is not None:  # an age in seconds: the clock moved on
            again = alone(cls, **kwargs)  # by at most the seconds since the batch started, + 1
            assert 0 <= again - value <= time.monotonic() - started + 1
        elif cls is File and value is not None:
            # the TreeState part hashes the same file at the same moment (parts run side by side):
            # its atime can move on by a second between the two reads, everything else cannot
            again = alone(cls, **kwargs)
            assert abs((value["atime"] - again["atime"]).total_seconds()) <= 2
            assert {k: v for k, v in value.items() if k != "atime"} == \
                {k: v for k, v in again.items() if k != "atime"}, cls.__name__
        else:
            assert value == alone(cls, **kwargs), cls.__name__
    tree = answers[0][1]
    assert tree["config/a.yml"].sha256 == hashlib.sha256(b"a: 1\n").hexdigest()
    assert tree["big.bin"].size == 4096 and tree["big.bin"].sha256 is None
    assert "absent" not in tree
    assert answers[5][1]["size"] == 5 and answers[6] == (True, None)  # File: present, absent
    assert answers[7][1] == hashlib.sha256(b"x" * 4096).hexdigest()
    assert answers[8][1].endswith("/sh")  # Which
    assert answers[9] == (False, None), "a failed part must be read again by pyinfra"
    assert answers[10] == (False, None)  # its command is not installed
    assert answers[11] == (True, ["no newline at the end"])


DEPLOY = '''
from pyinfra.operations import server
from mnemos_provision.operations import files
from mnemos_provision.render import TreeEntry

root, user, group = {root!r}, {user!r}, {group!r}
entries = [TreeEntry("a.conf", "file", "644", b"one\\n")]
files.tree(name="first sync", root=root, entries=entries, user=user, group=group,
           git_init=False)
server.shell(name="edit a.conf behind the tree's back",
             commands=["printf 'two\\\\n' > " + root + "/a.conf"], _if=lambda: {edit})
files.tree(name="second sync", root=root, entries=entries, user=user, group=group,
           git_init=False)
'''


def run_deploy(tmp_path, edit: bool):
    deploy = tmp_path / "deploy.py"
    deploy.write_text(DEPLOY.format(root=str(tmp_path / "tree"), user=getpass.getuser(),
                                    group=grp.getgrgid(os.getgid()).gr_name, edit=edit))
    pyinfra = os.path.join(os.path.dirname(sys.executable), "pyinfra")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([pyinfra, "@local", str(deploy), "-y", "-v"], cwd=REPO, env=env,
                            capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def test_declared_facts_cost_one_command_and_a_change_is_never_missed(tmp_path):
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a.conf").write_text("one\n")
    os.chmod(tmp_path / "tree" / "a.conf", 0o644)

    # nothing changes: both syncs are answered by one batch command
    output = run_deploy(tmp_path, edit=False)
    assert facts_read(output) == ["mnemos_provision.fact_batch.FactBatch"]
    assert (tmp_path / "tree" / "a.conf").read_text() == "one\n"

    # the shell edits a.conf after the batch was read: the second sync must read it again and
    # put "one" back (an answer from the batch would say a.conf is up to date)
    output = run_deploy(tmp_path, edit=True)
    assert facts_read(output) == ["mnemos_provision.fact_batch.FactBatch",
                                     "mnemos_provision.facts.files.TreeState"]
    assert (tmp_path / "tree" / "a.conf").read_text() == "one\n", textwrap.shorten(output, 3000)


# HTTP requests registered at plan time (fact_batch.expect_http) and sent by the fact batch's
# command: a local HTTP server stands for Vault or MinIO on the host's loopback (@local)
DEPLOY_HTTP = '''
from pyinfra import host
from pyinfra.api import operation
from pyinfra.operations import server
from mnemos_provision import fact_batch, host_http
from mnemos_provision.operations import files
from mnemos_provision.render import TreeEntry

root, user, group = {root!r}, {user!r}, {group!r}
url, token, value_file = {url!r}, {token!r}, {value_file!r}


def client(ahead):
    return host_http.HostHTTP(host_http.PyinfraRunner(host),
                              ahead=fact_batch.planned_answers if ahead else None)


def reads(http):
    # X-Made: when the request was made (a signature's date is then): as the batch is read
    return [lambda: http.request("GET", url + "/value", {{
        "X-Vault-Token": token, "X-Made": "execute" if host.state.is_executing else "plan"}})]


@operation()
def show_value():
    http = client(ahead=True)
    http.prefetch(reads(http))
    status, _, body = http.request("GET", url + "/value", {{"X-Vault-Token": token,
                                                           "X-Made": "execute"}})
    # the answer holds a secret: only its public half is shown
    host.noop("the value is " + body.decode().split(";")[0])
    yield from ()


planning = client(ahead=False)
fact_batch.expect_http(planning, reads(planning))
files.tree(name="sync", root=root, entries=[TreeEntry("a.conf", "file", "644", b"one\\n")],
           user=user, group=group, git_init=False)
server.shell(name="change the value", commands=["printf new > " + value_file],
             _if=lambda: {edit})
show_value(name="read the value")
'''


@pytest.fixture
def value_server(tmp_path):
    """127.0.0.1:<port>/value answers "<value_file's text>;<secret>" to the right token."""
    import http.server
    import threading

    value_file = tmp_path / "value"
    value_file.write_text("old")
    seen: list[str] = []
    made: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("X-Vault-Token", ""))
            made.append(self.headers.get("X-Made", ""))
            ok = self.headers.get("X-Vault-Token") == TOKEN
            body = (value_file.read_text() + ";" + SECRET).encode() if ok else b"denied"
            self.send_response(200 if ok else 403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", value_file, seen, made
    server.shutdown()


TOKEN = "hvs.token-" + "7" * 24
SECRET = "s3cret-" + "9" * 24


def run_http_deploy(tmp_path, url, value_file, edit: bool):
    (tmp_path / "tree").mkdir(exist_ok=True)
    (tmp_path / "tree" / "a.conf").write_text("one\n")
    os.chmod(tmp_path / "tree" / "a.conf", 0o644)
    deploy = tmp_path / "deploy_http.py"
    deploy.write_text(DEPLOY_HTTP.format(
        root=str(tmp_path / "tree"), user=getpass.getuser(),
        group=grp.getgrgid(os.getgid()).gr_name, url=url, token=TOKEN,
        value_file=str(value_file), edit=edit))
    pyinfra = os.path.join(os.path.dirname(sys.executable), "pyinfra")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([pyinfra, "@local", str(deploy), "-y", "-vvv", "--debug"], cwd=REPO,
                            env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def test_http_registered_at_plan_time_is_answered_by_the_fact_batch_unprinted(tmp_path,
                                                                              value_server):
    url, value_file, seen, made = value_server
    output = run_http_deploy(tmp_path, url, value_file, edit=False)
    # one host command: the fact batch, which also sent the request; the operation used its answer
    assert len(host_commands(output)) == 1, "\n".join(host_commands(output))
    assert seen == [TOKEN]
    assert made == ["execute"], "the request was built at plan time, not when the batch was read"
    assert "the value is old" in output
    assert "fact_batch: 1 fact(s) and 1 HTTP request(s) in one host command" in output
    # secret: the answer and the token never in the output, at --debug; the batch is not read as
    # a pyinfra fact (whose output --debug prints)
    assert SECRET not in output and TOKEN not in output
    assert SECRET.encode() not in decoded_base64(output)
    assert "fact_batch.FactBatch" not in output


def test_http_answer_of_the_batch_is_not_used_after_an_operation_ran_commands(tmp_path,
                                                                             value_server):
    url, value_file, seen, _ = value_server
    output = run_http_deploy(tmp_path, url, value_file, edit=True)
    # the shell changed the value after the batch was read: the operation asks again
    assert seen == [TOKEN, TOKEN]
    assert "the value is new" in output, output[-3000:]
    assert len(host_commands(output)) == 3, "\n".join(host_commands(output))
    assert SECRET not in output and TOKEN not in output


# --- root's staging: /tmp, never TMPDIR ------------------------------------------------------
# The environment is not trusted (operations/util.py, stage_dir): a TMPDIR in a directory another
# account can write would let that account rename root's staging directory and put a link in its
# place. Each command below runs with TMPDIR set to a directory of ours and lists it while its
# staging exists; nothing may be there.

def test_the_fact_batch_the_snapshot_and_progress_stage_in_tmp_never_tmpdir(tmp_path):
    from mnemos_provision.facts.server import HostSnapshot
    from mnemos_provision.operations import progress

    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    seen = tmp_path / "seen"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # a `docker` that lists TMPDIR (the snapshot's Docker reads run while its directory exists)
    (bin_dir / "docker").write_text(f'#!/bin/sh\nls -A "$TMPDIR" >> {seen}\n')
    (bin_dir / "docker").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "TMPDIR": str(tmpdir),
           "HOME": str(tmp_path)}
    batch = fact_batch.FactBatch().command(
        [("", f'ls -A "$TMPDIR" >> {seen}'), ("", "echo second")], "@@M")
    snapshot = HostSnapshot().command(None, str(tmp_path), "mnemos", True)
    alive = progress.alive_definition(60) + f'\nalive listing sh -c \'ls -A "$TMPDIR" >> {seen}\''
    pulls = progress.pull_script({"one": "example.invalid/one:1"})
    for script in (batch, snapshot, alive, pulls):
        subprocess.run(["sh", "-c", script], env=env, capture_output=True, timeout=60)
    assert seen.exists()
    assert seen.read_text() == "", f"staged in TMPDIR: {seen.read_text()!r}"
    assert os.listdir(tmpdir) == []
