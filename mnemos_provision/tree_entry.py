"""
TreeEntry: one directory or file of the MNEMOS tree, as mnemos_provision/render.py renders it and
the files.tree operation lays it out. A module of its own so that the operation reads no settings.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TreeEntry:
    path: str  # relative to mnemos_root
    kind: str  # "directory" | "file"
    mode: str  # octal, as stat prints it ("755", "600")
    content: bytes | None = None
    secret: bool = False  # never shown in a diff or in output
