"""
group_data/all.py and the settings block of docs/settings.md, written from the specification in
mnemos_provision/settings.py (`Settings`): each setting's default with its one-line doc, in the
spec's order and sections. A unit test keeps both files identical to what this writes
(scripts/sync-readme-defaults runs this module).

    python3 -m mnemos_provision.settings_doc          # rewrite both
    python3 -m mnemos_provision.settings_doc --check  # exit 1 if either is out of date
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from typing import Any

from mnemos_provision.settings import DEFAULTS_FILE, REPO_ROOT, SPEC, Spec

WIDTH = 100
ALL_FILE = DEFAULTS_FILE
SETTINGS_DOC = REPO_ROOT / "docs/settings.md"
DOC_BLOCK = re.compile(r"<!-- defaults:begin -->\n```python\n.*?```\n<!-- defaults:end -->",
                       re.S)

HEADER = '''\
"""
Every setting of the deploy with its default and a one-line doc. Written from the specification
(`Settings` in mnemos_provision/settings.py) by scripts/sync-readme-defaults: change a setting
there, not here. Environments (group_data/<env>.py), inventories and `--data key=value` override
these; a dict setting is merged key by key, so a layer names only the entries it changes (an
entry set to None removes it). The result is validated before any operation runs.
"""
'''


def literal(value: Any) -> str:
    """`value` as Python source on one line (strings in double quotes)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    return repr(value)


def _lines(value: Any, indent: int, head: str, tail: str) -> list[str]:
    """`head` + value + `tail` at `indent`, split over lines where one is too long."""
    pad = " " * indent
    one = f"{pad}{head}{literal(value)}{tail}"
    if len(one) <= WIDTH or not isinstance(value, (dict, list)) or not value:
        return [one]
    inner = " " * (indent + 4)
    if isinstance(value, dict):
        out = [f"{pad}{head}{{"]
        for k, v in value.items():
            out += _lines(v, indent + 4, f"{literal(k)}: ", ",")
        return out + [f"{pad}}}{tail}"]
    out, line = [f"{pad}{head}["], inner
    for item in value:  # list items packed into lines
        piece = literal(item) + ","
        if line.strip() and len(line) + 1 + len(piece) > WIDTH:
            out.append(line)
            line = inner
        line += (" " if line.strip() else "") + piece
    return out + [line, f"{pad}]{tail}"]


def doc_text(s: Spec) -> str:
    """The one-line doc, with the choices of a string setting in front."""
    if s.choices and s.type is str:
        return f"{' | '.join(s.choices)}: {s.doc}"
    return s.doc


def setting_lines(s: Spec) -> list[str]:
    """`name = default  # doc` when that fits in WIDTH; otherwise the doc above the value."""
    doc = doc_text(s)
    lines = _lines(s.default, 0, f"{s.name} = ", "")
    first = f"{lines[0]}  # {doc}"
    if len(first) <= WIDTH:
        return [first, *lines[1:]]
    comment = textwrap.wrap(doc, WIDTH - 2, break_on_hyphens=False)
    return [f"# {c}" for c in comment] + lines


def render_defaults() -> str:
    out = [HEADER.rstrip("\n")]
    for s in SPEC:
        if s.section:
            out += ["", f"# {'-' * 64} {s.section}"]
        out += setting_lines(s)
    return "\n".join(out) + "\n"


def doc_block(text: str) -> str:
    return "<!-- defaults:begin -->\n```python\n" + text + "```\n<!-- defaults:end -->"


def main(argv: list[str]) -> int:
    text = render_defaults()
    doc = SETTINGS_DOC.read_text()
    if not DOC_BLOCK.search(doc):
        print(f"{SETTINGS_DOC}: no <!-- defaults:begin --> ... <!-- defaults:end --> block",
              file=sys.stderr)
        return 1
    new_doc = DOC_BLOCK.sub(lambda m: doc_block(text), doc)
    stale = [p for p, new in ((ALL_FILE, text), (SETTINGS_DOC, new_doc)) if p.read_text() != new]
    if "--check" in argv:
        for p in stale:
            print(f"{p.relative_to(REPO_ROOT)} is out of date: run scripts/sync-readme-defaults",
                  file=sys.stderr)
        return 1 if stale else 0
    ALL_FILE.write_text(text)
    SETTINGS_DOC.write_text(new_doc)
    for p in stale:
        print(f"wrote {p.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
