"""
The README is the front door and docs/ holds the rest: the README stays short, names the test
command and the documentation pages, and every relative link of the README and of docs/ leads to a
file that exists and, with an anchor, to a heading of that file (GitHub's anchors).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

README = REPO / "README.md"
PAGES = sorted((REPO / "docs").glob("*.md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def outside_code(text: str) -> str:
    """The text without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def anchors(path: Path) -> set[str]:
    """GitHub's anchor of each heading: lower case, punctuation dropped, spaces as hyphens."""
    found = set()
    for line in outside_code(path.read_text()).splitlines():
        heading = re.match(r"#{1,6} (.*)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            found.add(slug)
    return found


def test_readme_is_a_front_door():
    text = README.read_text()
    assert len(text.splitlines()) <= 250, "the README grows: move the detail into docs/"
    assert "scripts/test" in text, "the README names the test command (.ci/run calls it)"
    assert "## Threat model\n" in text and "[docs/security.md](docs/security.md)" in text
    linked = {target for target in LINK.findall(text)}
    for page in PAGES:
        assert f"docs/{page.name}" in linked, f"the README does not link docs/{page.name}"


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_lead_somewhere(page):
    for target in LINK.findall(outside_code(page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: {target} leads to no file"
        if anchor:
            assert anchor in anchors(dest), f"{page.name}: {target}: no such heading"
