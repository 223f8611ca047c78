"""
A SIMULATED Vault HTTP API, for tests only: no Vault binary or image can be fetched here.

It follows Vault's documented request and response shapes for the endpoints the deploy uses
(sys/init, sys/seal-status, sys/unseal, sys/mounts, kv-v2 data, sys/policy, sys/auth, approle
roles, token lookup/create/revoke, sys/audit) and the behaviours the deploy must handle: starts
uninitialized, initializes once, is sealed after init and after `restart()`, accepts only its own
unseal keys (Shamir is simulated: any `threshold` of its own keys unseal it), refuses requests
while sealed (503) and without a valid token (403). It is not Vault: it checks no policy and
persists nothing to disk.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class SimulatedVault:
    def __init__(self):
        self.initialized = False
        self.sealed = True
        self.keys: list[str] = []
        self.threshold = 0
        self.progress: list[str] = []
        self.root_token = ""
        self.tokens: dict[str, dict] = {}
        self.mounts = {"secret/": None, "sys/": {"type": "system"}, "cubbyhole/": {"type": "cubbyhole"}}
        self.mounts = {k: v for k, v in self.mounts.items() if v}
        self.kv: dict[str, dict[str, list[dict]]] = {}
        self.policies = {"default": "# default policy", "root": ""}
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
        """A restarted server-mode Vault comes back sealed."""
        self.sealed = True
        self.progress = []

    # ------------------------------------------------------------ API
    def handle(self, method: str, path: str, body: dict, token: str):
        if not path.startswith("/v1/"):
            return 404, {"errors": []}
        p = path[len("/v1/"):]
        if p == "sys/init":
            if method == "GET":
                return 200, {"initialized": self.initialized}
            if self.initialized:
                return 400, {"errors": ["Vault is already initialized"]}
            n, t = int(body["secret_shares"]), int(body["secret_threshold"])
            self.keys = [os.urandom(32).hex() for _ in range(n)]
            self.threshold = t
            self.root_token = "hvs." + base64.urlsafe_b64encode(os.urandom(18)).decode()
            self.tokens[self.root_token] = {"policies": ["root"], "id": self.root_token}
            self.initialized = True
            self.writes.append("PUT sys/init")
            return 200, {"keys": self.keys,
                         "keys_base64": [base64.b64encode(bytes.fromhex(k)).decode() for k in self.keys],
                         "root_token": self.root_token}
        if p == "sys/seal-status":
            return 200, self._seal_status()
        if p == "sys/health":
            code = 501 if not self.initialized else (503 if self.sealed else 200)
            return code, {"initialized": self.initialized, "sealed": self.sealed}
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
        if self.sealed:
            return 503, {"errors": ["Vault is sealed"]}
        if token not in self.tokens:
            return 403, {"errors": ["permission denied"]}
        return self._authorized(method, p, body, token)

    def _seal_status(self):
        return {"type": "shamir", "initialized": self.initialized, "sealed": self.sealed,
                "t": self.threshold, "n": len(self.keys), "progress": len(self.progress)}

    def _write(self, method, p):
        self.writes.append(f"{method} {p}")

    def _authorized(self, method, p, body, token):
        if p == "sys/mounts" and method == "GET":
            return 200, {"data": dict(self.mounts), **self.mounts}
        if p.startswith("sys/mounts/") and method == "POST":
            path = p[len("sys/mounts/"):].strip("/") + "/"
            if path in self.mounts:
                return 400, {"errors": [f"path is already in use at {path}"]}
            self.mounts[path] = {"type": body["type"], "options": body.get("options") or {}}
            self._write(method, p)
            return 204, None
        for mount, info in self.mounts.items():
            if info.get("type") == "kv" and p.startswith(mount + "data/"):
                name = p[len(mount + "data/"):]
                versions = self.kv.setdefault(mount, {}).setdefault(name, [])
                if method == "GET":
                    if not versions:
                        return 404, {"errors": []}
                    return 200, {"data": {"data": versions[-1],
                                          "metadata": {"version": len(versions), "deletion_time": "",
                                                       "destroyed": False}}}
                if method in ("POST", "PUT"):
                    versions.append(body["data"])
                    self._write(method, p)
                    return 200, {"data": {"version": len(versions)}}
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
        if p == "sys/auth" and method == "GET":
            return 200, {"data": dict(self.auth), **self.auth}
        if p.startswith("sys/auth/") and method == "POST":
            path = p[len("sys/auth/"):].strip("/") + "/"
            self.auth[path] = {"type": body["type"]}
            self._write(method, p)
            return 204, None
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
        if p == "auth/token/lookup" and method == "POST":
            info = self.tokens.get(body.get("token", ""))
            if info is None:
                return 403, {"errors": ["bad token"]}
            return 200, {"data": info}
        if p == "auth/token/create" and method == "POST":
            new_id = body.get("id") or ("hvs." + base64.urlsafe_b64encode(os.urandom(18)).decode())
            if new_id in self.tokens:
                return 400, {"errors": ["cannot create a token with a duplicate ID"]}
            self.tokens[new_id] = {"id": new_id, "policies": sorted(set(body.get("policies", []) + ["default"])),
                                   "period": body.get("period"), "renewable": body.get("renewable")}
            self._write(method, p)
            return 200, {"auth": {"client_token": new_id, "policies": self.tokens[new_id]["policies"]}}
        if p == "auth/token/revoke" and method == "POST":
            self.tokens.pop(body.get("token", ""), None)
            self._write(method, p)
            return 204, None
        if p == "auth/token/revoke-self" and method == "POST":
            self.tokens.pop(token, None)
            self._write(method, p)
            return 204, None
        if p == "sys/audit" and method == "GET":
            return 200, {"data": dict(self.audit), **self.audit}
        if p.startswith("sys/audit/") and method in ("PUT", "POST"):
            path = p[len("sys/audit/"):].strip("/") + "/"
            self.audit[path] = {"type": body["type"], "options": body.get("options") or {}}
            self._write(method, p)
            return 204, None
        return 404, {"errors": [f"no handler for route {p}"]}
