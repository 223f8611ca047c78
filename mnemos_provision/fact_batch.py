"""
Batched facts: the facts a run's operations will read, read together in one round trip.

pyinfra (v3) reads each fact when its operation executes, one command per fact: a converged host
costs one round trip per operation (about 15 ms on @local, 60 ms or more over @docker or SSH).
Here, each operation declares the facts it reads once (`batched_operation`); the declaration is
registered at plan time and the operation reads its answers from it by name. The first time an
operation of a host reads one of them during execution, every declared fact of that host is read
in one command, each part with its own fact's command and `process()`.

An answer is used only while it is true: once an operation of the host has run a command (changed
something, or may have) after the batch was read, `read()` falls back to pyinfra's own
`host.get_fact` (a fresh command), so a decision is never taken on a stale answer. A part whose
command fails, or whose required command is missing, is not used either: pyinfra then reads that
fact itself, with its own error handling. The answers are the same values the facts give on their
own (tests/unit/test_fact_batch.py).

HTTP requests can ride on the same command (`expect_http`, `planned_answers`): Vault's and
MinIO's roles register at plan time the reads their plans make first, the batch's command sends
them with one curl beside its parts, and the plans take the answers under the same rule (used
only while no operation of the host has run a command since). Those answers are secret: a batch
that carries HTTP is run without printing (`print_output=False`, as host_http runs requests),
never as pyinfra's fact, and its answers go to its output, never into its staging directory.
"""

from __future__ import annotations

import functools
import inspect
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

from pyinfra import host, logger
from pyinfra.api import FactBase, StringCommand, operation
from pyinfra.api.state import StateStage
from pyinfra.context import ContextObject, ctx_host

from mnemos_provision.connection import connector_arguments

FactSpec = tuple[type, dict]


def _key(cls: type, kwargs: dict) -> tuple:
    return cls.__name__, repr(sorted(kwargs.items()))


def _shell(value: Any) -> str:
    return value.get_raw_value() if isinstance(value, StringCommand) else str(value)


class FactBatch(FactBase[dict[int, tuple[str, list[str]]]]):
    """
    Several facts in one command, run side by side: `parts` is a list of (requires_command or "",
    command). Each part's stdout is staged in a 0700 temporary directory (so never batch a fact
    whose output is secret), then printed in order, each followed by a marker line with its exit
    status ("missing" when its required command is not installed). Returns
    {index: (status, [lines])}; a part without a status (no temporary directory) is absent.
    """

    @staticmethod
    def default():
        return {}

    def command(self, parts: list[tuple[str, str]], marker: str, foreground: str = ""):
        """`foreground`: a step run while the parts run (fact_batch's HTTP requests), its output
        before the parts'; only through `_read_batch`'s unprinted command, never as a fact."""
        self._marker = marker  # pyinfra calls process() on the same instance
        script = ['d=$(mktemp -d /tmp/mnemos-batch.XXXXXXXXXX 2>/dev/null) || exit 0']
        for i, (requires, command) in enumerate(parts):
            run = f'{{ ( {command}\n) </dev/null >"$d/{i}"; echo $? >"$d/{i}.rc"; }}'
            if requires:
                run = (f"{{ if command -v {requires} >/dev/null 2>&1; then {run}; "
                       f'else echo missing >"$d/{i}.rc"; fi; }}')
            script.append(run + " &")
        if foreground:
            script.append(foreground)
        script.append("wait")
        for i in range(len(parts)):
            script.append(f'cat "$d/{i}" 2>/dev/null; '
                          f'echo "{marker} {i} $(cat "$d/{i}.rc" 2>/dev/null)"')
        script.append('rm -rf "$d"; true')
        return "\n".join(script)

    def process(self, output):
        marker = self._marker
        parts: dict[int, tuple[str, list[str]]] = {}
        lines: list[str] = []
        for line in output:
            before, found, rest = line.partition(marker + " ")
            if not found:
                lines.append(line)
                continue
            if before:  # a part whose last line had no newline
                lines.append(before)
            index, _, status = rest.partition(" ")
            parts[int(index)] = (status.strip(), lines)
            lines = []
        return parts


def split_batch_output(output: list[str], marker: str) -> dict[int, tuple[str, list[str]]]:
    """The parts of a FactBatch output: {index: (exit status or "missing", stdout lines)}."""
    batch = FactBatch()
    batch._marker = marker
    return batch.process(output)


def answer_from_part(fact: FactBase, status: str, lines: list[str]) -> tuple[bool, Any]:
    """(usable, value) of one part, the way pyinfra derives a fact from its command's output."""
    if status != "0":
        return False, None
    return True, (fact.process(lines) if lines else fact.default())


def prepare_parts(specs: list[FactSpec]) -> tuple[list[FactBase], list[tuple[str, str]]]:
    """
    One fact instance per spec, and its (requires_command, command) part. The instance that built
    the command must also process its output: some of pyinfra's facts keep state between the two
    (Sha256File remembers the path).
    """
    facts, parts = [], []
    for cls, kwargs in specs:
        fact = cls()
        requires = fact.requires_command
        if callable(requires):
            requires = requires(**kwargs)
        parts.append((_shell(requires or ""), _shell(fact.command(**kwargs))))
        facts.append(fact)
    return facts, parts


@dataclass
class _HostBatch:
    specs: dict[tuple, FactSpec] = field(default_factory=dict)
    answers: dict[tuple, Any] | None = None
    changes_when_read: int = -1
    # HTTP requests registered at plan time (expect_http): (the client whose settings send them,
    # the calls that make them); their answers by Request.key(), each used once
    http: list[tuple[Any, list[Callable[[], object]]]] = field(default_factory=list)
    http_answers: dict[tuple, list] = field(default_factory=dict)


_BATCHES: dict[tuple[int, str], _HostBatch] = {}


def _real_host(host):
    """The Host behind pyinfra's context proxy (`from pyinfra import host`)."""
    return host._get_module() if isinstance(host, ContextObject) else host


def _host_batch(host) -> _HostBatch | None:
    state = getattr(host, "state", None)
    if state is None or not hasattr(host, "op_hash_order"):
        return None  # not a pyinfra host (the decision tests' fake host)
    return _BATCHES.setdefault((id(state), host.name), _HostBatch())


def _changed_operations(host) -> int:
    """
    How many operations of `host` have executed commands so far in this run: changed something,
    or may have (a failed operation with _ignore_errors can have run part of its commands).
    """
    count = 0
    for op_hash in host.op_hash_order:
        op_data = host.state.ops[host].get(op_hash)
        meta = op_data.operation_meta if op_data else None
        if meta is not None and meta.is_complete() and meta.executed:
            count += 1
    return count


def expect(cls: type, **kwargs) -> None:
    """Declare (at plan time) that an operation of the current host reads `cls` with `kwargs`."""
    if not ctx_host.isset():
        return
    batch = _host_batch(ctx_host.get())
    if batch is not None and batch.answers is None:
        batch.specs.setdefault(_key(cls, kwargs), (cls, kwargs))


def expect_http(client, calls: list[Callable[[], object]]) -> None:
    """
    Register (at plan time) the HTTP requests an operation of the current host will send first:
    `calls` (client calls, as for `client.prefetch`) of `client`, a host_http.HostHTTP whose
    timeout and CA file send them. When the fact batch is read, each call's request is recorded
    (`client.record`: built and signed then, moments before it is sent, so a signature's date is
    never older than the batch) and the batch's command sends them too, in one curl beside its
    parts; the operation's `client.prefetch` takes their answers from there (`planned_answers`)
    while no operation of the host has run commands since. Their answers (and the requests'
    tokens) are secret: that command is never printed, its answers never staged in a file.
    """
    if not ctx_host.isset() or not calls:
        return
    batch = _host_batch(ctx_host.get())
    if batch is not None and batch.answers is None:
        batch.http.append((client, list(calls)))


def planned_answers(requests: list) -> list:
    """
    The fact batch's answers of `requests` (host_http.Request) for the current host, in order:
    an answer while it is true (no operation of the host has run commands since the batch was
    read, the rule of `read`), each used once; None for a request not registered, not answered
    (or failed) in the batch, or stale (its operation sends it itself). Reads the batch when no
    operation read it yet.
    """
    none: list = [None] * len(requests)
    if not ctx_host.isset():
        return none
    host = _real_host(ctx_host.get())
    batch = _host_batch(host)
    if batch is None or not batch.http or host.state.current_stage != StateStage.Execute:
        return none
    if _held_answers(host, batch) is None:
        batch.http_answers.clear()  # never true again in this run
        return none
    found = []
    for request in requests:
        answers = batch.http_answers.get(request.key())
        found.append(answers.pop(0) if answers else None)
    return found


def read(host, cls: type, **kwargs) -> Any:
    """
    Fact `cls` with `kwargs` for `host`: from the batch while it is true (nothing changed on the
    host since it was read), else read on its own by pyinfra.
    """
    host = _real_host(host)
    batch = _host_batch(host)
    key = _key(cls, kwargs)
    if batch is None or host.state.current_stage != StateStage.Execute or key not in batch.specs:
        return host.get_fact(cls, **kwargs)
    answers = _held_answers(host, batch)
    if answers is not None and key in answers:
        return answers[key]
    return host.get_fact(cls, **kwargs)


def _held_answers(host, batch: _HostBatch) -> dict[tuple, Any] | None:
    """The answers of `batch` for `host` (read when no operation read it yet) while they hold (no
    operation of the host has run commands since it was read); None once they do not."""
    changes = _changed_operations(host)
    if batch.answers is None:
        batch.answers = _read_batch(host, list(batch.specs.values()), batch)
        batch.changes_when_read = changes
    return batch.answers if changes == batch.changes_when_read else None


def _read_batch(host, specs: list[FactSpec], batch: _HostBatch | None = None
                ) -> dict[tuple, Any]:
    marker = "@@mnemos-fact-" + secrets.token_hex(4)
    facts, parts = prepare_parts(specs)
    if batch is not None and batch.http:
        output = _read_with_http(host, parts, marker, batch)
    else:  # no secret in it: pyinfra's own fact (printed at --debug like any fact)
        output = host.get_fact(FactBatch, parts=parts, marker=marker)
    answers = {}
    for index, ((cls, kwargs), fact) in enumerate(zip(specs, facts)):
        status, lines = output.get(index, ("absent", []))
        usable, value = answer_from_part(fact, status, lines)
        if usable:
            answers[_key(cls, kwargs)] = value
    return answers


def _read_with_http(host, parts: list[tuple[str, str]], marker: str, batch: _HostBatch
                    ) -> dict[int, tuple[str, list[str]]]:
    """
    The fact batch's command with the registered HTTP requests sent by one curl in the
    foreground (host_http.one_curl_step: its config on the command's standard input, base64;
    its answers straight to the command's output, base64, never into the parts' staging
    directory) while the parts run in the background. Run as host_http runs its requests: with
    the operations' privileges, never printed (print_output=False, print_input=False), unlike a
    fact's output at --debug. Fills batch.http_answers; returns the parts' outputs.
    """
    # the one curl step, its config and its parsing are host_http's, reached through the
    # registering client (a host_http.HostHTTP): this module does not load requests (start-up)
    sender = batch.http[0][0]
    mark = sender.new_mark()
    requests: list = []
    sections: list[str] = []
    for client, calls in batch.http:
        try:
            recorded = client.record(calls)  # built and signed now
        except Exception as exc:  # its operation's own prefetch meets it again
            logger.debug("fact_batch: HTTP requests not sent with the batch (%s)",
                         type(exc).__name__)
            continue
        requests += recorded
        sections += client.config_sections(recorded, mark)
    if not requests:
        return host.get_fact(FactBatch, parts=parts, marker=marker)
    command = FactBatch().command(parts, marker, foreground=sender.one_curl_step(len(requests)))
    logger.debug("fact_batch: %d fact(s) and %d HTTP request(s) in one host command: %s",
                 len(parts), len(requests),
                 ", ".join(f"{r.method} {urlsplit(r.url).path}" for r in requests))
    arguments = dict(connector_arguments(host))  # the operations' privileges (--sudo ...)
    arguments["_stdin"] = sender.encode_config(sections)
    ok, output = host.run_shell_command(command, print_output=False, print_input=False,
                                        **arguments)
    lines = list(output.stdout_lines) if ok else []
    if sender.END not in lines:
        return {}  # not the batch's output: every fact and request is read on its own
    end = lines.index(sender.END)
    answers = sender.parse_one_curl("\n".join(lines[:end + 1]), requests, mark)
    for request, answer in zip(requests, answers or []):
        if isinstance(answer, tuple):  # else a host_http.HostHTTPError: sent again when made
            batch.http_answers.setdefault(request.key(), []).append(answer)
    return split_batch_output(lines[end + 1:], marker)


class DeclaredFacts:
    """
    The facts an operation declared, read by name: `facts["state"]` is the answer of the batch
    while it holds (see `read`), else pyinfra's own. A name the operation did not declare is a
    KeyError naming the declared ones.
    """

    def __init__(self, operation: str, specs: dict[str, FactSpec]):
        self.operation, self.specs = operation, specs

    def __getitem__(self, name: str) -> Any:
        if name not in self.specs:
            raise KeyError(f"{self.operation} reads the fact {name!r} it did not declare "
                           f"(declared: {', '.join(sorted(self.specs)) or 'none'})")
        cls, kwargs = self.specs[name]
        return read(host, cls, **kwargs)


def batched_operation(facts: Callable[..., dict[str, FactSpec]]):
    """
    Make a pyinfra operation (in place of @operation()) whose facts are declared once, here:
    `facts` gets the operation's keyword arguments and returns {name: (FactClass, kwargs)}. The
    facts are declared for the current host when the operation is called (plan time: they join
    the host's batch), and the operation's first parameter, `facts`, reads them by name when it
    runs: the body never names a fact's class or arguments again, so the two cannot drift.

    **Example:**

    .. code:: python

        @batched_operation(lambda user, **_: {"groups": (UserGroups, {"user": user})})
        def group_member(facts, user: str, group: str):
            if group in facts["groups"]:
                host.noop(...)
    """
    def decorate(func):
        parameters = list(inspect.signature(func).parameters.values())
        if not parameters or parameters[0].name != "facts":
            raise TypeError(f"{func.__qualname__}: the first parameter of a batched operation "
                            "is `facts`")
        public = inspect.Signature(parameters[1:])
        label = f"{func.__module__.rsplit('.', 1)[-1]}.{func.__name__}"

        def body(*args, **kwargs):
            return func(DeclaredFacts(label, facts(**kwargs)), *args, **kwargs)

        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(body, attr, getattr(func, attr))
        body.__signature__ = public  # type: ignore[attr-defined]
        op = operation()(body)

        @functools.wraps(op)
        def call(*args, **kwargs):
            for cls, fact_kwargs in facts(**kwargs).values():
                expect(cls, **fact_kwargs)
            return op(*args, **kwargs)
        call.facts = facts  # type: ignore[attr-defined]
        return call
    return decorate


def later(cls: type, **kwargs) -> Callable[[], Any]:
    """
    Declare now (plan time) a fact that an `_if` condition reads when its operation executes;
    returns the function that reads it then (from the batch while it holds).

    **Example:**

    .. code:: python

        keyring = later(File, path="/etc/apt/keyrings/docker.asc")
        server.shell(commands=[...], _if=lambda: not keyring())
    """
    expect(cls, **kwargs)
    return lambda: read(ctx_host.get(), cls, **kwargs)
