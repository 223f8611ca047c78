"""
STAND-IN for HashiCorp's `vault` binary inside the Vault stand-in image (not Vault): the parts of
its command line the compose service and the deploy use.

- `vault server -config=DIR ...`: reads every *.hcl/*.json of DIR for `disable_mlock`, the
  `storage "file"` path, the first `listener "tcp"` (address, tls_disable, tls_cert_file,
  tls_key_file, telemetry.unauthenticated_metrics_access); locks its memory unless disable_mlock
  (Vault refuses to start when that fails); serves tests/simulated_vault.py's API, its state
  written under the storage path after every change (so an unwritable path fails the request,
  as Vault's file backend does: initialization fails), loaded at start, sealed after a restart.
- `vault status`: GET $VAULT_ADDR/v1/sys/seal-status; exit 0 unsealed, 2 sealed, 1 error
  (https://developer.hashicorp.com/vault/docs/commands/status).
- `vault version`, `vault -version`, `vault --help`.
"""

from __future__ import annotations

import copy
import ctypes
import glob
import json
import os
import re
import ssl
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "Vault v1.21.0 (STAND-IN: tests/standins/vault, not HashiCorp's binary)"
STATE_FILE = "standin-state.json"
PERSISTED = ("initialized", "keys", "threshold", "root_token", "tokens", "mounts", "kv",
             "policies", "auth", "approle_roles", "audit")
USAGE = """Usage: vault <command> [args]

Common commands (stand-in):
    server     vault server -config=<dir>: start a Vault server
    status     vault status: print seal and HA status
    version    vault version: print the Vault version
"""


def read_config(paths: list[str]) -> dict:
    text = ""
    for path in paths:
        if os.path.isdir(path):
            for name in sorted(glob.glob(os.path.join(path, "*.hcl"))
                               + glob.glob(os.path.join(path, "*.json"))):
                with open(name, encoding="utf-8") as f:
                    text += f.read() + "\n"
        else:
            with open(path, encoding="utf-8") as f:
                text += f.read() + "\n"
    text = re.sub(r"(?m)^\s*#.*$", "", text)
    storage = re.search(r'storage\s+"file"\s*\{[^}]*?path\s*=\s*"([^"]+)"', text, re.S)
    if not storage:
        raise SystemExit("Error: the Vault stand-in needs a storage \"file\" stanza with a path")
    listener = re.search(r'listener\s+"tcp"\s*\{(.*?)\n\}', text, re.S)
    body = listener.group(1) if listener else ""

    def value(name, default=None, where=body):
        m = re.search(rf'(?m)^\s*{name}\s*=\s*"?([^"\n]+?)"?\s*$', where)
        return m.group(1) if m else default

    return {
        "disable_mlock": (value("disable_mlock", "false", text) or "").lower() in ("true", "1"),
        "storage_path": storage.group(1),
        "address": value("address", "127.0.0.1:8200"),
        "tls_disable": (value("tls_disable", "false") or "").lower() in ("true", "1"),
        "tls_cert_file": value("tls_cert_file"),
        "tls_key_file": value("tls_key_file"),
        "unauthenticated_metrics": (value("unauthenticated_metrics_access", "false") or "").lower()
        in ("true", "1"),
    }


def lock_memory() -> None:
    """mlockall(MCL_CURRENT | MCL_FUTURE), as Vault's mlock.LockMemory; \
Vault's message on failure."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mlockall(3) != 0:
        err = os.strerror(ctypes.get_errno()).lower()
        sys.stderr.write(
            f"Error initializing core: Failed to lock memory: {err}\n\n"
            "This usually means that the mlock syscall is not available.\n"
            "Vault uses mlock to prevent memory from being swapped to\n"
            "disk. This requires root privileges as well as a machine\n"
            "that supports mlock. Please enable mlock on your system or\n"
            "disable Vault from using it. To disable Vault from using it,\n"
            "set the `disable_mlock` configuration option in your configuration\n"
            "file.\n")
        raise SystemExit(1)


class StoredVault:
    """The simulated API with its state in <storage path>/standin-state.json."""

    def __init__(self, config: dict):
        from simulated_vault import SimulatedVault
        self.config = config
        self.vault = SimulatedVault()
        self.path = os.path.join(config["storage_path"], STATE_FILE)
        self.lock = threading.Lock()
        if os.path.exists(self.path):  # PermissionError here ends the start, as Vault's would
            with open(self.path, encoding="utf-8") as f:
                for key, value in json.load(f).items():
                    setattr(self.vault, key, value)

    def _save(self) -> None:
        os.makedirs(self.config["storage_path"], exist_ok=True)
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({k: getattr(self.vault, k) for k in PERSISTED}, f)
        os.replace(tmp, self.path)

    def _audit(self, method: str, p: str, status: int) -> None:
        for device in self.vault.audit.values():
            path = (device.get("options") or {}).get("file_path")
            if device.get("type") == "file" and path:
                with open(path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"type": "response", "request": {"operation": method,
                                                                        "path": p},
                                        "status": status}) + "\n")

    def handle(self, method: str, path: str, body: dict, token: str):
        p = path[len("/v1/"):] if path.startswith("/v1/") else path
        with self.lock:
            # Enabling a file audit device opens its file: an unwritable path is refused
            # (https://developer.hashicorp.com/vault/docs/audit/file)
            if p.startswith("sys/audit/") and method in ("PUT", "POST") \
                    and body.get("type") == "file" \
                    and not self.vault.sealed and token in self.vault.tokens:
                target = (body.get("options") or {}).get("file_path", "")
                try:
                    open(target, "a").close()
                except OSError as exc:
                    return 400, {"errors": [f"sys/audit/{p[len('sys/audit/'):]}: failed to enable "
                                            f"audit device: {exc}"]}
            before = {k: copy.deepcopy(getattr(self.vault, k)) for k in PERSISTED}
            status, payload = self.vault.handle(method, path, body, token)
            if any(getattr(self.vault, k) != before[k] for k in PERSISTED):
                try:
                    self._save()
                except OSError as exc:
                    for key, value in before.items():
                        setattr(self.vault, key, value)
                    if p == "sys/init":
                        self.vault.sealed = True
                    return 500, {"errors": [f"failed to persist to storage: {exc}"]}
            try:
                self._audit(method, p, status)
            except OSError:
                pass
            return status, payload


def serve(args: list[str]) -> int:
    configs = [a.split("=", 1)[1] for a in args if a.startswith("-config=")]
    if "-dev" in args or not configs:
        sys.stderr.write("The Vault stand-in runs only `vault server -config=<dir>` "
                         "(no -dev mode)\n")
        return 1
    config = read_config(configs)
    if not config["disable_mlock"]:
        lock_memory()
    stored = StoredVault(config)
    host, port = config["address"].rsplit(":", 1)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _do(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            path = self.path.split("?")[0]
            token = self.headers.get("X-Vault-Token", "")
            if path == "/v1/sys/metrics":
                status, payload = self._metrics(token)
            else:
                status, payload = stored.handle(self.command, path, body, token)
            if isinstance(payload, str):
                data, ctype = payload.encode(), "text/plain; version=0.0.4"
            else:
                data, ctype = ((b"" if payload is None else json.dumps(payload).encode()),
                               "application/json")
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _metrics(self, token):
            """sys/metrics needs a token unless the listener's telemetry block sets
            unauthenticated_metrics_access (https://developer.hashicorp.com/vault/docs/
            configuration/listener/tcp#unauthenticated_metrics_access)."""
            v = stored.vault
            if not config["unauthenticated_metrics"] and (v.sealed or token not in v.tokens):
                return 403, {"errors": ["permission denied"]}
            return 200, (f"# stand-in metrics\nvault_core_unsealed {0 if v.sealed else 1}\n")

        do_GET = do_PUT = do_POST = do_DELETE = do_LIST = _do

    server = ThreadingHTTPServer((host, int(port)), Handler)
    if not config["tls_disable"]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(config["tls_cert_file"], config["tls_key_file"])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("==> Vault server configuration (STAND-IN):", flush=True)
    print(f"             Storage: file (path: {config['storage_path']})", flush=True)
    print(f"            Listener: tcp (addr: \"{config['address']}\", tls: "
          f"\"{'disabled' if config['tls_disable'] else 'enabled'}\")", flush=True)
    print(f"               Mlock: supported: true, enabled: "
          f"{str(not config['disable_mlock']).lower()}",
          flush=True)
    print("==> Vault server started! Log data will stream in below:", flush=True)
    server.serve_forever()
    return 0


def status() -> int:
    addr = os.environ.get("VAULT_ADDR", "https://127.0.0.1:8200").rstrip("/")
    ctx = None
    if addr.startswith("https"):
        ctx = ssl.create_default_context(cafile=os.environ.get("VAULT_CACERT") or None)
    try:
        with urllib.request.urlopen(f"{addr}/v1/sys/seal-status", timeout=5, context=ctx) as r:
            info = json.load(r)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        sys.stderr.write(f"Error checking seal status: Get \"{addr}/v1/sys/seal-status\": {exc}\n")
        return 1
    print("Key             Value\n---             -----")
    for key, label in (("type", "Seal Type"), ("initialized", "Initialized"), ("sealed", "Sealed"),
                       ("t", "Threshold"), ("n", "Total Shares"), ("progress", "Unseal Progress")):
        print(f"{label:<16}{str(info.get(key)).lower()}")
    print(f"Version         {VERSION}")
    return 2 if info.get("sealed") else 0


def main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "-help", "--help"):
        sys.stderr.write(USAGE)
        return 127 if not args else 0
    command = args[0]
    if command in ("version", "-version", "--version", "-v"):
        print(VERSION)
        return 0
    if command == "status":
        return status()
    if command == "server":
        return serve(args[1:])
    sys.stderr.write(f"The Vault stand-in has no command {command!r}\n{USAGE}")
    return 127
