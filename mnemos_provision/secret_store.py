"""
The secret state: generated once on the controller with a CSPRNG, kept on the host in a 0600 JSON
file outside the tree and git (secrets_state_path), read back on every run, never rotated.
User-supplied secrets (the `secrets` setting) win over stored and generated ones.
"""

from __future__ import annotations

import json
import secrets as csprng
import string

from mnemos_provision.dotenv import SECRET_LENGTHS

_ALPHANUMERIC = string.ascii_letters + string.digits


class Secrets(dict):
    """A dict of secrets whose repr never shows the values (tracebacks, logs, test reports)."""

    def __repr__(self) -> str:
        return f"<{len(self)} secrets: {', '.join(sorted(self))}>"

    __str__ = __repr__


def generate(name: str) -> str:
    """A new value for secret `name`, with the length documented in dotenv.SECRET_LENGTHS."""
    length = SECRET_LENGTHS[name]
    if name == "VAULT_TOKEN":  # a custom token ID: letters and digits, no "hvs." prefix
        return "mnemos" + "".join(csprng.choice(_ALPHANUMERIC) for _ in range(length - 6))
    if name == "JWT_SECRET_KEY":
        return csprng.token_hex(length // 2)
    return "".join(csprng.choice(_ALPHANUMERIC) for _ in range(length))


def complete(stored: dict[str, str], supplied: dict[str, str]) -> Secrets:
    """Stored values, overridden by supplied ones, plus a generated value for each one missing."""
    values = Secrets(stored)
    values.update(supplied)
    for name in SECRET_LENGTHS:
        if not values.get(name):
            values[name] = generate(name)
    return values


def parse(text: bytes | None) -> Secrets:
    if not text:
        return Secrets()
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("the secret state file does not hold a JSON object")
    return Secrets({str(k): str(v) for k, v in data.items()})


def serialize(values: dict[str, str]) -> bytes:
    return (json.dumps(values, indent=2, sort_keys=True) + "\n").encode()
