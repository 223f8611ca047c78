"""
Commands that say they are alive: their output reaches the controller while they run, at every
verbosity (locally and over SSH), and the commands print only lines written for a person.

pyinfra prints a command's output as it arrives only at `-vvv` (`state.print_output`): at default
verbosity a StringCommand's output is read and kept, and shown at the end, and only when it
failed. A `ShownCommand` is a StringCommand that asks the connector to print its lines as they
arrive (`print_output=True`, the connectors' own streaming: each line prefixed with the host's
name, on pyinfra's stderr). So the command itself decides what a person sees: `alive` runs a noisy
command (apt-get, docker compose) with its output in a temporary file and prints what it does, a
line every `ALIVE_EVERY` seconds while it runs and how long it took; its output's last lines only
when it failed. Nothing here runs on a converged host: the operations yield no command then.
"""

from __future__ import annotations

import shlex

from pyinfra.api import StringCommand
from pyinfra.connectors.util import CommandOutput

ALIVE_EVERY = 10  # seconds between two "still running" lines
PULL_EVERY = 5  # seconds between two lines of the pulls' summary


class ShownCommand(StringCommand):
    """A StringCommand whose output lines are printed on the controller as they arrive."""

    def execute(self, state, host, connector_arguments):
        connector_arguments.update(self.connector_arguments)
        status, _output = host.run_shell_command(self, print_output=True,
                                                 print_input=state.print_input,
                                                 **connector_arguments)
        # printed already: pyinfra would print a failed command's output a second time
        return status, CommandOutput([])


# alive LABEL COMMAND...: COMMAND's output goes to a 0600 temporary file; LABEL is printed when it
# starts, every ALIVE_EVERY seconds while it runs and when it ends (with the time it took); on a
# failure the output's last 40 lines go to stderr. Its exit status is COMMAND's.
def alive_definition(every: int) -> str:
    """The shell function `alive`, its "still running" line every `every` seconds."""
    return (
        # in /tmp (sticky: no other account renames root's file), never TMPDIR (not trusted)
        "alive() { label=$1; shift; log=$(mktemp /tmp/mnemos-progress.XXXXXXXXXX) || return 1; "
        "start=$(date +%s); "
        f"next=$((start + {int(every)})); echo \"$label ...\"; "
        "\"$@\" >\"$log\" 2>&1 & pid=$!; "
        "while kill -0 $pid 2>/dev/null; do sleep 1; now=$(date +%s); "
        "if [ $now -ge $next ] && kill -0 $pid 2>/dev/null; then "
        "echo \"$label: still running, $((now - start)) s\"; "
        f"next=$((now + {int(every)})); fi; done; "
        "wait $pid; rc=$?; took=$(( $(date +%s) - start )); "
        "if [ $rc -ne 0 ]; then tail -n 40 \"$log\" >&2; "
        "echo \"$label: failed after $took s (exit status $rc)\" >&2; "
        "else echo \"$label: done in $took s\"; fi; rm -f \"$log\"; return $rc; }"
    )


ALIVE = alive_definition(ALIVE_EVERY)


def few(names: list[str], shown: int = 4) -> str:
    """At most `shown` names, then how many more: a label repeated every ALIVE_EVERY seconds."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def alive(label: str, *argv: str) -> str:
    """The shell text that runs argv (words, quoted here) under `alive` (define ALIVE first)."""
    return " ".join(["alive", shlex.quote(label), *(shlex.quote(a) for a in argv)])


def shown_alive(label: str, *argv: str) -> ShownCommand:
    """One command run under `alive`, its lines shown while it runs."""
    return ShownCommand(f"{ALIVE}\n{alive(label, *argv)}")


def pull_script(images: dict[str, str], every: int = PULL_EVERY) -> str:
    """
    The shell text that pulls the images of {service: image} missing on the host, all at once
    (one `docker pull` each, in parallel; the engine fetches their layers side by side), and
    prints nothing when none is missing. Otherwise it prints which images it pulls, a line per
    image as it arrives and, every `every` seconds, how many images and layers are in and for how
    long. A failed pull prints the image, the registry's answer (the last lines of `docker pull`)
    and the setting to change, and the script exits 1 once every pull has ended.
    """
    q = shlex.quote
    lines = ['pulls=$(mktemp -d /tmp/mnemos-pulls.XXXXXXXXXX) || exit 1',  # /tmp: as alive's log
             "trap 'rm -rf \"$pulls\"' EXIT", "n=0"]
    for i, (service, image) in enumerate(sorted(images.items()), start=1):
        lines.append(
            f"docker image inspect {q(image)} >/dev/null 2>&1 || {{ n=$((n + 1)); "
            f"printf '%s\\n' {q(image)} >\"$pulls/{i}.image\"; "
            f"( docker pull {q(image)} >\"$pulls/{i}.log\" 2>&1; echo $? >\"$pulls/{i}.rc\" ) & }}")
    lines.append(
        'if [ "$n" -gt 0 ]; then start=$(date +%s); '
        f"next=$((start + {int(every)})); "
        f"echo \"pulling $n of {len(images)} images in parallel:\" "
        "$(cat \"$pulls\"/*.image); "
        "while :; do arrived=0; for rc in \"$pulls\"/*.rc; do [ -f \"$rc\" ] || continue; "
        "arrived=$((arrived + 1)); i=${rc%.rc}; [ -f \"$i.shown\" ] && continue; : >\"$i.shown\"; "
        "if [ \"$(cat \"$rc\")\" = 0 ]; then "
        "echo \"pulled $(cat \"$i.image\") ($(( $(date +%s) - start )) s)\"; fi; done; "
        '[ "$arrived" -ge "$n" ] && break; now=$(date +%s); '
        'if [ "$now" -ge "$next" ]; then '
        "total=$(cat \"$pulls\"/*.log 2>/dev/null | "
        "grep -c -e ': Pulling fs layer$' -e ': Already exists$'); "
        "got=$(cat \"$pulls\"/*.log 2>/dev/null | "
        "grep -c -e ': Pull complete$' -e ': Already exists$'); "
        'echo "pulling images: $arrived of $n done, $got of $total layers, $((now - start)) s"; '
        f"next=$((now + {int(every)})); fi; sleep 1; done; wait; "
        'echo "pulls done in $(( $(date +%s) - start )) s"; fi')
    lines.append("failed=0")
    for i, (service, image) in enumerate(sorted(images.items()), start=1):
        setting = f'images["{service}"]'
        fix = (f"set {setting} (or image_registry) in group_data to an image the registry has, "
               "or docker load it (image_archives)")
        lines.append(
            f"if [ -f \"$pulls/{i}.rc\" ] && [ \"$(cat \"$pulls/{i}.rc\")\" != 0 ]; then "
            f"failed=1; echo {q(f'image {image} cannot be pulled; the registry answered:')} >&2; "
            f"grep -v '^[[:space:]]*$' \"$pulls/{i}.log\" | tail -n 3 | sed 's/^/    /' >&2; "
            f"echo {q(fix)} >&2; fi")
    lines.append('[ "$failed" = 0 ] || exit 1')
    return "\n".join(lines)
