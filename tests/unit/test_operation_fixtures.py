"""
Operation tests as data, in pyinfra's own style (its tests/test_operations.py): each
tests/operations/<module>.<operation>/<case>.json gives

    "kwargs":  the operation's arguments
    "facts":   {"<module>.<Fact>": {"<arguments key>": answer}}, each answer keyed by the exact
               arguments the operation must ask it with ("" for none; otherwise
               "name=value, ..." sorted by name, values as JSON)
    "commands": the exact commands it yields (a string per shell command; ["upload", <text>,
               <dest>] per upload; ["function", <name>] per function command)
    "noop_description": the noop text, when it changes nothing
    "exception": {"name": ..., "message": ...} when it must refuse its arguments
    "http":    the answers to the HTTP requests its planning sends from the host (vault.setup,
               minio.setup: mnemos_provision/host_http.py), keyed by "METHOD /path" with the
               query sorted ("GET /bucket?versioning", "GET /a?k=v"); each an answer or a list of
               them: {"when": {"body": {...}, "headers": {...}}, "status": 200, "json": ... |
               "xml": "..." | "text": "...", "headers": {...}}. "when" is what matters of the
               request: the items its JSON body must have (a body that is not JSON: the whole
               text), the headers it must carry; an answer without one answers any such
               request. The transport (curl on the host) is replaced; the clients (hvac, minio)
               and their adapters are the real ones.
    "changes": for those two, what their planning found to differ (PLANNERS: the return of
               vault_setup.plan, of minio_setup's bucket_differences + user_differences), [] on
               a noop. Both yield one function command whatever differs, and at planning an
               answer they cannot read becomes "converge once ... answers" (the same command):
               "changes" tells these apart.
    "converge": {"http": ..., "log": [...]}: the function commands it yields are run too (what
               pyinfra runs at execution), their requests answered from this "http" alone, and
               what they log compared with "log"; or, with "exception": {"name", "message"}
               instead of "log", what they must raise (an answer they cannot read at execution).

A request the fixture has no answer for is a failure naming it, and so is an answer never asked
for: the fixture says exactly what the planning (and "converge", what the execution) reads.

A fact asked with other arguments than the fixture has is a failure (the operation would read
the wrong thing), and so is a fact read other than through the operation's declaration
(batched_operation): the batch would not have it.

Values that JSON has no type for: {"$bytes": "text"}, {"$path": "file beside the fixture"},
{"$TreeEntry": {...}}, {"$StateSwap": {...}}, {"$VaultDesired": {...}}, {"$MinioDesired": {...}}
(its buckets as {"name": ..., ...}), {"$HostKeyStore": {"path", "user", "group", "file", "found"}}
(the keys file's content on the host, or null when there is none: its read is the only host
command answered; "found": true gives the store that content as the run's secret read found it,
as roles/vault.py does); typed fact answers are built by FACT_TYPES.

"executing": true plans as pyinfra does once it executes (host.state.is_executing): an answer the
planning cannot read is then an error, not a change.

"plan_log": what the planning logs (host.log), when given: what a `--dry` run shows.

"host_commands": how many host commands the planning runs (vault.setup, minio.setup): each HTTP
batch the transport sends, each read of the keys file.

"ahead": for those two, the answers the fact batch's command brought (fact_batch.planned_answers:
the plan's reads registered at plan time by the role), in the form of "http": the planning takes
them first, and sends (through "http") only what they do not answer; each must be asked for.
"""

from __future__ import annotations

import base64
import json
import shlex
from importlib import import_module
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qsl, urlsplit

import pytest
from pyinfra.api import FileUploadCommand, FunctionCommand, StringCommand

from mnemos_provision import fact_batch, host_http, minio_setup, vault_setup
from mnemos_provision.facts.apt import AptState
from mnemos_provision.facts.files import PathState
from mnemos_provision.operations import util
from mnemos_provision.operations.util import StateSwap
from mnemos_provision.operations.vault import HostKeyStore
from mnemos_provision.render import TreeEntry
from tests.conftest import data_cases

pytestmark = pytest.mark.unit

HERE = Path(__file__).resolve().parent.parent / "operations"

PLANNERS = {
    "vault.setup": ((vault_setup, "plan"),),
    "minio.setup": ((minio_setup, "bucket_differences"), (minio_setup, "user_differences")),
}

FACT_TYPES = {
    "apt.AptPackages": lambda v: AptState(v["packages"], v.get("dpkg_interrupted", False)),
    "files.TreeState": lambda v: {k: PathState(**s) for k, s in v.items()},
    "docker.DockerImagesPresent": lambda v: None if v is None else set(v),
}


def fact_key(kwargs: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(kwargs.items()))


def fact_name(cls) -> str:
    return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"


def decode(value, base: Path):
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return value["$bytes"].encode()
        if set(value) == {"$path"}:
            return base / value["$path"]
        if set(value) == {"$TreeEntry"}:
            spec = dict(value["$TreeEntry"])
            if spec.get("content") is not None:
                spec["content"] = spec["content"].encode()
            return TreeEntry(**spec)
        if set(value) == {"$StateSwap"}:
            return StateSwap(**value["$StateSwap"])
        if set(value) == {"$VaultDesired"}:
            return vault_setup.Desired(**value["$VaultDesired"])
        if set(value) == {"$MinioDesired"}:
            spec = dict(value["$MinioDesired"])
            spec["buckets"] = [minio_setup.Bucket(**b) for b in spec["buckets"]]
            return minio_setup.Desired(**spec)
        if set(value) == {"$HostKeyStore"}:
            spec = dict(value["$HostKeyStore"])
            content = spec.pop("file")
            runner = KeysFileRunner(spec["path"], content)
            if spec.pop("found", False):  # as the role gives it: read with the secret state
                spec["found"] = (("missing", None) if content is None
                                 else ("file", vault_setup.dumps_keys(content)))
            return HostKeyStore(**spec, runner=runner)
        return {k: decode(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v, base) for v in value]
    return value


class KeysFileRunner(host_http.Runner):
    """The host as HostKeyStore sees it: only the keys file's read is answered."""

    def __init__(self, path: str, content: dict | None):
        self.path, self.content = path, content
        self.commands = 0

    def run(self, command: str, stdin: list[str] | None = None) -> tuple[int, str]:
        self.commands += 1
        if not command.startswith(f"if [ -f {shlex.quote(self.path)} ]; then echo PRESENT; "):
            raise AssertionError(f"the operation ran on the host: {command!r}; the fixture "
                                 f"answers only the read of {self.path}")
        if self.content is None:
            return 0, "MISSING\n@@END@@\n"
        encoded = base64.b64encode(vault_setup.dumps_keys(self.content)).decode()
        return 0, f"PRESENT\n{encoded}\n@@END@@\n"

    def put(self, data: bytes, remote: str) -> None:
        raise AssertionError(f"the operation wrote {remote} on the host")


def request_key(method: str, url: str) -> str:
    parts = urlsplit(url)
    query = "&".join(k if v == "" else f"{k}={v}"
                     for k, v in sorted(parse_qsl(parts.query, keep_blank_values=True)))
    return f"{method.upper()} {parts.path}" + (f"?{query}" if query else "")


class FixtureHTTP(host_http.HostHTTP):
    """host_http.HostHTTP for one fixture: its prefetch and its answers from what was prefetched
    are the real ones; each host command (`send`) is answered from the fixture's "http"."""

    def __init__(self, answers: dict):
        super().__init__(runner=host_http.Runner())
        self.answers = {key: value if isinstance(value, list) else [value]
                        for key, value in answers.items()}
        self.used: set[tuple[str, int]] = set()
        self.unanswered: list[str] = []

    def __call__(self, *args, ahead=None, **kwargs) -> FixtureHTTP:  # stands in for HostHTTP
        self.ahead = ahead
        return self

    def answered(self, requests) -> list:
        """fact_batch.planned_answers from this fixture's answers: None where it has none."""
        found = []
        for r in requests:
            try:
                found.append(self._answer(r.method, r.url, r.headers, r.body))
            except AssertionError:
                self.unanswered.pop()
                found.append(None)
        return found

    def send(self, batch, keep=None):
        self.commands += 1
        return [self._answer(r.method, r.url, r.headers, r.body) for r in batch]

    @staticmethod
    def _matches(when: dict, headers: dict, body: bytes | None) -> bool:
        sent = {k.lower(): v for k, v in headers.items()}
        if any(sent.get(k.lower()) != v for k, v in when.get("headers", {}).items()):
            return False
        if "body" not in when:
            return True
        try:
            document = json.loads(body or b"null")
        except ValueError:
            return (body or b"").decode(errors="replace") == when["body"]
        if isinstance(when["body"], dict) and isinstance(document, dict):
            return all(document.get(k, object()) == v for k, v in when["body"].items())
        return document == when["body"]

    def _answer(self, method, url, headers, body):
        key = request_key(method, url)
        for index, answer in enumerate(self.answers.get(key, [])):
            if self._matches(answer.get("when", {}), headers or {}, body):
                self.used.add((key, index))
                return self._response(answer)
        shown = key + (f" with the body {body.decode(errors='replace')}" if body else "")
        self.unanswered.append(shown)
        raise AssertionError(f"unanswered request: {shown}; the fixture answers "
                             f"{sorted(self.answers)}")

    @staticmethod
    def _response(answer: dict) -> tuple[int, dict, bytes]:
        headers = dict(answer.get("headers", {}))
        if "json" in answer:
            headers.setdefault("Content-Type", "application/json")
            content = json.dumps(answer["json"]).encode()
        elif "xml" in answer:
            headers.setdefault("Content-Type", "application/xml")
            content = answer["xml"].encode()
        else:
            content = answer.get("text", "").encode()
        return answer.get("status", 200), headers, content

    def never_asked(self) -> list[str]:
        return [f"{key}" + (f" when {answer['when']}" if "when" in answer else "")
                for key, answers in self.answers.items()
                for index, answer in enumerate(answers) if (key, index) not in self.used]


class FixtureHost:
    """pyinfra's `host` for one fixture: facts answered only for the arguments the fixture has."""

    def __init__(self, facts: dict, reads: list, direct: bool):
        self.facts, self.reads, self.direct = facts, reads, direct
        self.noops: list[str] = []
        self.logs: list[str] = []
        self.name = "fixture"
        self.state = SimpleNamespace(config=SimpleNamespace(DIFF=False), is_executing=False)

    def get_fact(self, cls, **kwargs):
        name, key = fact_name(cls), fact_key(kwargs)
        self.reads.append((cls, kwargs, self.direct))
        answers = self.facts.get(name)
        if answers is None or key not in answers:
            raise AssertionError(f"the operation asked {name} with ({key}); the fixture has "
                                 f"{sorted(answers or {})}")
        value = answers[key]
        return FACT_TYPES[name](value) if name in FACT_TYPES else value

    def noop(self, text):
        self.noops.append(text)

    def log(self, text):
        self.logs.append(text)


def command_json(command):
    if isinstance(command, StringCommand):
        return command.get_raw_value()
    if isinstance(command, FileUploadCommand):
        src = command.src
        text = src.getvalue().decode() if hasattr(src, "getvalue") else str(src)
        return ["upload", text, command.dest]
    if isinstance(command, FunctionCommand):
        return ["function", command.function.__name__]
    return str(command)


def spy_planners(op_path: str, monkeypatch) -> list:
    """What the operation's planning functions return (or raise), in order."""
    found: list = []
    for module, name in PLANNERS.get(op_path, ()):
        def spy(*args, _real=getattr(module, name), **kwargs):
            try:
                result = _real(*args, **kwargs)
            except Exception as exc:
                found.append(f"{_real.__name__} raised {type(exc).__name__}: {exc}")
                raise
            found.extend(result)
            return result
        monkeypatch.setattr(module, name, spy)
    return found


@pytest.mark.parametrize("op_path,case", data_cases(HERE))
def test_operation(op_path, case, monkeypatch):
    spec = json.loads(case.read_text())
    module_name, op_name = op_path.split(".")
    module = import_module(f"mnemos_provision.operations.{module_name}")
    op = getattr(module, op_name)
    kwargs = decode(spec.get("kwargs", {}), case.parent)
    reads: list = []
    batch_host = FixtureHost(spec.get("facts", {}), reads, direct=False)
    direct_host = FixtureHost(spec.get("facts", {}), reads, direct=True)
    monkeypatch.setattr(fact_batch, "host", batch_host)
    monkeypatch.setattr(module, "host", direct_host)
    direct_host.state.is_executing = spec.get("executing", False)
    # the staging names are 128 random bits: fixed here so that commands can be compared
    monkeypatch.setattr(util, "secrets", SimpleNamespace(token_hex=lambda n: "0" * 2 * n))
    # every HTTP request from the host is answered by the fixture, or fails the test
    http = FixtureHTTP(spec.get("http", {}))
    monkeypatch.setattr(host_http, "HostHTTP", http)
    # the fact batch's answers of the reads registered at plan time: none unless the fixture has
    ahead = FixtureHTTP(spec.get("ahead", {}))
    monkeypatch.setattr(fact_batch, "planned_answers", ahead.answered)
    changes = spy_planners(op_path, monkeypatch)

    if "exception" in spec:
        expected = spec["exception"]
        with pytest.raises(Exception) as raised:
            list(op._inner(**kwargs))
        assert http.unanswered == [], f"unanswered requests: {http.unanswered}"
        assert type(raised.value).__name__ == expected["name"]
        assert str(raised.value) == expected["message"]
        return

    yielded = list(op._inner(**kwargs))
    commands = [command_json(c) for c in yielded]
    assert http.unanswered == [], f"unanswered requests: {http.unanswered}"
    if "host_commands" in spec:  # what planning costs: HTTP batches and keys-file reads
        keys_reads = sum(v.runner.commands for v in kwargs.values()
                         if isinstance(v, HostKeyStore))
        assert http.commands + keys_reads == spec["host_commands"], (
            f"{http.commands} HTTP command(s) and {keys_reads} keys-file read(s)")
    if op_path in PLANNERS:  # first: it names an error the planning turned into a change
        assert changes == spec["changes"]
    assert http.never_asked() == [], f"answers never asked for: {http.never_asked()}"
    assert ahead.never_asked() == [], f"answers ahead never asked for: {ahead.never_asked()}"
    assert commands == spec["commands"]
    if "plan_log" in spec:
        assert direct_host.logs == spec["plan_log"]
    noops = batch_host.noops + direct_host.noops
    if "noop_description" in spec:
        assert spec["commands"] == []
        assert noops == [spec["noop_description"]]
    else:
        assert noops == [], f"a noop while commands were expected: {noops}"

    if "converge" in spec:
        run_functions(yielded, spec["converge"], direct_host, monkeypatch)

    declared = getattr(op, "facts", None)
    declared_specs = list(declared(**kwargs).values()) if declared else []
    for cls, fact_kwargs, direct in reads:
        assert not direct, (f"{op_path} read {fact_name(cls)} ({fact_key(fact_kwargs)}) outside "
                            "its declaration: the run's batch would not have it")
        assert (cls, fact_kwargs) in declared_specs


def run_functions(yielded: list, spec: dict, host: FixtureHost, monkeypatch) -> None:
    """The function commands run as at execution, against the answers of spec["http"]."""
    http = FixtureHTTP(spec.get("http", {}))
    monkeypatch.setattr(host_http, "HostHTTP", http)
    for command in yielded:
        assert isinstance(command, FunctionCommand), f"not a function command: {command}"
    if "exception" in spec:
        with pytest.raises(Exception) as raised:
            for command in yielded:
                command.function(*command.args, **command.kwargs)
        assert (type(raised.value).__name__, str(raised.value)) == (
            spec["exception"]["name"], spec["exception"]["message"])
    else:
        for command in yielded:
            command.function(*command.args, **command.kwargs)
    assert http.unanswered == [], f"unanswered requests at execution: {http.unanswered}"
    assert http.never_asked() == [], f"answers never asked for at execution: {http.never_asked()}"
    assert host.logs == spec.get("log", [])


def test_every_operation_has_fixtures():
    from mnemos_provision import operations
    ops = set()
    for name in ("files", "apt", "docker", "compose", "server", "vault", "minio", "rotation"):
        module = import_module(f"{operations.__name__}.{name}")
        ops |= {f"{name}.{n}" for n, v in vars(module).items()
                if callable(v) and hasattr(v, "_inner") and v.__module__ == module.__name__}
    covered = {p.name for p in HERE.iterdir() if p.is_dir() and any(p.glob("*.json"))}
    assert ops - covered == set(), f"operations without fixtures: {sorted(ops - covered)}"
