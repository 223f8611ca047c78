"""
STAND-IN for the MinIO server inside the MinIO stand-in image (not MinIO).

`minio server /data --console-address :9001`: S3 on :9000 is moto's server (a real S3-protocol
implementation, its objects in memory) behind a front that answers, like MinIO on the same port,
/minio/health/{live,ready,cluster}, Prometheus metrics at /minio/v2/metrics/{cluster,node}
(without a token only when MINIO_PROMETHEUS_AUTH_TYPE=public, as cmd/metrics-router.go has it;
a bearer token is not verified: a stand-in's limit) and the admin API calls this project makes:
  PUT  /minio/admin/v3/add-user?accessKey=        (body encrypted with the root secret, madmin)
  GET  /minio/admin/v3/user-info?accessKey=       (404 XMinioAdminNoSuchUser when unknown)
  PUT  /minio/admin/v3/add-canned-policy?name=    (the policy JSON)
  GET  /minio/admin/v3/info-canned-policy?name=   (the document, shuffled: MinIO writes Action
       and Resource out of Go maps, minio/pkg policy/actionset.go and resourceset.go)
  POST /minio/admin/v3/idp/builtin/policy/attach  (encrypted both ways)
Users and policies are kept in /data/.minio.sys/standin-iam.json; buckets and their
configuration (the bucket-level PUT and DELETE requests that succeeded, replayed at start) in
/data/.minio.sys/standin-buckets.jsonl; objects in moto's memory only. Requests are told apart by
the access key of their SigV4 Authorization header (admin calls: the root user only; S3: the
root user or an enabled user, else InvalidAccessKeyId), and the signature is verified as MinIO's
cmd/signature-v4.go does (AWS Signature Version 4, the header or the presigned query form): the
canonical request from the method, the path as sent, the sorted query, the signed headers and
x-amz-content-sha256 (a hex payload hash must be the body's: XAmzContentSHA256Mismatch), signed
with the key derived from the root password or the user's secret key; a mismatch is 403
SignatureDoesNotMatch (admin calls: the same code in MinIO's JSON error). Not checked: the request
time's skew, the chunk signatures of a streaming upload (its seed signature is), user policies on
S3 requests: a stand-in's limits, said in docs/testing.md. The root credentials are read from the
environment at start only, as MinIO does: a new MINIO_ROOT_PASSWORD needs a restart.
`mc` (minio/mc at the image's release, cmd/*.go): `mc ready ALIAS` (GET
<alias>/minio/health/cluster, exit 0 when it answers 200), `mc stat ALIAS/BUCKET` (the bucket's
HEAD signed with the alias's keys; a missing bucket or refused key: mc's fatal message, exit 1),
`mc alias set|remove|list`, `mc ls ALIAS` (the buckets, ListBuckets signed with the alias's keys);
aliases from MC_HOST_<alias> (http://KEY:SECRET@host:port) before
$MC_CONFIG_DIR/config.json, whose default `local` is http://localhost:9000.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import sys
import threading
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

MOTO_PORT = 19000
IAM_FILE = ".minio.sys/standin-iam.json"
BUCKET_LOG = ".minio.sys/standin-buckets.jsonl"


class _Body:
    """What minio.crypto.decrypt reads from: read(), close(), release_conn()."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        chunk = self.data[self.pos:] if n < 0 else self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk

    def close(self):
        pass

    def release_conn(self):
        pass


def shuffled(document: dict) -> dict:
    """The document with its statements and their Action/Resource lists in a random order."""
    doc = json.loads(json.dumps(document))
    statements = doc.get("Statement") or []
    if isinstance(statements, list):
        random.shuffle(statements)
        for st in statements:
            for key in ("Action", "NotAction", "Resource", "NotResource"):
                if isinstance(st.get(key), list):
                    random.shuffle(st[key])
    return doc


class IAM:
    def __init__(self, data_dir: str, root: tuple[str, str]):
        self.root = root
        self.path = os.path.join(data_dir, IAM_FILE)
        self.lock = threading.Lock()
        self.users: dict[str, dict] = {}
        self.policies: dict[str, dict] = {}
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                saved = json.load(f)
            self.users, self.policies = saved["users"], saved["policies"]

    def save(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"users": self.users, "policies": self.policies}, f)
        os.replace(tmp, self.path)


def access_key(headers) -> str:
    m = re.search(r"Credential=([^/]+)/", headers.get("Authorization", ""))
    if m:
        return m.group(1)
    return parse_qs(urlsplit(headers.get("X-Original-Url", "")).query).get(
        "X-Amz-Credential", [""])[0].split("/")[0]


SIGNATURE_MISMATCH = ("The request signature we calculated does not match the signature you "
                      "provided. Check your key and signing method.")
_AUTH = re.compile(r"AWS4-HMAC-SHA256\s+Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*"
                   r"Signature=([0-9a-f]+)")


def _uri_encode(text: str) -> str:
    return quote(text, safe="-_.~")


def sigv4_problem(method: str, raw_path: str, headers, body: bytes, secret_of) -> str | None:
    """AWS Signature Version 4 as MinIO verifies it (cmd/signature-v4.go, doesSignatureMatch and
    doesPresignedSignatureMatch): None when the request is signed right, else MinIO's error code.
    `secret_of(access_key)` is the key's secret, or None for an unknown key. An unsigned request
    is None (anonymous: what it may do is the bucket policy's)."""
    url = urlsplit(raw_path)
    query = [tuple(p.split("=", 1)) if "=" in p else (p, "") for p in url.query.split("&") if p]
    params = {unquote(k): unquote(v) for k, v in query}
    header = headers.get("Authorization", "")
    if header.startswith("AWS4-HMAC-SHA256"):
        m = _AUTH.match(header)
        if not m:
            return "AuthorizationHeaderMalformed"
        credential, signed, signature = m.groups()
        # getContentSha256Cksum (cmd/signature-v4-utils.go): a signed request without the header
        # is the empty payload's hash (curl --aws-sigv4 sends none)
        payload = headers.get("x-amz-content-sha256", "") or hashlib.sha256(b"").hexdigest()
        if re.fullmatch(r"[0-9a-f]{64}", payload) and hashlib.sha256(body).hexdigest() != payload:
            return "XAmzContentSHA256Mismatch"
        stamp = headers.get("x-amz-date", "")
        presigned = False
    elif "X-Amz-Signature" in params:
        credential = params.get("X-Amz-Credential", "")
        signed = params.get("X-Amz-SignedHeaders", "")
        signature, stamp = params["X-Amz-Signature"], params.get("X-Amz-Date", "")
        payload, presigned = "UNSIGNED-PAYLOAD", True
    elif header:
        return "SignatureDoesNotMatch"  # MinIO answers other schemes (V2, ...) by this code too
    else:
        return None
    key, _, scope = credential.partition("/")
    secret = secret_of(key)
    if secret is None:
        return "InvalidAccessKeyId"
    pairs = sorted((_uri_encode(unquote(k)), _uri_encode(unquote(v))) for k, v in query
                   if not (presigned and unquote(k) == "X-Amz-Signature"))
    canonical_headers = "".join(
        f"{name}:{','.join(' '.join(v.split()) for v in headers.get_all(name, []))}\n"
        for name in signed.split(";"))
    canonical = "\n".join([method, url.path or "/", "&".join(f"{k}={v}" for k, v in pairs),
                           canonical_headers, signed, payload])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    k = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(expected, signature) else "SignatureDoesNotMatch"


def _error_xml(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>").encode()


# A few of MinIO's v2 metrics, in Prometheus's text format (the names MinIO exports).
METRICS = """\
# HELP minio_cluster_nodes_online_total Total number of MinIO nodes online.
# TYPE minio_cluster_nodes_online_total gauge
minio_cluster_nodes_online_total{server="127.0.0.1:9000"} 1
# HELP minio_cluster_nodes_offline_total Total number of MinIO nodes offline.
# TYPE minio_cluster_nodes_offline_total gauge
minio_cluster_nodes_offline_total{server="127.0.0.1:9000"} 0
"""


def serve(args: list[str]) -> int:
    from minio.crypto import decrypt, encrypt
    from moto.server import ThreadedMotoServer

    if not args or args[0] != "server":
        sys.stderr.write("The MinIO stand-in runs only "
                         "`minio server <dir> [--console-address :port]`\n")
        return 1
    rest = args[1:]
    console = ":9001"
    if "--console-address" in rest:
        i = rest.index("--console-address")
        console = rest[i + 1]
        del rest[i:i + 2]
    address = ":9000"
    if "--address" in rest:
        i = rest.index("--address")
        address = rest[i + 1]
        del rest[i:i + 2]
    data_dir = rest[0] if rest else "/data"
    user = os.environ.get("MINIO_ROOT_USER", "minioadmin")
    password = os.environ.get("MINIO_ROOT_PASSWORD", "minioadmin")
    metrics_public = os.environ.get("MINIO_PROMETHEUS_AUTH_TYPE", "jwt") == "public"
    if len(user) < 3 or len(password) < 8:
        sys.stderr.write("FATAL Unable to validate credentials inherited from the shell "
                         "environment: "
                         "Invalid credentials (MINIO_ROOT_USER at least 3 characters, "
                         "MINIO_ROOT_PASSWORD at least 8)\n")
        return 1
    # fails as MinIO on a bad /data
    os.makedirs(os.path.join(data_dir, ".minio.sys"), exist_ok=True)
    iam = IAM(data_dir, (user, password))

    def secret_of(key: str) -> str | None:
        """The root's password (of this start's environment), or an enabled user's secret."""
        if key == user:
            return password
        entry = iam.users.get(key, {})
        return entry.get("secretKey") if entry.get("status") == "enabled" else None
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=MOTO_PORT, verbose=False)
    moto.start()
    # MinIO keeps its buckets and their configuration in /data; moto keeps them in memory: the
    # bucket-level requests that succeeded are logged there and replayed at start, so a new
    # container on the same volume has the buckets (their objects are not kept)
    bucket_log = os.path.join(data_dir, BUCKET_LOG)
    if os.path.exists(bucket_log):
        with open(bucket_log, encoding="utf-8") as f:
            for line in f:
                entry = json.loads(line)
                conn = http.client.HTTPConnection("127.0.0.1", MOTO_PORT, timeout=60)
                conn.request(entry["method"], entry["path"],
                             body=base64.b64decode(entry["body"]), headers=entry["headers"])
                conn.getresponse().read()
                conn.close()
    log_lock = threading.Lock()

    def log_bucket_request(method: str, path: str, headers: dict, body: bytes) -> None:
        fd = os.open(bucket_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with log_lock, os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(json.dumps({"method": method, "path": path, "headers": headers,
                                "body": base64.b64encode(body).decode()}) + "\n")

    class Front(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # TCP_NODELAY on every connection, as Go's net package sets on each one it accepts
        # (src/net/tcpsock.go, newTCPConn: setNoDelay(fd, true)), so MinIO's: without it, a
        # body written after its headers waits for the client's delayed ACK (Nagle), about
        # 40 ms per request on a reused connection
        disable_nagle_algorithm = True

        def log_message(self, *a):
            pass

        def _reply(self, status: int, body: bytes = b"", ctype: str = "application/json",
                   headers: dict | None = None):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _admin_error(self, status: int, code: str, message: str):
            self._reply(status, json.dumps({"Code": code, "Message": message}).encode())

        def _do(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            url = urlsplit(self.path)
            if url.path.startswith("/minio/health/"):
                return self._reply(200, b"", headers={"X-Minio-Server-Status": "online"})
            if url.path in ("/minio/v2/metrics/cluster", "/minio/v2/metrics/node"):
                if not metrics_public and not self.headers.get("Authorization", "").startswith(
                        "Bearer "):
                    return self._reply(403, _error_xml("AccessDenied", "Access Denied."),
                                       "application/xml")
                return self._reply(200, METRICS.encode(), "text/plain; version=0.0.4")
            if url.path.startswith("/minio/admin/v3/"):
                return self._admin(url.path[len("/minio/admin/v3/"):], parse_qs(url.query), body)
            problem = sigv4_problem(self.command, self.path, self.headers, body, secret_of)
            if problem == "InvalidAccessKeyId":
                return self._reply(403, _error_xml("InvalidAccessKeyId", "The Access Key Id you "
                                                   "provided does not exist in our records."),
                                   "application/xml")
            if problem:
                return self._reply(403 if problem != "AuthorizationHeaderMalformed" else 400,
                                   _error_xml(problem, SIGNATURE_MISMATCH if problem ==
                                              "SignatureDoesNotMatch" else problem),
                                   "application/xml")
            conn = http.client.HTTPConnection("127.0.0.1", MOTO_PORT, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "content-length"}
            headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if self.command in ("PUT", "DELETE") and resp.status < 300 \
                    and "/" not in url.path.strip("/") and url.path.strip("/"):
                log_bucket_request(self.command, self.path, headers, body)
            passed = {k: v for k, v in resp.getheaders()
                      if k.lower() not in ("content-length", "content-type", "transfer-encoding",
                                           "connection", "server", "date")}
            self._reply(resp.status, data, resp.getheader("Content-Type", "application/xml"),
                        passed)
            conn.close()

        def _admin(self, command: str, query: dict, body: bytes):
            if access_key(self.headers) != user:
                return self._admin_error(403, "AccessDenied", "Access Denied.")
            problem = sigv4_problem(self.command, self.path, self.headers, body, secret_of)
            if problem:
                return self._admin_error(403, problem, SIGNATURE_MISMATCH if problem ==
                                         "SignatureDoesNotMatch" else problem)
            q = {k: v[0] for k, v in query.items()}
            now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            with iam.lock:
                if command == "add-user" and self.command == "PUT":
                    info = json.loads(decrypt(_Body(body), password))
                    old = iam.users.get(q["accessKey"], {})
                    iam.users[q["accessKey"]] = {"secretKey": info["secretKey"],
                                                 "status": info.get("status", "enabled"),
                                                 "policies": old.get("policies", []),
                                                 "updatedAt": now}
                    iam.save()
                    return self._reply(200)
                if command == "user-info" and self.command == "GET":
                    u = iam.users.get(q.get("accessKey", ""))
                    if u is None:
                        return self._admin_error(
                            404, "XMinioAdminNoSuchUser",
                            "The specified user does not exist. (Specified user does not exist)")
                    return self._reply(200, json.dumps({"policyName": ",".join(u["policies"]),
                                                        "status": u["status"], "memberOf": None,
                                                        "updatedAt": u["updatedAt"]}).encode())
                if command == "add-canned-policy" and self.command == "PUT":
                    try:
                        iam.policies[q["name"]] = json.loads(body)
                    except ValueError:
                        return self._admin_error(400, "XMinioMalformedJSON",
                                                 "The JSON you provided was not well-formed")
                    iam.save()
                    return self._reply(200)
                if command == "info-canned-policy" and self.command == "GET":
                    doc = iam.policies.get(q.get("name", ""))
                    if doc is None:
                        return self._admin_error(
                            404, "XMinioAdminNoSuchPolicy",
                            "The canned policy does not exist. "
                            "(Specified canned policy does not exist)")
                    if q.get("v") == "2":
                        return self._reply(200, json.dumps({"PolicyName": q["name"],
                                                            "Policy": shuffled(doc),
                                                            "CreateDate": now,
                                                            "UpdateDate": now}).encode())
                    return self._reply(200, json.dumps(shuffled(doc)).encode())
                if command == "idp/builtin/policy/attach" and self.command == "POST":
                    req = json.loads(decrypt(_Body(body), password))
                    target = iam.users.get(req.get("user", ""))
                    if target is None:
                        return self._admin_error(
                            404, "XMinioAdminNoSuchUser",
                            "The specified user does not exist. (Specified user does not exist)")
                    missing = [p for p in req["policies"] if p not in iam.policies]
                    if missing:
                        return self._admin_error(
                            404, "XMinioAdminNoSuchPolicy",
                            f"The canned policy does not exist. ({missing[0]})")
                    new = [p for p in req["policies"] if p not in target["policies"]]
                    if not new:
                        return self._admin_error(
                            400, "XMinioAdminPolicyChangeAlreadyApplied",
                            "The specified policy change is already in effect.")
                    target["policies"] += new
                    target["updatedAt"] = now
                    iam.save()
                    answer = json.dumps({"policiesAttached": new, "user": req["user"],
                                         "updatedAt": now}).encode()
                    return self._reply(200, encrypt(answer, password), "application/octet-stream")
            return self._admin_error(
                501, "NotImplemented",
                f"the MinIO stand-in does not implement {self.command} {command}")

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _do

    class Console(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True  # as Front's

        def log_message(self, *a):
            pass

        def do_GET(self):  # noqa: N802
            body = b"<html><body>MinIO console STAND-IN (no console here)</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def bind(addr: str) -> tuple[str, int]:
        host, port = addr.rsplit(":", 1)
        return host or "0.0.0.0", int(port)

    console_server = ThreadingHTTPServer(bind(console), Console)
    threading.Thread(target=console_server.serve_forever, daemon=True).start()
    front = ThreadingHTTPServer(bind(address), Front)
    print(f"MinIO Object Storage Server (STAND-IN: tests/standins/minio, not MinIO)\n"
          f"API: http://{bind(address)[0]}:{bind(address)[1]}\nWebUI: {console}", flush=True)
    front.serve_forever()
    return 0


# mc's aliases (minio/mc cmd/config-v10.go loadDefaults): written to $MC_CONFIG_DIR/config.json
# on first use, as mc does; `local` has no keys.
MC_DEFAULT_ALIASES = {
    "local": {"url": "http://localhost:9000", "accessKey": "", "secretKey": "", "api": "S3v4",
              "path": "auto"},
}
MC_HOST_URL = re.compile(r"^(https?://)(.*?):(.*)@(.*?)$")  # cmd/config.go hostKeys


class McError(Exception):
    pass


def mc_config_path() -> str:
    home = os.environ.get("MC_CONFIG_DIR") or os.path.join(os.path.expanduser("~"), ".mc")
    return os.path.join(home, "config.json")


def mc_load_config() -> dict:
    path = mc_config_path()
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    else:
        config = {"version": "10", "aliases": {}}
    for name, alias in MC_DEFAULT_ALIASES.items():
        config["aliases"].setdefault(name, dict(alias))
    return config


def mc_save_config(config: dict) -> None:
    path = mc_config_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(config, f, indent="\t")
    os.replace(path + ".tmp", path)


def mc_alias(name: str) -> dict | None:
    """expandAlias (cmd/config.go): MC_HOST_<alias> first (URL with the keys as its user info,
    the last @ ending the secret), then the config file's alias."""
    env = os.environ.get(f"MC_HOST_{name}")
    if env is not None:
        m = MC_HOST_URL.match(env)
        if m:
            return {"url": m.group(1) + m.group(4), "accessKey": m.group(2),
                    "secretKey": m.group(3)}
        u = urlsplit(env)
        if u.scheme not in ("http", "https") or u.path not in ("", "/") or u.query:
            raise McError(f"Invalid argument: {env}")
        return {"url": f"{u.scheme}://{u.netloc.rpartition('@')[2]}",
                "accessKey": u.username or "", "secretKey": u.password or ""}
    return mc_load_config()["aliases"].get(name)


def mc_client(alias: dict):
    from minio import Minio
    u = urlsplit(alias["url"])
    return Minio(u.netloc, alias.get("accessKey") or None, alias.get("secretKey") or None,
                 secure=u.scheme == "https")


def mc_ready(args: list[str]) -> int:
    """`mc ready ALIAS`: GET <alias>/minio/health/cluster, exit 0 when it answers 200."""
    alias = mc_alias(args[0])
    url = alias["url"] if alias else args[0]
    try:
        with urllib.request.urlopen(f"{url}/minio/health/cluster", timeout=5) as r:
            ok = r.status == 200
    except OSError as exc:
        print(f"mc: <ERROR> {exc}", file=sys.stderr)
        return 1
    print(f"The cluster '{args[0]}' is ready" if ok else f"The cluster '{args[0]}' is not ready")
    return 0 if ok else 1


def mc_stat(args: list[str]) -> int:
    """`mc stat ALIAS/BUCKET`: the bucket's HEAD signed with the alias's keys (S3v4); its
    absence or a refused key fails with mc's fatal message, exit 1 (cmd/stat-main.go)."""
    from minio.error import S3Error
    status = 0
    for target in args:
        name, _, path = target.partition("/")
        bucket = path.strip("/").split("/")[0]
        alias = mc_alias(name)
        if alias is None or not bucket or "/" in path.strip("/"):
            raise McError(f"Unable to stat `{target}`. The stand-in's mc stats buckets of an "
                          "alias only.")
        try:
            exists = mc_client(alias).bucket_exists(bucket)
        except S3Error as exc:
            raise McError(f"Unable to stat `{target}`. {exc.message}") from None
        except OSError as exc:
            raise McError(f"Unable to stat `{target}`. {exc}") from None
        if not exists:
            raise McError(f"Unable to stat `{target}`. Bucket `{bucket}` does not exist.")
        print(f"{'Name':<10}: {bucket}\n{'Size':<10}: {'N/A':<6} \n{'Type':<10}: folder \n")
    return status


def mc_ls(args: list[str]) -> int:
    """`mc ls ALIAS`: the alias's buckets (ListBuckets signed with its keys), one a line as
    cmd/ls.go prints them; a refused key: mc's fatal message, exit 1."""
    from minio.error import S3Error
    name = args[0].rstrip("/")
    alias = mc_alias(name)
    if alias is None or "/" in name:
        raise McError(f"Unable to list folder. The stand-in's mc lists the buckets of an alias "
                      f"only, not `{args[0]}`.")
    try:
        buckets = mc_client(alias).list_buckets()
    except S3Error as exc:
        raise McError(f"Unable to list folder. {exc.message}") from None
    except OSError as exc:
        raise McError(f"Unable to list folder. {exc}") from None
    for b in buckets:
        when = b.creation_date.strftime("%Y-%m-%d %H:%M:%S UTC") if b.creation_date else ""
        print(f"[{when}]     0B {b.name}/")
    return 0


def mc_alias_command(args: list[str]) -> int:
    """`mc alias set NAME URL ACCESSKEY SECRETKEY`, `mc alias remove NAME`, `mc alias list`
    (cmd/alias-*.go; the config file 0600 in MC_CONFIG_DIR)."""
    if args[:1] == ["set"] and len(args) == 5:
        _, name, url, key, secret = args
        config = mc_load_config()
        config["aliases"][name] = {"url": url.rstrip("/"), "accessKey": key, "secretKey": secret,
                                   "api": "s3v4", "path": "auto"}
        mc_save_config(config)
        print(f"Added `{name}` successfully.")
        return 0
    if args[:1] in (["remove"], ["rm"]) and len(args) == 2:
        config = mc_load_config()
        if config["aliases"].pop(args[1], None) is None:
            raise McError(f"Unable to remove alias. No such alias `{args[1]}` found.")
        mc_save_config(config)
        print(f"Removed `{args[1]}` successfully.")
        return 0
    if args[:1] in (["list"], ["ls"]):
        for name, alias in sorted(mc_load_config()["aliases"].items()):
            print(f"{name}\n  URL       : {alias['url']}\n  AccessKey : {alias['accessKey']}\n"
                  f"  SecretKey : {alias['secretKey']}\n  API       : {alias.get('api', '')}\n"
                  f"  Path      : {alias.get('path', '')}\n")
        return 0
    raise McError("The stand-in's mc alias knows set NAME URL KEY SECRET, remove NAME, list")


def mc(args: list[str]) -> int:
    """mc's commands the compose healthcheck and the host suite run: ready, stat, alias. Global
    flags --quiet, --json-less text only (--no-color, --disable-pager accepted)."""
    args = [a for a in args if a not in ("--quiet", "-q", "--no-color", "--disable-pager")]
    commands = {"ready": mc_ready, "stat": mc_stat, "alias": mc_alias_command, "ls": mc_ls}
    if not args or args[0] not in commands or len(args) < 2:
        sys.stderr.write("The mc stand-in knows only `mc ready ALIAS`, `mc stat ALIAS/BUCKET`, "
                         "`mc ls ALIAS` and `mc alias set|remove|list`\n")
        return 1
    try:
        return commands[args[0]](args[1:])
    except McError as exc:
        print(f"mc: <ERROR> {exc}", file=sys.stderr)
        return 1


def main(args: list[str]) -> int:
    if args and args[0] in ("--version", "-v", "version"):
        import minio.crypto  # noqa: F401  (the image's packages are whole)
        import moto.server  # noqa: F401
        print("minio version RELEASE.2025-09-07T16-13-09Z "
              "(STAND-IN: tests/standins/minio, not MinIO)")
        return 0
    return serve(args)
