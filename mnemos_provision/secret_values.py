"""
Secrets: the dict that holds secret values in a run (the settings' supplied ones, the secret
state's). A module of its own, importing nothing of the project, so that both
mnemos_provision/settings.py and mnemos_provision/secret_store import it at the top.
"""

from __future__ import annotations


class Secrets(dict):
    """A dict of secrets whose repr never shows the values (tracebacks, logs, test reports)."""

    def __repr__(self) -> str:
        return f"<{len(self)} secrets: {', '.join(sorted(self))}>"

    __str__ = __repr__
