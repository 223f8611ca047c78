"""
A SIMULATED Vault HTTP API, for tests only: no Vault binary or image can be fetched here.

It follows Vault's documented request and response shapes for the endpoints the deploy uses
(sys/init, sys/seal-status, sys/unseal, sys/mounts, kv-v2 data, sys/policy, sys/auth, approle
roles, token lookup/create/revoke, sys/audit) and the behaviours the deploy must handle: starts
uninitialized, initializes once, is sealed after init and after `restart()`, accepts only its own
unseal keys (Shamir is simulated: any `threshold` of its own keys unseal it), refuses requests
while sealed (503) and without a valid token (403). Tokens form Vault's hierarchy (a token is the
child of the token that created it, unless created as an orphan; revoking a token revokes its
children), options only root or sudo callers may use are refused to others, and a token without
the root policy is held to its policies' paths and capabilities. Each behaviour names the Vault
documentation it follows. It is not Vault: policies are read in their plain `path "..." {
capabilities = [...] }` form only, and nothing is persisted to disk.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Part of the policy every token gets unless created with no_default_policy: looking up, renewing
# and revoking itself ("default" policy,
# https://developer.hashicorp.com/vault/docs/concepts/policies#default-policy).
DEFAULT_POLICY = """# Allow tokens to look up their own properties
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
# Allow tokens to renew themselves
path "auth/token/renew-self" {
  capabilities = ["update"]
}
# Allow tokens to revoke themselves
path "auth/token/revoke-self" {
  capabilities = ["update"]
}
# Allow a token to look up its own capabilities on a path
path "sys/capabilities-self" {
  capabilities = ["update"]
}
"""

PERMISSION_DENIED = {"errors": ["1 error occurred:\n\t* permission denied\n\n"]}

# Paths that need the sudo capability besides their own ("root-protected"): sys/audit
# (https://developer.hashicorp.com/vault/api-docs/system/audit: "requires sudo capability").
SUDO_PATHS = ("sys/audit",)


def policy_paths(text: str) -> dict[str, set[str]]:
    """`path "..." { capabilities = [...] }` blocks of an HCL policy: {path: capabilities}."""
    paths: dict[str, set[str]] = {}
    for path, caps in re.findall(r'path\s+"([^"]+)"\s*\{\s*'
                                 r'capabilities\s*=\s*\[([^\]]*)\]\s*\}', text):
        paths.setdefault(path, set()).update(re.findall(r'"([a-z]+)"', caps))
    return paths


def _matches(pattern: str, path: str) -> bool:
    """A policy path: `*` at the end is a prefix match, `+` one path segment
    (https://developer.hashicorp.com/vault/docs/concepts/policies#policy-syntax)."""
    glob = pattern.endswith("*")
    parts, actual = pattern.rstrip("*").split("/"), path.split("/")
    if glob:
        if len(actual) < len(parts):
            return False
        head = actual[:len(parts) - 1] + ["/".join(actual[len(parts) - 1:])]
        return all(p == "+" or p == a for p, a in zip(parts[:-1], head[:-1])) and \
            head[-1].startswith(parts[-1])
    return len(parts) == len(actual) and all(p == "+" or p == a for p, a in zip(parts, actual))


def _priority(pattern: str) -> tuple:
    """When several paths match, the most specific wins: an exact path over a glob, then the
    later first wildcard, then fewer `+`, then the longer path
    (https://developer.hashicorp.com/vault/docs/concepts/policies#priority-matching)."""
    wildcards = [i for i, c in enumerate(pattern) if c in "+*"]
    return (not wildcards, wildcards[0] if wildcards else len(pattern), -pattern.count("+"),
            len(pattern))


class SimulatedVault:
    def __init__(self):
        self.initialized = False
        self.sealed = True
        self.keys: list[str] = []
        self.threshold = 0
        self.progress: list[str] = []
        self.root_token = ""
        self.tokens: dict[str, dict] = {}
        self.mounts = {"secret/": None, "sys/": {"type": "system"},
                       "cubbyhole/": {"type": "cubbyhole"}}
        self.mounts = {k: v for k, v in self.mounts.items() if v}
        self.kv: dict[str, dict[str, list[dict]]] = {}
        self.policies = {"default": DEFAULT_POLICY, "root": ""}
        self.auth = {"token/": {"type": "token"}}
        self.approle_roles: dict[str, dict] = {}
        self.audit: dict[str, dict] = {}
        self.writes: list[str] = []  # every state-changing request, "METHOD path"
        self.server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> str:
        vault = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _do(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                status, payload = vault.handle(self.command, self.path.split("?")[0], body,
                                               self.headers.get("X-Vault-Token", ""))
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _do

            def do_LIST(self):  # noqa: N802
                self._do()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        if self.server:
            self.server.shutdown()

    def restart(self):
        """A restarted server-mode Vault comes back sealed
        (https://developer.hashicorp.com/vault/docs/concepts/seal: "When a Vault server is started,
        it starts in a sealed state")."""
        self.sealed = True
        self.progress = []

    # ------------------------------------------------------------ API
    def handle(self, method: str, path: str, body: dict, token: str):
        if not path.startswith("/v1/"):
            return 404, {"errors": []}
        p = path[len("/v1/"):]
        # sys/init: GET the status; PUT once, answering keys, keys_base64 and root_token; a second
        # PUT is refused (https://developer.hashicorp.com/vault/api-docs/system/init)
        if p == "sys/init":
            if method == "GET":
                return 200, {"initialized": self.initialized}
            if self.initialized:
                return 400, {"errors": ["Vault is already initialized"]}
            n, t = int(body["secret_shares"]), int(body["secret_threshold"])
            self.keys = [os.urandom(32).hex() for _ in range(n)]
            self.threshold = t
            self.root_token = "hvs." + base64.urlsafe_b64encode(os.urandom(18)).decode()
            self.tokens[self.root_token] = {"policies": ["root"], "id": self.root_token,
                                            "parent": ""}
            self.initialized = True
            self.writes.append("PUT sys/init")
            return 200, {"keys": self.keys,
                         "keys_base64": [base64.b64encode(bytes.fromhex(k)).decode()
                                         for k in self.keys],
                         "root_token": self.root_token}
        # https://developer.hashicorp.com/vault/api-docs/system/seal-status
        if p == "sys/seal-status":
            return 200, self._seal_status()
        # 200 unsealed, 503 sealed, 501 not initialized
        # (https://developer.hashicorp.com/vault/api-docs/system/health)
        if p == "sys/health":
            code = 501 if not self.initialized else (503 if self.sealed else 200)
            return code, {"initialized": self.initialized, "sealed": self.sealed}
        # one key per request, progress until the threshold, reset=true discards it
        # (https://developer.hashicorp.com/vault/api-docs/system/unseal)
        if p == "sys/unseal":
            if body.get("reset"):
                self.progress = []
                return 200, self._seal_status()
            key = body.get("key", "")
            try:
                key_hex = base64.b64decode(key).hex() if len(key) != 64 else key
            except ValueError:
                key_hex = key
            self.progress.append(key_hex)
            if len(self.progress) >= self.threshold:
                given, self.progress = self.progress, []
                if all(k in self.keys for k in given) and len(set(given)) >= self.threshold:
                    self.sealed = False
                    self.writes.append("PUT sys/unseal")
                else:
                    return 400, {"errors": ["cipher: message authentication failed"]}
            return 200, self._seal_status()
        # unauthenticated; the file storage backend is not HA: ha_enabled false
        # (https://developer.hashicorp.com/vault/api-docs/system/leader)
        if p == "sys/leader" and method == "GET":
            return 200, {"ha_enabled": False, "is_self": False,
                         "active_time": "0001-01-01T00:00:00Z", "leader_address": "",
                         "leader_cluster_address": "", "performance_standby": False,
                         "performance_standby_last_remote_wal": 0}
        # a sealed Vault answers nothing else (503); every other request needs a valid token
        # (https://developer.hashicorp.com/vault/docs/concepts/seal, .../docs/concepts/tokens)
        if self.sealed:
            return 503, {"errors": ["Vault is sealed"]}
        if token not in self.tokens:
            return 403, PERMISSION_DENIED
        if p.startswith("sys/internal/ui/mounts/") and method == "GET":
            return self._ui_mount(p[len("sys/internal/ui/mounts/"):], token)
        if not self.allowed(token, self._capability(method, p), p):
            return 403, PERMISSION_DENIED
        return self._authorized(method, p, body, token)

    # ------------------------------------------------------------ policies
    def capabilities(self, token: str, path: str) -> set[str]:
        """What a token may do on a path: its policies merged, the most specific matching path
        applied; root may do everything (https://developer.hashicorp.com/vault/docs/concepts/
        policies: "root" policy, priority matching, "deny" takes precedence)."""
        policies = self.tokens[token]["policies"]
        if "root" in policies:
            return {"create", "read", "update", "patch", "delete", "list", "sudo"}
        merged: dict[str, set[str]] = {}
        for name in policies:
            for pattern, caps in policy_paths(self.policies.get(name, "")).items():
                merged.setdefault(pattern, set()).update(caps)
        matching = [pattern for pattern in merged if _matches(pattern, path)]
        if not matching:
            return set()
        caps = merged[max(matching, key=_priority)]
        return set() if "deny" in caps else caps

    def allowed(self, token: str, capability: str, path: str) -> bool:
        caps = self.capabilities(token, path)
        if any(path == s or path.startswith(s + "/") for s in SUDO_PATHS) and "sudo" not in caps:
            return False
        return capability in caps

    def _capability(self, method: str, p: str) -> str:
        """The capability a request needs: GET read, LIST list, DELETE delete, POST/PUT create on
        a path holding no data yet and update otherwise (Vault's existence check), per
        https://developer.hashicorp.com/vault/docs/concepts/policies#capabilities."""
        if method == "GET":
            return "read"
        if method == "LIST":
            return "list"
        if method == "DELETE":
            return "delete"
        for mount, info in self.mounts.items():
            if info.get("type") == "kv" and p.startswith(mount + "data/"):
                exists = self.kv.get(mount, {}).get(p[len(mount + "data/"):])
                return "update" if exists else "create"
        return "update"

    def is_sudo(self, token: str, path: str) -> bool:
        caps = self.capabilities(token, path)
        return "root" in self.tokens[token]["policies"] or "sudo" in caps

    def revoke(self, token: str) -> None:
        """Revoking a token revokes its children, all the way down; an orphan (no parent)
        survives. https://developer.hashicorp.com/vault/docs/concepts/tokens#token-hierarchies-and-orphan-tokens
        and https://developer.hashicorp.com/vault/api-docs/auth/token: revoke "revokes a token and
        all child tokens", revoke-self "the token used to call it and all child tokens"."""
        for child in [t for t, info in self.tokens.items() if info.get("parent") == token]:
            self.revoke(child)
        self.tokens.pop(token, None)

    def _ui_mount(self, path: str, token: str):
        """The CLI's `kv` preflight (GET sys/internal/ui/mounts/<path>): the mount holding the
        path, its type and options, to a token with some capability under that mount; a path in
        no mount, or a token with no access, is refused 403 alike (Vault's
        pathInternalUIMountRead, vault/logical_system.go: "so this path cannot be used to brute
        force a list of mounts")."""
        path = path.lstrip("/")
        path = path if path.endswith("/") else path + "/"
        refused = 403, {"errors": ["preflight capability check returned 403, please ensure "
                                   f"client's policies grant access to path \"{path}\"",
                                   "permission denied"]}
        mount = max((m for m in self.mounts if path.startswith(m)), key=len, default=None)
        if mount is None:
            return refused
        policies = self.tokens[token]["policies"]
        if "root" not in policies:
            patterns = [pattern for name in policies
                        for pattern, caps in policy_paths(self.policies.get(name, "")).items()
                        if caps - {"deny"}]
            if not any(pattern.startswith(mount) for pattern in patterns):
                return refused
        info = self.mounts[mount] or {"type": "kv", "options": None}
        return 200, {"data": {"path": mount, "type": info.get("type"),
                              "options": info.get("options") or None}}

    def _seal_status(self):
        return {"type": "shamir", "initialized": self.initialized, "sealed": self.sealed,
                "t": self.threshold, "n": len(self.keys), "progress": len(self.progress)}

    def _write(self, method, p):
        self.writes.append(f"{method} {p}")

    def _authorized(self, method, p, body, token):
        # https://developer.hashicorp.com/vault/api-docs/system/mounts
        if p == "sys/mounts" and method == "GET":
            return 200, {"data": dict(self.mounts), **self.mounts}
        if p.startswith("sys/mounts/") and method == "POST":
            path = p[len("sys/mounts/"):].strip("/") + "/"
            if path in self.mounts:
                return 400, {"errors": [f"path is already in use at {path}"]}
            self.mounts[path] = {"type": body["type"], "options": body.get("options") or {}}
            self._write(method, p)
            return 204, None
        # kv version 2: <mount>/data/<path>, each write a new version
        # (https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2)
        for mount, info in self.mounts.items():
            if info.get("type") == "kv" and p.startswith(mount + "data/"):
                name = p[len(mount + "data/"):]
                versions = self.kv.setdefault(mount, {}).setdefault(name, [])
                if method == "GET":
                    if not versions:
                        return 404, {"errors": []}
                    return 200, {"data": {"data": versions[-1],
                                          "metadata": {"version": len(versions),
                                                       "deletion_time": "",
                                                       "destroyed": False}}}
                if method in ("POST", "PUT"):
                    versions.append(body["data"])
                    self._write(method, p)
                    return 200, {"data": {"version": len(versions)}}
        # https://developer.hashicorp.com/vault/api-docs/system/policy
        if p.startswith("sys/policy/"):
            name = p[len("sys/policy/"):]
            if method == "GET":
                if name not in self.policies:
                    return 404, {"errors": []}
                return 200, {"name": name, "rules": self.policies[name],
                             "data": {"name": name, "rules": self.policies[name]}}
            if method == "PUT":
                self.policies[name] = body["policy"]
                self._write(method, p)
                return 204, None
        # https://developer.hashicorp.com/vault/api-docs/system/auth
        if p == "sys/auth" and method == "GET":
            return 200, {"data": dict(self.auth), **self.auth}
        if p.startswith("sys/auth/") and method == "POST":
            path = p[len("sys/auth/"):].strip("/") + "/"
            self.auth[path] = {"type": body["type"]}
            self._write(method, p)
            return 204, None
        # https://developer.hashicorp.com/vault/api-docs/auth/approle (TTLs read back in seconds)
        if p.startswith("auth/approle/role/"):
            if "approle/" not in self.auth:
                return 404, {"errors": ["no handler for route"]}
            name = p[len("auth/approle/role/"):]
            if method == "GET":
                if name not in self.approle_roles:
                    return 404, {"errors": []}
                return 200, {"data": self.approle_roles[name]}
            if method == "POST":
                role = {"token_policies": [], "token_ttl": 0, "token_max_ttl": 0}
                for key, value in body.items():
                    if key in ("token_ttl", "token_max_ttl") and isinstance(value, str):
                        value = int(value[:-1]) * {"s": 1, "m": 60, "h": 3600}[value[-1]]
                    if key == "token_policies" and isinstance(value, str):  # Vault accepts both
                        value = [v for v in value.split(",") if v]
                    role[key] = value
                self.approle_roles[name] = role
                self._write(method, p)
                return 204, None
        # https://developer.hashicorp.com/vault/api-docs/auth/token (lookup, lookup-self, create,
        # revoke, revoke-self)
        if p == "auth/token/lookup" and method == "POST":
            info = self.tokens.get(body.get("token", ""))
            if info is None:
                return 403, {"errors": ["bad token"]}
            return 200, {"data": self._lookup(info)}
        if p == "auth/token/lookup-self" and method == "GET":
            return 200, {"data": self._lookup(self.tokens[token])}
        if p == "auth/token/create" and method == "POST":
            return self._create_token(method, p, body, token)
        if p == "auth/token/revoke" and method == "POST":
            self.revoke(body.get("token", ""))
            self._write(method, p)
            return 204, None
        if p == "auth/token/revoke-self" and method == "POST":
            self.revoke(token)
            self._write(method, p)
            return 204, None
        # https://developer.hashicorp.com/vault/api-docs/system/audit
        if p == "sys/audit" and method == "GET":
            return 200, {"data": dict(self.audit), **self.audit}
        if p.startswith("sys/audit/") and method in ("PUT", "POST"):
            path = p[len("sys/audit/"):].strip("/") + "/"
            self.audit[path] = {"type": body["type"], "options": body.get("options") or {}}
            self._write(method, p)
            return 204, None
        return 404, {"errors": [f"no handler for route {p}"]}

    @staticmethod
    def _lookup(info: dict) -> dict:
        """Token lookup's data: among others its policies, and `orphan` true when the token has no
        parent (https://developer.hashicorp.com/vault/api-docs/auth/token#lookup-a-token)."""
        return {**{k: v for k, v in info.items() if k != "parent"},
                "orphan": not info.get("parent")}

    def _create_token(self, method, p, body, token):
        """POST auth/token/create (https://developer.hashicorp.com/vault/api-docs/auth/token#create-token,
        and Vault's token store, handleCreateCommon): the new token is a child of the caller unless
        no_parent; `id`, `no_parent` and `period` need a root or sudo caller ("root or sudo
        privileges required to specify token id" / "to create orphan token" / "to create periodic
        token"); without sudo, the policies must be a subset of the caller's."""
        sudo = self.is_sudo(token, p)
        for option, what in (("id", "specify token id"), ("no_parent", "create orphan token"),
                             ("period", "create periodic token")):
            if body.get(option) and not sudo:
                return 400, {"errors": [f"root or sudo privileges required to {what}"]}
        policies = [x for x in body.get("policies") or [] if x]
        if not sudo and not set(policies) <= set(self.tokens[token]["policies"]):
            return 400, {"errors": ["child policies must be subset of parent"]}
        new_id = body.get("id") or ("hvs." + base64.urlsafe_b64encode(os.urandom(18)).decode())
        if new_id in self.tokens:
            return 400, {"errors": ["cannot create a token with a duplicate ID"]}
        if not body.get("no_default_policy"):
            policies.append("default")
        self.tokens[new_id] = {"id": new_id, "policies": sorted(set(policies)),
                               "period": body.get("period"), "renewable": body.get("renewable"),
                               "parent": "" if body.get("no_parent") else token}
        self._write(method, p)
        return 200, {"auth": {"client_token": new_id, "policies": self.tokens[new_id]["policies"],
                              "orphan": not self.tokens[new_id]["parent"]}}
