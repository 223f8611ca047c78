"""
Facts about apt: AptPackages (installed, version, candidate of many names in one command),
AptListsAge.

Every command is POSIX sh with tools a minimal Debian/Ubuntu has (coreutils, mawk, getent).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import TypedDict

from pyinfra.api import FactBase


class PackageState(TypedDict):
    installed: bool  # installed for any architecture
    version: str  # the installed version ("" when not installed)
    candidate: bool  # apt can install it (installed ones count as having one)


@dataclass
class AptState:
    packages: dict[str, PackageState] = field(default_factory=dict)  # names dpkg or apt know
    dpkg_interrupted: bool = False  # a killed dpkg run must be finished (dpkg --configure -a)

    def get(self, name: str) -> PackageState:
        """The state of `name`; a name neither dpkg nor apt know is not installed, no candidate."""
        return self.packages.get(name, {"installed": False, "version": "", "candidate": False})


class AptPackages(FactBase[AptState]):
    """
    For each name: whether it is installed (and which version) and, for those that are not,
    whether apt has a candidate, in one command (apt-cache runs only for missing packages: it
    costs up to a second per call on a host with large package lists).
    Returns an AptState: {name: PackageState} and whether an interrupted dpkg run must be
    finished first.
    """

    def requires_command(self, *args, **kwargs) -> str:
        return "dpkg-query"

    @staticmethod
    def default() -> AptState:
        return AptState()

    def command(self, names: list[str]):
        quoted = " ".join(shlex.quote(n) for n in names)
        return (
            # one dpkg-query for all names; a name dpkg never heard of prints nothing
            "s=$(dpkg-query -W -f='S|${Package}|${db:Status-Abbrev}|${Version}\\n' "
            f"{quoted} 2>/dev/null); "
            'printf "%s\\n" "$s"; '
            f"missing=$(printf '%s\\n' \"$s\" | awk -F'|' -v want={shlex.quote(' '.join(names))} "
            "'$3 ~ /^ii/ {ok[$2]=1} END {n=split(want, w, \" \"); "
            "for (i=1; i<=n; i++) if (!(w[i] in ok)) printf \"%s \", w[i]}'); "
            '[ -n "$missing" ] && apt-cache policy $missing 2>/dev/null | '
            "awk '/^[^ ]/{p=$1; sub(/:$/, \"\", p)} /Candidate:/{print \"C\", p, $2}'; "
            # an interrupted dpkg run leaves files here; apt refuses to work until it is finished
            "ls -A /var/lib/dpkg/updates 2>/dev/null | grep -q . && echo 'DPKG_INTERRUPTED'; true"
        )

    def process(self, output) -> AptState:
        out: dict[str, PackageState] = {}
        interrupted = False
        for line in output:
            if line.startswith("S|"):
                _, name, status, version = (line.split("|") + ["", "", ""])[:4]
                installed = status.strip().startswith("ii")
                if installed or name not in out:  # multi-arch: installed for any architecture
                    out[name] = {"installed": installed, "version": version, "candidate": installed}
                continue
            parts = line.split()
            if parts == ["DPKG_INTERRUPTED"]:
                interrupted = True
            elif len(parts) == 3 and parts[0] == "C":
                info = out.setdefault(parts[1],
                                      {"installed": False, "version": "", "candidate": False})
                info["candidate"] = parts[2] not in ("none", "(none)")
        return AptState(out, interrupted)


class AptListsAge(FactBase[int | None]):
    """Seconds since apt's package lists were last refreshed; None when there are none."""

    def command(self):
        return (
            "t=$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -printf '%T@\\n' "
            "2>/dev/null | sort -n | tail -n 1); "
            '[ -n "$t" ] && echo $(( $(date +%s) - ${t%.*} )) || echo none'
        )

    def process(self, output) -> int | None:
        value = output[0] if output else "none"
        return int(value) if value.lstrip("-").isdigit() else None
