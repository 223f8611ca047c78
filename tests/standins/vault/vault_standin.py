"""
STAND-IN for HashiCorp's `vault` binary inside the Vault stand-in image (not Vault): the parts of
its command line the compose service and the deploy use.

- `vault server -config=DIR ...`: reads every *.hcl/*.json of DIR for `disable_mlock`, the
  `storage "file"` path, the first `listener "tcp"` (address, tls_disable, tls_cert_file,
  tls_key_file, telemetry.unauthenticated_metrics_access); locks its memory unless disable_mlock
  (Vault refuses to start when that fails); serves tests/simulated_vault.py's API, its state
  written under the storage path after every change (so an unwritable path fails the request,
  as Vault's file backend does: initialization fails), loaded at start, sealed after a restart.
- the client commands the host suite and health-check.sh run, as Vault 1.21's CLI (command/*.go)
  does them: flags parsed as Go's flag package (-name=value, -name value, unknown flag exit 1),
  the client from -address/VAULT_ADDR (default https://127.0.0.1:8200), -ca-cert/VAULT_CACERT,
  -tls-skip-verify/VAULT_SKIP_VERIFY and VAULT_TOKEN; -format/VAULT_FORMAT table or json
  (json.MarshalIndent's layout), "Invalid output format" exit 1:
  - `vault status`: sys/seal-status and sys/leader; exit 0 unsealed, 2 sealed, 1 error
    (command/status.go, command/format.go OutputSealStatus);
  - `vault kv get [-field] [-mount] [-version] PATH`: the sys/internal/ui/mounts preflight, then
    the read of <mount>/data/<rest> for kv v2; exit 2 on an error or no value
    (command/kv_get.go, kv_helpers.go);
  - `vault operator unseal [-reset] [KEY]`: one key per call; without KEY, a terminal is
    required (piped input refused, exit 1), as password.Read does (command/operator_unseal.go).
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

VERSION_NUMBER = "1.21.0"
VERSION = "Vault v1.21.0 (STAND-IN: tests/standins/vault, not HashiCorp's binary)"
STATE_FILE = "standin-state.json"
PERSISTED = ("initialized", "keys", "threshold", "root_token", "tokens", "mounts", "kv",
             "policies", "auth", "approle_roles", "audit")
USAGE = """Usage: vault <command> [args]

Common commands (stand-in):
    server     vault server -config=<dir>: start a Vault server
    status     vault status [-format=json]: print seal and HA status
    kv get     vault kv get [-format=json] [-field=F] [-mount=M] PATH: read a kv secret
    operator unseal  vault operator unseal [-reset] [KEY]: give one unseal key
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
        # TCP_NODELAY on every connection, as Go's net package sets on each one it accepts
        # (src/net/tcpsock.go, newTCPConn: setNoDelay(fd, true)), so Vault's: an answer's body is
        # not held back (Nagle) until the client acknowledges its headers
        disable_nagle_algorithm = True

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


class CliError(Exception):
    """A command-line error: its message (to stderr) and the exit code Vault's CLI gives."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


# Each command's flags as Go's flag package parses them (command/base.go's FlagSets): HTTP
# options, output options, the command's own. The value a bool flag takes when given bare.
HTTP_FLAGS = {"address": str, "ca-cert": str, "tls-skip-verify": bool}
OUTPUT_FLAGS = {"format": str}
COMMAND_FLAGS = {
    "status": {**HTTP_FLAGS, **OUTPUT_FLAGS},
    "kv get": {**HTTP_FLAGS, **OUTPUT_FLAGS, "field": str, "version": int, "mount": str},
    "operator unseal": {**HTTP_FLAGS, **OUTPUT_FLAGS, "reset": bool},
}


def parse_flags(command: str, args: list[str]) -> tuple[dict, list[str]]:
    """Go's flag.Parse: -name=value, -name value, --name; a bare bool; the first non-flag
    argument (or `--`) ends the flags; an unknown flag is an error (exit 1)."""
    known, flags, i = COMMAND_FLAGS[command], {}, 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name, has_value, value = arg.lstrip("-").partition("=")
        kind = known.get(name)
        if kind is None:
            raise CliError(f"flag provided but not defined: -{name}", 1)
        if kind is bool:
            flags[name] = value.lower() in ("", "1", "t", "true") if has_value else True
        else:
            if not has_value:
                i += 1
                if i >= len(args):
                    raise CliError(f"flag needs an argument: -{name}", 1)
                value = args[i]
            if kind is int:
                try:
                    flags[name] = int(value)
                except ValueError:
                    raise CliError(f'invalid value "{value}" for flag -{name}: '
                                   "parse error", 1) from None
            else:
                flags[name] = value
        i += 1
    return flags, args[i:]


class Client:
    """api.Client as the CLI configures it: -address else VAULT_ADDR (default
    https://127.0.0.1:8200), -ca-cert else VAULT_CACERT, -tls-skip-verify else
    VAULT_SKIP_VERIFY, the token of VAULT_TOKEN (sent as X-Vault-Token), VAULT_CLIENT_TIMEOUT
    (seconds, default 60: api.DefaultConfig)."""

    def __init__(self, flags: dict):
        self.addr = (flags.get("address") or os.environ.get("VAULT_ADDR")
                     or "https://127.0.0.1:8200").rstrip("/")
        self.token = os.environ.get("VAULT_TOKEN", "")
        self.timeout = float(os.environ.get("VAULT_CLIENT_TIMEOUT", "").rstrip("s") or 60)
        skip = flags.get("tls-skip-verify",
                         os.environ.get("VAULT_SKIP_VERIFY", "").lower() in ("1", "t", "true"))
        self.ctx = None
        if self.addr.startswith("https"):
            cafile = flags.get("ca-cert") or os.environ.get("VAULT_CACERT") or None
            self.ctx = ssl.create_default_context(cafile=cafile)
            if skip:
                self.ctx.check_hostname = False
                self.ctx.verify_mode = ssl.CERT_NONE

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """(status, JSON answer); an unanswered request raises OSError."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.addr}/v1/{path}", data=data, method=method)
        if self.token:
            req.add_header("X-Vault-Token", self.token)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ctx) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, (json.loads(raw) if raw.strip() else {})
        except ValueError:
            return status, {"errors": [raw.decode(errors="replace")]}

    def api_error(self, method: str, path: str, status: int, answer: dict) -> str:
        """api.ResponseError's text."""
        errors = "".join(f"\n* {e}" for e in answer.get("errors") or [])
        return (f"Error making API request.\n\nURL: {method} {self.addr}/v1/{path}\n"
                f"Code: {status}. Errors:\n{errors}")


def output_format(flags: dict) -> str:
    fmt = flags.get("format") or os.environ.get("VAULT_FORMAT") or "table"
    if fmt not in ("table", "json", "yaml", "yml"):
        raise CliError(f"Invalid output format: {fmt}", 1)
    return fmt


def go_json(data) -> str:
    """json.MarshalIndent(data, "", "  ") as Go writes it (<, > and & escaped)."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def go_value(v) -> str:
    """A value as Go's %v prints it (true/false, <nil>)."""
    return str(v).lower() if isinstance(v, bool) else "<nil>" if v is None else str(v)


def columns(rows: list[tuple[str, str]]) -> str:
    """columnize's table: each column padded to its widest cell, two spaces between."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}    {v}".rstrip() for k, v in rows)


def seal_status_output(client: Client, status: dict, fmt: str) -> int:
    """command/format.go OutputSealStatus: the seal status with sys/leader's HA fields."""
    code, leader = client.request("GET", "sys/leader")
    if code != 200:
        raise CliError("Error checking leader status: "
                       + client.api_error("GET", "sys/leader", code, leader), 1)
    out = {"type": status.get("type", ""), "initialized": status.get("initialized", False),
           "sealed": status.get("sealed", False), "t": status.get("t", 0),
           "n": status.get("n", 0), "progress": status.get("progress", 0),
           "nonce": status.get("nonce", ""), "version": status.get("version", VERSION_NUMBER),
           "build_date": status.get("build_date", ""), "migration": False,
           "recovery_seal": False, "storage_type": status.get("storage_type", "file"),
           "ha_enabled": leader.get("ha_enabled", False),
           "active_time": leader.get("active_time", "0001-01-01T00:00:00Z")}
    if fmt != "table":
        print(go_json(out))
        return 0
    rows = [("Key", "Value"), ("---", "-----"), ("Seal Type", out["type"]),
            ("Initialized", str(out["initialized"]).lower()),
            ("Sealed", str(out["sealed"]).lower()), ("Total Shares", str(out["n"])),
            ("Threshold", str(out["t"]))]
    if out["sealed"]:
        rows += [("Unseal Progress", f"{out['progress']}/{out['t']}"),
                 ("Unseal Nonce", out["nonce"])]
    rows += [("Version", out["version"]), ("Build Date", out["build_date"]),
             ("Storage Type", out["storage_type"]),
             ("HA Enabled", str(out["ha_enabled"]).lower())]
    print(columns(rows))
    return 0


def status(args: list[str]) -> int:
    """command/status.go: 0 unsealed, 2 sealed, 1 error (2 is reserved for sealed here)."""
    flags, rest = parse_flags("status", args)
    if rest:
        raise CliError(f"Too many arguments (expected 0, got {len(rest)})", 1)
    fmt = output_format(flags)
    client = Client(flags)
    try:
        code, info = client.request("GET", "sys/seal-status")
    except OSError as exc:
        raise CliError(f"Error checking seal status: Get \"{client.addr}/v1/sys/seal-status\": "
                       f"{exc}", 1) from None
    if code != 200:
        raise CliError("Error checking seal status: "
                       + client.api_error("GET", "sys/seal-status", code, info), 1)
    result = seal_status_output(client, info, fmt)
    return 2 if info.get("sealed") else result


def kv_get(args: list[str]) -> int:
    """command/kv_get.go: the preflight (sys/internal/ui/mounts/<path>: the mount and its kv
    version; 404 means version 1), then a read of <mount>/data/<rest> (v2) or of the path (v1).
    Exit 2 when the read fails or finds nothing; -format=json prints the whole api.Secret."""
    flags, rest = parse_flags("kv get", args)
    if len(rest) != 1:
        raise CliError(f"{'Not enough' if not rest else 'Too many'} arguments "
                       f"(expected 1, got {len(rest)})", 1)
    fmt = output_format(flags)
    client = Client(flags)
    partial = rest[0].lstrip("/")
    if flags.get("mount"):
        preflight = flags["mount"].strip("/")
    else:
        preflight = partial
    try:
        code, mount_info = client.request("GET", f"sys/internal/ui/mounts/{preflight}")
        if code == 404:
            mount, v2 = "", False
        elif code != 200:
            raise CliError(client.api_error("GET", f"sys/internal/ui/mounts/{preflight}", code,
                                            mount_info), 2)
        else:
            data = mount_info.get("data") or {}
            mount = data.get("path", "")
            v2 = str((data.get("options") or {}).get("version", "1")) == "2"
        if flags.get("mount"):
            partial = f"{mount.rstrip('/')}/{partial}" if v2 else \
                f"{flags['mount'].strip('/')}/{partial}"
        if v2:
            full = mount.rstrip("/") + "/data/" + partial[len(mount):].lstrip("/") \
                if partial.startswith(mount) else f"{mount.rstrip('/')}/data/{partial}"
        else:
            full = partial
        if flags.get("version") and v2:
            full_query = f"{full}?version={flags['version']}"
        else:
            full_query = full
        code, secret = client.request("GET", full_query)
    except OSError as exc:
        raise CliError(f"Error reading {preflight}: {exc}", 2) from None
    if code == 404 and not (secret.get("data") or secret.get("warnings")):
        raise CliError(f"No value found at {full}", 2)
    if code >= 400:
        raise CliError(f"Error reading {full}: " + client.api_error("GET", full, code, secret), 2)
    out = {"request_id": secret.get("request_id", ""), "lease_id": secret.get("lease_id", ""),
           "lease_duration": secret.get("lease_duration", 0),
           "renewable": secret.get("renewable", False), "data": secret.get("data"),
           "warnings": secret.get("warnings")}
    if secret.get("mount_type"):
        out["mount_type"] = secret["mount_type"]
    if flags.get("field"):
        values = (secret.get("data") or {}).get("data") if v2 else secret.get("data")
        if not isinstance(values, dict) or flags["field"] not in values:
            raise CliError(f'Field "{flags["field"]}" not present in secret', 1)
        print(values[flags["field"]])
        return 0
    if fmt != "table":
        print(go_json(out))
        return 0
    # the table's section headers are the stand-in's (upstream centres them: getHeaderForMap)
    print("== Secret Path ==")
    print(full + "\n")
    data = secret.get("data") or {}
    if v2:
        metadata = data.get("metadata") or {}
        print("======= Metadata =======")
        print(columns([("Key", "Value"), ("---", "-----")]
                      + [(k, go_value(metadata[k])) for k in sorted(metadata)]) + "\n")
        data = data.get("data") or {}
    print("====== Data ======")
    print(columns([("Key", "Value"), ("---", "-----")]
                  + [(k, go_value(data[k])) for k in sorted(data)]))
    return 0


def operator_unseal(args: list[str]) -> int:
    """command/operator_unseal.go: the key as the one argument; with none, Vault reads it from
    the terminal and refuses a pipe (exit 1); -reset discards the progress; the seal status is
    printed after (exit 0), an error exits 2."""
    flags, rest = parse_flags("operator unseal", args)
    if len(rest) > 1:
        raise CliError(f"Too many arguments (expected 1, got {len(rest)})", 1)
    fmt = output_format(flags)
    client = Client(flags)
    if flags.get("reset"):
        body = {"reset": True}
    else:
        if not rest:
            sys.stdout.write("Unseal Key (will be hidden): \n")
            if not os.isatty(0):
                raise CliError(
                    "An error occurred attempting to ask for an unseal key. The raw error "
                    "message is shown below, but usually this is because you attempted to pipe "
                    "a value into the unseal command or you are executing outside of a terminal "
                    "(tty). You should run the unseal command from a terminal for maximum "
                    "security. If this is not an option, the unseal key can be provided as the "
                    "first argument to the unseal command. The raw error was:\n\n"
                    "file descriptor 0 is not a terminal", 1)
            import getpass
            rest = [getpass.getpass("")]
        body = {"key": rest[0].strip()}
    try:
        code, info = client.request("PUT", "sys/unseal", body)
    except OSError as exc:
        raise CliError(f"Error unsealing: {exc}", 2) from None
    if code != 200:
        raise CliError("Error unsealing: " + client.api_error("PUT", "sys/unseal", code, info), 2)
    return seal_status_output(client, info, fmt)


def main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "-help", "--help"):
        sys.stderr.write(USAGE)
        return 127 if not args else 0
    command = args[0]
    if command in ("version", "-version", "--version", "-v"):
        print(VERSION)
        return 0
    if command == "server":
        return serve(args[1:])
    commands = {"status": (status, 1), "kv get": (kv_get, 2),
                "operator unseal": (operator_unseal, 2)}
    name = next((c for c in commands if args[:len(c.split())] == c.split()), None)
    if name is None:
        sys.stderr.write(f"The Vault stand-in has no command {' '.join(args[:2])!r}\n{USAGE}")
        return 127
    run, _ = commands[name]
    try:
        return run(args[len(name.split()):])
    except CliError as exc:
        sys.stderr.write(f"{exc}\n")
        return exc.code
