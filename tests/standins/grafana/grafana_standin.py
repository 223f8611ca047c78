"""
STAND-IN for Grafana 13.0.0's `grafana` binary inside the Grafana stand-in image (NOT Grafana):
`grafana server` as the image's /run.sh starts it, and what the stack and the checklist use.

- Configuration as Grafana reads it: `<homepath>/conf/defaults.ini`, then `--config` (a missing
  file ends the start), then `GF_<SECTION>_<KEY>` environment variables, then the
  `cfg:default.<section>.<key>` arguments of /run.sh. Keys read: server.http_addr, http_port,
  root_url; security.admin_user, admin_password; auth.anonymous.enabled, org_role;
  paths.data, paths.provisioning; metrics.enabled; users.allow_sign_up. Unknown keys are ignored,
  as Grafana's ini reader does; an invalid port ends the start as net.Listen would.
- State in `<paths.data>/grafana.db` (SQLite, as Grafana's default database): the admin is created
  once, at the first start, from security.admin_user/admin_password (a later change of
  GF_SECURITY_ADMIN_PASSWORD does not change it, as in Grafana); the password stored as Grafana
  does (PBKDF2-SHA256, 10000 rounds, 50 bytes, with a salt).
- Provisioning from `<paths.provisioning>/datasources` and `/dashboards` (*.yaml, *.yml): a file
  that is not valid YAML, a datasource without a name or type, or two default datasources in one
  organisation end the start (Grafana: "Datasource provisioning error"); a provider of a type
  other than `file` or without `options.path` too. Dashboards: every *.json under a provider's
  path (a file that is not JSON is logged and skipped, as Grafana does).
- HTTP on server.http_port: /api/health, /login, /metrics, and with the admin's basic auth (or
  anonymous access where enabled): /api/datasources, /api/datasources/uid/<uid>,
  /api/datasources/uid/<uid>/health (asks the datasource's URL over the network, as Grafana's
  Prometheus and Loki health checks do: the instant queries `1+1` and `vector(1)+vector(1)`, the
  answer must be 2), /api/search, /api/dashboards/uid/<uid>, /api/user (the signed-in user).
- `grafana cli [--homepath H] [--config C] [--configOverrides O] admin reset-admin-password
  [--password-from-stdin] [--user-id N] [<new password>]` as Grafana 13's
  pkg/cmd/grafana-cli/commands (cli.go, commands.go, reset_password_command.go): the same
  configuration as the server (so GF_PATHS_DATA's grafana.db), the password from the first line of
  stdin or the first argument, refused when shorter than 4 characters ("new password is too
  short"), the user (default id 1) must be an admin, the hash made with the user's own salt;
  "Admin password changed successfully" on success, else the error and exit 1.
"""

from __future__ import annotations

import base64
import configparser
import glob
import hashlib
import json
import os
import re
import secrets
import sqlite3
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "13.0.0"
BANNER = f"grafana version {VERSION} (STAND-IN: tests/standins/grafana, not Grafana's binary)"


class StartError(Exception):
    pass


def log(level: str, msg: str, **kv) -> None:
    extra = " ".join(f"{k}={json.dumps(str(v))}" for k, v in kv.items())
    print(f"logger=standin t={time.strftime('%Y-%m-%dT%H:%M:%S')} level={level} "
          f"msg={json.dumps(msg)} {extra}".rstrip(), flush=True)


def read_settings(homepath: str, config: str, overrides: list[str]) -> dict:
    parser = configparser.ConfigParser(interpolation=None, strict=False,
                                       comment_prefixes=(";", "#"), inline_comment_prefixes=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    defaults = os.path.join(homepath, "conf", "defaults.ini")
    if not os.path.exists(defaults):
        raise StartError(f"could not find config defaults, make sure homepath command line "
                         f"parameter is set or working directory is homepath ({defaults})")
    parser.read(defaults, encoding="utf-8")
    settings: dict[str, dict[str, str]] = {s: dict(parser[s]) for s in parser.sections()}
    # cfg:default.* are defaults: applied under the config file (Grafana's applyCommandLineDefaults)
    for item in overrides:
        m = re.fullmatch(r"cfg:default\.([^.]+)\.([^=]+)=(.*)", item)
        if m:
            settings.setdefault(m.group(1), {})[m.group(2)] = m.group(3)
    if config:
        try:
            with open(config, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise StartError(f"failed to parse \"{config}\": {exc}") from None
        custom = configparser.ConfigParser(interpolation=None, strict=False,
                                           comment_prefixes=(";", "#"))
        custom.optionxform = str  # type: ignore[assignment, method-assign]
        try:
            custom.read_string("[__root__]\n" + text)
        except configparser.Error as exc:
            raise StartError(f"failed to parse \"{config}\": {exc}") from None
        for section in custom.sections():
            settings.setdefault(section, {}).update(dict(custom[section]))
    for section, keys in settings.items():  # GF_<SECTION>_<KEY> wins over the files
        for key in list(keys):
            env = "GF_" + re.sub(r"[.\-]", "_", f"{section}_{key}").upper()
            if env in os.environ:
                keys[key] = os.environ[env]
    for item in overrides:  # cfg:<section>.<key> (not default.) wins over everything
        m = re.fullmatch(r"cfg:(?!default\.)([^.]+)\.([^=]+)=(.*)", item)
        if m:
            settings.setdefault(m.group(1), {})[m.group(2)] = m.group(3)
    return settings


def must_bool(value: str | None, default: bool) -> bool:
    """go-ini's MustBool: an unparsable value is the default."""
    v = (value or "").strip().lower()
    if v in ("1", "t", "true", "yes", "y", "on"):
        return True
    if v in ("0", "f", "false", "no", "n", "off"):
        return False
    return default


def hash_password(password: str, salt: str) -> str:
    """Grafana's util.EncodePassword: PBKDF2-SHA256, 10000 rounds, 50 bytes, hex."""
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 10000, 50).hex()


class Database:
    def __init__(self, path: str):
        self.path = path
        con = self.connect()
        con.execute("CREATE TABLE IF NOT EXISTS user (id INTEGER PRIMARY KEY, login TEXT UNIQUE, "
                    "password TEXT, salt TEXT, is_admin INTEGER)")
        con.commit()
        con.close()

    def connect(self):
        return sqlite3.connect(self.path, timeout=10)

    def ensure_admin(self, login: str, password: str) -> bool:
        con = self.connect()
        try:
            if con.execute("SELECT count(*) FROM user").fetchone()[0]:
                return False
            salt = secrets.token_hex(5)
            con.execute("INSERT INTO user (login, password, salt, is_admin) VALUES (?,?,?,1)",
                        (login, hash_password(password, salt), salt))
            con.commit()
            return True
        finally:
            con.close()

    def reset_password(self, user_id: int, password: str) -> None:
        """reset_password_command.go's resetPassword: the user by id, an admin, the new hash with
        its own salt."""
        con = self.connect()
        try:
            row = con.execute("SELECT salt, is_admin FROM user WHERE id=?", (user_id,)).fetchone()
            if row is None:
                raise StartError("could not read user from database. Error: user not found")
            if not row[1]:
                raise StartError("reset-admin-password can only be used to reset an admin user "
                                 "account")
            con.execute("UPDATE user SET password=? WHERE id=?",
                        (hash_password(password, row[0]), user_id))
            con.commit()
        finally:
            con.close()

    def user(self, login: str) -> dict:
        con = self.connect()
        try:
            row = con.execute("SELECT id, login, is_admin FROM user WHERE login=?",
                              (login,)).fetchone()
        finally:
            con.close()
        return {"id": row[0], "login": row[1], "isGrafanaAdmin": bool(row[2])} if row else {}

    def authenticate(self, login: str, password: str) -> bool:
        con = self.connect()
        try:
            row = con.execute("SELECT password, salt FROM user WHERE login=?",
                              (login,)).fetchone()
        finally:
            con.close()
        return bool(row) and secrets.compare_digest(row[0], hash_password(password, row[1]))


def load_yaml_dir(directory: str, what: str) -> list[tuple[str, dict]]:
    import yaml
    out = []
    for path in sorted(glob.glob(os.path.join(directory, "*.yaml"))
                       + glob.glob(os.path.join(directory, "*.yml"))):
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as exc:
            raise StartError(f"{what}: could not parse provisioning config file: {path} error: "
                             f"{exc}") from None
        if data is None:
            continue
        if not isinstance(data, dict):
            raise StartError(f"{what}: could not parse provisioning config file: {path} error: "
                             "yaml: cannot unmarshal into a provisioning config")
        out.append((path, data))
    return out


def provision_datasources(directory: str) -> list[dict]:
    sources: list[dict] = []
    for path, data in load_yaml_dir(directory, "Datasource provisioning error"):
        defaults: dict[int, str] = {}
        for i, ds in enumerate(data.get("datasources") or []):
            if not isinstance(ds, dict) or not ds.get("name"):
                raise StartError(f"Datasource provisioning error: {path}: datasource [{i}] has "
                                 "no name")
            if not ds.get("type"):
                raise StartError(f"Datasource provisioning error: {path}: datasource "
                                 f"{ds['name']!r} has no type")
            org = int(ds.get("orgId", 1))
            if ds.get("isDefault"):
                if org in defaults:
                    raise StartError("Datasource provisioning error: datasource.yaml config is "
                                     "invalid. Only one datasource per organization can be "
                                     "marked as default")
                defaults[org] = ds["name"]
            uid = ds.get("uid") or hashlib.sha1(ds["name"].encode()).hexdigest()[:14]
            sources.append({"id": len(sources) + 1, "uid": uid, "orgId": org,
                            "name": ds["name"], "type": ds["type"],
                            "access": ds.get("access", "proxy"), "url": ds.get("url", ""),
                            "isDefault": bool(ds.get("isDefault")),
                            "readOnly": not ds.get("editable", False),
                            "jsonData": ds.get("jsonData") or {}})
    return sources


def provision_dashboards(directory: str) -> list[dict]:
    dashboards: list[dict] = []
    for path, data in load_yaml_dir(directory, "Dashboard provisioning error"):
        for provider in data.get("providers") or []:
            if provider.get("type", "file") != "file":
                raise StartError(f"Dashboard provisioning error: {path}: provider "
                                 f"{provider.get('name')!r}: type {provider.get('type')!r} is "
                                 "not supported")
            folder_path = (provider.get("options") or {}).get("path")
            if not folder_path:
                raise StartError(f"Dashboard provisioning error: {path}: provider "
                                 f"{provider.get('name')!r}: options.path is required")
            if not os.path.isdir(folder_path):
                log("error", "Cannot read directory", path=folder_path)
                continue
            for file in sorted(glob.glob(os.path.join(folder_path, "**", "*.json"),
                                         recursive=True)):
                try:
                    with open(file, encoding="utf-8") as f:
                        dash = json.load(f)
                    if not isinstance(dash, dict):
                        raise ValueError("not a JSON object")
                except (OSError, ValueError) as exc:
                    log("error", "failed to load dashboard from ", file=file, error=exc)
                    continue
                uid = dash.get("uid") or hashlib.sha1(file.encode()).hexdigest()[:14]
                dashboards.append({"uid": uid, "title": dash.get("title", ""),
                                   "tags": dash.get("tags", []), "dashboard": dash,
                                   "folder": provider.get("folder", ""),
                                   "orgId": int(provider.get("orgId", 1)), "file": file})
    return dashboards


def check_datasource(ds: dict) -> tuple[bool, str]:
    """Grafana's health check of a Prometheus or Loki datasource: an instant query whose answer
    must be 2, sent to the datasource's URL."""
    base = ds["url"].rstrip("/")
    if ds["type"] == "prometheus":
        url, what = f"{base}/api/v1/query?query=1%2B1&time=4", "Prometheus"
    elif ds["type"] == "loki":
        url = f"{base}/loki/api/v1/query?query=vector%281%29%2Bvector%281%29&time=4000000000"
        what = "Loki"
    else:
        return False, (f"STAND-IN: no health check for datasource type {ds['type']!r} "
                       "(tests/standins/grafana implements prometheus and loki)")
    failed = f"There was an error returned querying the {what} API."
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return False, f"{failed}: {exc.code} {exc.read()[:200]!r}"
    except (OSError, ValueError) as exc:
        return False, f"{failed}: Post \"{url}\": {exc}"
    try:  # a scalar (Prometheus' 1+1), a vector (Loki's), or a matrix: its one value
        data = body["data"]
        if data["resultType"] == "scalar":
            value = float(data["result"][1])
        else:
            result = data["result"][0]
            value = float((result.get("value") or result["values"][-1])[1])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return False, f"{failed}: invalid response"
    if value != 2:
        return False, f"{failed}: invalid response"
    return True, f"Successfully queried the {what} API."


def serve(args: list[str]) -> int:
    homepath = next((a.split("=", 1)[1] for a in args if a.startswith("--homepath=")),
                    "/usr/share/grafana")
    config = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), "")
    try:
        settings = read_settings(homepath, config, [a for a in args if a.startswith("cfg:")])
        server = settings.get("server", {})
        paths = settings.get("paths", {})
        security = settings.get("security", {})
        data = paths.get("data", "data")
        os.makedirs(data, exist_ok=True)
        db = Database(os.path.join(data, "grafana.db"))
        if db.ensure_admin(security.get("admin_user", "admin"),
                           security.get("admin_password", "admin")):
            log("info", "Created default admin", user=security.get("admin_user", "admin"))
        provisioning = paths.get("provisioning", "conf/provisioning")
        datasources = provision_datasources(os.path.join(provisioning, "datasources"))
        dashboards = provision_dashboards(os.path.join(provisioning, "dashboards"))
        port = server.get("http_port", "3000")
        if not re.fullmatch(r"\d+", port) or not 0 < int(port) < 65536:
            raise StartError(f"failed to open listener on address "
                             f"{server.get('http_addr') or '0.0.0.0'}:{port}: listen tcp: "
                             f"address tcp/{port}: unknown port")
    except (StartError, OSError, sqlite3.Error) as exc:
        log("error", "Server shutdown", error=exc)
        sys.stderr.write(f"Error: ✗ {exc}\n")
        return 1
    anonymous = must_bool(settings.get("auth.anonymous", {}).get("enabled"), False)
    metrics = must_bool(settings.get("metrics", {}).get("enabled"), True)
    started = time.time()
    requests = {"n": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def reply(self, code: int, body, ctype="application/json", headers=()):
            data = json.dumps(body).encode() if not isinstance(body, (bytes, str)) else (
                body.encode() if isinstance(body, str) else body)
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def authorized(self) -> bool:
            header = self.headers.get("Authorization", "")
            self.login = ""
            if header.startswith("Basic "):
                try:
                    login, _, password = base64.b64decode(header[6:]).decode().partition(":")
                except ValueError:
                    login, password = "", ""
                if login and db.authenticate(login, password):
                    self.login = login
                    return True
                self.reply(401, {"message": "Invalid username or password"})
                return False
            if anonymous:
                return True
            self.reply(401, {"message": "Unauthorized"})
            return False

        def do_GET(self):
            requests["n"] += 1
            url = urllib.parse.urlsplit(self.path)
            path = url.path.rstrip("/") or "/"
            if path == "/api/health":
                return self.reply(200, {"database": "ok", "version": VERSION,
                                        "commit": "STAND-IN"})
            if path == "/login":
                return self.reply(200, "<!DOCTYPE html><html><head><title>Grafana "
                                  "(STAND-IN)</title></head><body>Grafana login "
                                  "(STAND-IN)</body></html>", "text/html; charset=UTF-8")
            if path == "/":
                return self.reply(302, b"", "text/html", [("Location", "/login")])
            if path == "/metrics" and metrics:
                return self.reply(200, (
                    "# TYPE grafana_build_info gauge\n"
                    f'grafana_build_info{{version="{VERSION}",revision="STAND-IN"}} 1\n'
                    "# TYPE grafana_http_request_total counter\n"
                    f"grafana_http_request_total {requests['n']}\n"
                    f"process_start_time_seconds {started}\n"), "text/plain; version=0.0.4")
            if not path.startswith("/api/"):
                return self.reply(404, {"message": "Not found"})
            if not self.authorized():
                return
            if path == "/api/user":
                if not self.login:  # anonymous: no signed-in user
                    return self.reply(401, {"message": "Unauthorized"})
                return self.reply(200, db.user(self.login))
            if path == "/api/datasources":
                return self.reply(200, datasources)
            m = re.fullmatch(r"/api/datasources/uid/([^/]+)(/health)?", path)
            if m:
                ds = next((d for d in datasources if d["uid"] == m.group(1)), None)
                if ds is None:
                    return self.reply(404, {"message": "Data source not found"})
                if not m.group(2):
                    return self.reply(200, ds)
                ok, message = check_datasource(ds)
                return self.reply(200 if ok else 400,
                                  {"status": "OK" if ok else "ERROR", "message": message})
            if path == "/api/search":
                query = dict(urllib.parse.parse_qsl(url.query)).get("query", "").lower()
                return self.reply(200, [
                    {"uid": d["uid"], "title": d["title"], "type": "dash-db", "tags": d["tags"],
                     "url": f"/d/{d['uid']}", "folderTitle": d["folder"]}
                    for d in dashboards if query in d["title"].lower()])
            m = re.fullmatch(r"/api/dashboards/uid/([^/]+)", path)
            if m:
                dash = next((d for d in dashboards if d["uid"] == m.group(1)), None)
                if dash is None:
                    return self.reply(404, {"message": "Dashboard not found"})
                return self.reply(200, {"dashboard": dash["dashboard"], "meta": {
                    "provisioned": True, "provisionedExternalId": os.path.basename(dash["file"]),
                    "folderTitle": dash["folder"]}})
            return self.reply(404, {"message": "Not found"})

        do_HEAD = do_GET  # wget --spider (the compose healthcheck) sends HEAD

    address = server.get("http_addr") or "0.0.0.0"
    httpd = ThreadingHTTPServer((address, int(port)), Handler)
    log("info", "HTTP Server Listen", address=f"[::]:{port}", protocol="http",
        version=BANNER)
    log("info", "provisioned", datasources=len(datasources), dashboards=len(dashboards))
    httpd.serve_forever()
    return 0


def _flags(args: list[str], names: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """urfave/cli's flags before the arguments: --name value, --name=value, or a bool --name."""
    flags: dict[str, str] = {}
    rest = list(args)
    while rest and rest[0].startswith("-"):
        name, eq, value = rest.pop(0).lstrip("-").partition("=")
        if name not in names:
            raise StartError(f"flag provided but not defined: -{name}")
        if not eq and name not in ("password-from-stdin", "debug", "d", "insecure"):
            if not rest:
                raise StartError(f"flag needs an argument: -{name}")
            value = rest.pop(0)
        flags[name] = value if eq or value else "true"
    return flags, rest


def cli(args: list[str]) -> int:
    """`grafana cli [global flags] admin reset-admin-password [flags] [password]`."""
    try:
        flags, rest = _flags(args, ("config", "homepath", "configOverrides", "debug", "d",
                                    "insecure", "pluginsDir", "repo", "pluginUrl"))
        if rest[:1] != ["admin"] or rest[1:2] in ([], ["--help"], ["-h"]):
            print("NAME:\n   Grafana CLI admin (STAND-IN) - Grafana admin commands\n\n"
                  "COMMANDS:\n   reset-admin-password  reset-admin-password <new password>")
            return 0 if rest[:1] == ["admin"] else 1
        if rest[1] != "reset-admin-password":
            raise StartError(f"the Grafana STAND-IN's cli implements only `admin "
                             f"reset-admin-password`, not {rest[1]!r}")
        own, positional = _flags(rest[2:], ("password-from-stdin", "user-id"))
        if own.get("password-from-stdin") == "true":
            print("New Password: ", flush=True)
            line = sys.stdin.readline()
            if not line:
                raise StartError("can't read password from stdin")
            password = line.rstrip("\n")
        else:
            password = positional[0] if positional else ""
        if len(password) < 4:
            raise StartError("new password is too short")
        homepath = flags.get("homepath") or os.getcwd()
        overrides = [o for o in flags.get("configOverrides", "").split(" ") if o]
        settings = read_settings(homepath, flags.get("config", ""), overrides)
        data = settings.get("paths", {}).get("data", "data")
        db = Database(os.path.join(data if os.path.isabs(data) else
                                   os.path.join(homepath, data), "grafana.db"))
        db.reset_password(int(own.get("user-id", "1")), password)
    except (StartError, OSError, sqlite3.Error, ValueError) as exc:
        sys.stderr.write(f"Error: ✗ {exc}\n")
        return 1
    print("\nAdmin password changed successfully ✔")
    return 0


def main(args: list[str]) -> int:
    if args[:1] in (["-v"], ["--version"], ["-V"]):
        print(BANNER)
        return 0
    if args[:1] == ["server"]:
        return serve(args[1:])
    if args[:1] == ["cli"]:
        return cli(args[1:])
    sys.stderr.write("Usage: grafana [server|cli] (STAND-IN)\n")
    return 1
