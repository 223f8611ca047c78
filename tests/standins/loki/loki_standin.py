"""
STAND-IN for Grafana Loki 3.7.0's `loki` binary inside the Loki stand-in image (NOT Loki): the
parts of its command line, configuration and HTTP API this project uses.

- `loki -config.file=FILE` (also `--config.file`, `-config.file FILE`): reads the YAML file
  strictly, as Loki does (an unknown key is refused: Loki's `field X not found in type ...`; a key
  Loki knows but this stand-in does not implement is refused too, naming it), checks the values of
  the keys it implements as Loki 3 does (schema periods of 24h for tsdb, `allow_structured_metadata`
  needing tsdb and schema v13, retention needing `compactor.delete_request_store`, durations,
  booleans, ports), makes its directories (an unwritable one ends the start, as Loki's mkdir does),
  then serves on `server.http_listen_port`:
  - `POST /loki/api/v1/push` (JSON; `service_name` discovered from the stream's labels as Loki's
    `discover_service_name` default does), `POST /otlp/v1/logs` (OTLP/HTTP, protobuf or JSON: the
    default resource attributes become labels, dots as underscores, other attributes structured
    metadata, refused when `allow_structured_metadata` is false), each entry appended to a file
    under `common.storage.filesystem.chunks_directory` (kept across restarts, in the volume);
  - `GET /loki/api/v1/query_range` and `/loki/api/v1/query` (a stream selector with `=`, `!=`,
    `=~`, `!~` and line filters `|=`, `!=`, `|~`, `!~`; `vector(N)` sums for Grafana's health
    check), `/loki/api/v1/labels`, `/ready`, `/metrics`, `/loki/api/v1/status/buildinfo`;
  - `auth_enabled: true` makes every API call need `X-Scope-OrgID` (401 `no org id`).
- `loki -health [-health.url=URL]`: GET http://localhost:3100/ready (cmd/loki/health.go), exit 0
  on 200, else 1.
- `loki -version`.
Not implemented: the gRPC port (bound, not served), the snappy-protobuf push, LogQL parsers and
metric queries beyond `vector()` sums, retention deletion.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import otlp_wire  # noqa: E402

VERSION = "3.7.0"
BANNER = f"loki, version {VERSION} (STAND-IN: tests/standins/loki, not Grafana's binary)"
# Loki 3's distributor.otlp_config default: resource attributes stored as index labels
OTLP_INDEX_LABELS = (
    "service.name", "service.namespace", "service.instance.id", "deployment.environment",
    "deployment.environment.name", "cloud.region", "cloud.availability_zone", "k8s.cluster.name",
    "k8s.namespace.name", "k8s.pod.name", "k8s.container.name", "container.name",
    "k8s.replicaset.name", "k8s.deployment.name", "k8s.statefulset.name", "k8s.daemonset.name",
    "k8s.cronjob.name", "k8s.job.name")
# limits_config.discover_service_name default
SERVICE_NAME_FROM = ("service", "app", "application", "name", "app_kubernetes_io_name",
                     "container", "container_name", "component", "workload", "job")

# The keys this stand-in implements: {key: type or nested dict}; a list is [item type].
DURATION = "duration"
KEYS: dict = {
    "auth_enabled": bool,
    "target": str,
    "server": {"http_listen_port": int, "grpc_listen_port": int, "http_listen_address": str,
               "log_level": str},
    "common": {"instance_addr": str, "path_prefix": str, "replication_factor": int,
               "storage": {"filesystem": {"chunks_directory": str, "rules_directory": str}},
               "ring": {"kvstore": {"store": str}, "instance_addr": str}},
    "schema_config": {"configs": [{"from": str, "store": str, "object_store": str, "schema": str,
                                   "index": {"prefix": str, "period": DURATION}}]},
    "limits_config": {"retention_period": DURATION, "allow_structured_metadata": bool,
                      "reject_old_samples": bool, "reject_old_samples_max_age": DURATION},
    "compactor": {"working_directory": str, "retention_enabled": bool,
                  "delete_request_store": str, "compaction_interval": DURATION},
    "analytics": {"reporting_enabled": bool},
    "ruler": {"alertmanager_url": str},
}
# Loki's top-level configuration blocks (docs: configuration/#supported-contents-and-default-values)
LOKI_BLOCKS = {"target", "auth_enabled", "ballast_bytes", "server", "distributor", "querier",
               "query_scheduler", "frontend", "query_range", "ruler", "ingester_client",
               "ingester", "pattern_ingester", "index_gateway", "bloom_build", "bloom_gateway",
               "storage_config", "chunk_store_config", "schema_config", "compactor",
               "limits_config", "frontend_worker", "table_manager", "memberlist", "runtime_config",
               "operational_config", "tracing", "analytics", "common", "shutdown_delay",
               "metrics_namespace", "kafka_config", "dataobj", "ui"}
STORES = ("tsdb", "boltdb-shipper")
OBJECT_STORES = ("filesystem", "s3", "gcs", "azure", "swift", "bos", "cos", "alibabacloud",
                 "inmemory")
KV_STORES = ("inmemory", "consul", "etcd", "memberlist", "multi")


class ConfigError(Exception):
    pass


def parse_duration(value) -> float:
    """Prometheus' model.Duration, as Loki parses it (e.g. 744h, 1d, 30m, 1h30m)."""
    text = str(value)
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"not a valid duration string: {text!r}")
    return sum(int(n) * units[u] for n, u in parts)


def check_keys(data, spec, path: str) -> None:
    if isinstance(spec, dict):
        if not isinstance(data, dict):
            raise ConfigError(f"yaml: unmarshal errors: {path or 'config'}: expected a mapping")
        for key, value in data.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in spec:
                if not path and key not in LOKI_BLOCKS:
                    raise ConfigError(f"yaml: unmarshal errors:\n  field {key} not found in type "
                                      "loki.ConfigWrapper")
                raise ConfigError(
                        f"{where}: this key is not implemented by the Loki STAND-IN "
                        "(tests/standins/loki); it cannot check what Loki would do with it")
            check_keys(value, spec[key], where)
    elif isinstance(spec, list):
        if not isinstance(data, list):
            raise ConfigError(f"yaml: unmarshal errors: {path}: expected a sequence")
        for i, item in enumerate(data):
            check_keys(item, spec[0], f"{path}[{i}]")
    elif spec is bool:
        if not isinstance(data, bool):
            raise ConfigError(f"yaml: unmarshal errors: {path}: cannot unmarshal {data!r} into "
                              "Go value of type bool")
    elif spec is int:
        if not isinstance(data, int) or isinstance(data, bool):
            raise ConfigError(f"yaml: unmarshal errors: {path}: cannot unmarshal {data!r} into "
                              "Go value of type int")
    elif spec == DURATION:
        try:
            parse_duration(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    elif spec is str and isinstance(data, (dict, list)):
        raise ConfigError(f"yaml: unmarshal errors: {path}: cannot unmarshal into string")


def load_config(path: str) -> dict:
    import yaml
    with open(path, encoding="utf-8") as f:
        try:
            config = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"yaml: {exc}") from None
    check_keys(config, KEYS, "")
    common = config.get("common", {})
    limits = config.get("limits_config", {})
    schemas = config.get("schema_config", {}).get("configs", [])
    if not schemas:
        raise ConfigError("invalid schema config: you must specify at least one schema "
                          "configuration (schema_config.configs)")
    for i, schema in enumerate(schemas):
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(schema.get("from", ""))):
            raise ConfigError(f"schema_config.configs[{i}].from: {schema.get('from')!r} is not a "
                              "date (YYYY-MM-DD)")
        if schema.get("store") not in STORES:
            raise ConfigError(f"schema_config.configs[{i}].store: unrecognized store type "
                              f"{schema.get('store')!r} (Loki 3 supports {', '.join(STORES)})")
        if schema.get("object_store") not in OBJECT_STORES:
            raise ConfigError(f"schema_config.configs[{i}].object_store: unrecognized object "
                              f"store {schema.get('object_store')!r}")
        if not re.fullmatch(r"v(9|1[0-3])", str(schema.get("schema", ""))):
            raise ConfigError(f"schema_config.configs[{i}].schema: invalid schema version "
                              f"{schema.get('schema')!r}")
        period = (schema.get("index") or {}).get("period", "24h")
        if parse_duration(period) != 86400:
            raise ConfigError(f"schema_config.configs[{i}].index.period: {period}: "
                              f"{schema['store']} works best with 24h periodic index config. "
                              "Either "
                              "add a new config with future date set to 24h to retain the existing "
                              "index or change the existing config to use 24h period")
    latest = max(schemas, key=lambda s: str(s["from"]))
    if limits.get("allow_structured_metadata", True):
        if latest["store"] != "tsdb":
            raise ConfigError(f"CONFIG ERROR: `tsdb` index type is required to store Structured "
                              f"Metadata and use native OTLP ingestion, your index type is "
                              f"`{latest['store']}` (defined in the `store` parameter of the "
                              "schema_config). Set `allow_structured_metadata: false` in the "
                              "`limits_config` section")
        if int(latest["schema"][1:]) < 13:
            raise ConfigError(f"CONFIG ERROR: schema v13 is required to store Structured Metadata "
                              f"and use native OTLP ingestion, your schema version is "
                              f"{latest['schema']}. Set `allow_structured_metadata: false` in the "
                              "`limits_config` section")
    compactor = config.get("compactor", {})
    if compactor.get("retention_enabled") and not compactor.get("delete_request_store"):
        raise ConfigError("invalid compactor config: compactor.delete-request-store should be "
                          "configured when retention is enabled")
    store = (common.get("ring") or {}).get("kvstore", {}).get("store", "inmemory")
    if store not in KV_STORES:
        raise ConfigError(f"common.ring.kvstore.store: invalid backend {store!r}")
    for key in ("http_listen_port", "grpc_listen_port"):
        port = config.get("server", {}).get(key, 3100 if key.startswith("http") else 9095)
        if not 0 <= port <= 65535:
            raise ConfigError(f"server.{key}: {port} is not a port")
    return config


class Store:
    """Entries in a JSON-lines file under the chunks directory (kept in the volume)."""

    def __init__(self, directory: str):
        os.makedirs(directory, exist_ok=True)  # a PermissionError ends the start, as Loki's
        self.path = os.path.join(directory, "standin-entries.jsonl")
        open(self.path, "a").close()
        self.lock = threading.Lock()
        self.entries: list[dict] = []
        with open(self.path, encoding="utf-8") as f:
            self.entries = [json.loads(line) for line in f if line.strip()]
        self.received = {"lines": 0, "bytes": 0}

    def add(self, tenant: str, labels: dict, ts: int, line: str, metadata: dict) -> None:
        entry = {"tenant": tenant, "labels": labels, "ts": ts, "line": line,
                 "metadata": metadata}
        with self.lock:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
            self.entries.append(entry)
            self.received["lines"] += 1
            self.received["bytes"] += len(line)


SELECTOR = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
FILTER = re.compile(r'\s*(\|=|!=|\|~|!~)\s*"((?:[^"\\]|\\.)*)"')


def parse_logql(query: str):
    """A stream selector and line filters -> (matchers, filters); ValueError otherwise."""
    q = query.strip()
    if not q.startswith("{") or "}" not in q:
        raise ValueError(f"parse error : syntax error: unexpected input {q[:20]!r}")
    inner, rest = q[1:q.index("}")], q[q.index("}") + 1:]
    matchers = []
    for part in [p for p in re.split(r",(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", inner) if p.strip()]:
        m = SELECTOR.fullmatch(part)
        if not m:
            raise ValueError(f"parse error : syntax error: unexpected {part.strip()!r}")
        matchers.append((m.group(1), m.group(2), json.loads(f'"{m.group(3)}"')))
    if not matchers or all(op in ("!=", "!~") or (op == "=~" and re.fullmatch(v, ""))
                           or (op == "=" and v == "") for _, op, v in matchers):
        raise ValueError("parse error : queries require at least one regexp or equality "
                         "matcher that does not have an empty-compatible value. For instance, "
                         "app=~\".*\" does not meet this requirement, but app=~\".+\" will")
    filters = []
    while rest.strip():
        m = FILTER.match(rest)
        if not m:
            raise ValueError(f"parse error : syntax error: unexpected {rest.strip()[:20]!r} "
                             "(the Loki STAND-IN implements line filters only)")
        filters.append((m.group(1), json.loads(f'"{m.group(2)}"')))
        rest = rest[m.end():]
    return matchers, filters


def matches(labels: dict, matchers) -> bool:
    for name, op, value in matchers:
        have = labels.get(name, "")
        if op == "=" and have != value or op == "!=" and have == value:
            return False
        if op == "=~" and not re.fullmatch(value, have) or op == "!~" and re.fullmatch(value, have):
            return False
    return True


def line_passes(line: str, filters) -> bool:
    for op, value in filters:
        if op == "|=" and value not in line or op == "!=" and value in line:
            return False
        if op == "|~" and not re.search(value, line) or op == "!~" and re.search(value, line):
            return False
    return True


def parse_time(value: str | None, default: int) -> int:
    """Loki's time parameters: nanoseconds, float seconds, or RFC3339."""
    if not value:
        return default
    if re.fullmatch(r"\d+", value):
        n = int(value)
        return n if n > 10**15 else n * 10**9
    if re.fullmatch(r"\d+\.\d*", value):
        return int(float(value) * 10**9)
    from datetime import datetime
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 10**9)


def vector_sum(query: str):
    """`vector(1)+vector(1)`: the only metric query implemented (Grafana's health check)."""
    term = r"vector\(\s*[\d.]+\s*\)"
    terms = re.fullmatch(rf"\s*{term}(\s*\+\s*{term})*\s*", query)
    if not terms:
        return None
    return sum(float(n) for n in re.findall(r"vector\(\s*([\d.]+)\s*\)", query))


def serve(config: dict) -> int:
    common = config.get("common", {})
    prefix = common.get("path_prefix", "/loki")
    chunks = common.get("storage", {}).get("filesystem", {}).get("chunks_directory",
                                                                  f"{prefix}/chunks")
    for directory in (prefix, common.get("storage", {}).get("filesystem", {})
                      .get("rules_directory", f"{prefix}/rules"),
                      config.get("compactor", {}).get("working_directory",
                                                      f"{prefix}/compactor")):
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            sys.stderr.write(f"level=error msg=\"error initialising module\" err=\"mkdir "
                             f"{directory}: {exc.strerror.lower()}\"\n")
            return 1
    try:
        store = Store(chunks)
    except OSError as exc:
        sys.stderr.write(f"level=error msg=\"error initialising module: store\" err=\"{exc}\"\n")
        return 1
    auth = config.get("auth_enabled", True)
    limits = config.get("limits_config", {})
    structured = limits.get("allow_structured_metadata", True)
    reject_old = limits.get("reject_old_samples", True)
    max_age = parse_duration(limits.get("reject_old_samples_max_age", "1w")) * 10**9
    started = time.time()
    server_cfg = config.get("server", {})
    port = server_cfg.get("http_listen_port", 3100)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def reply(self, code: int, body=b"", ctype="text/plain; charset=utf-8"):
            if isinstance(body, (dict, list)):
                body, ctype = json.dumps(body).encode(), "application/json"
            elif isinstance(body, str):
                body = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def tenant(self):
            if not auth:
                return "fake"
            org = self.headers.get("X-Scope-OrgID", "")
            if not org:
                self.reply(401, "no org id\n")
                return None
            return org

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            params = dict(urllib.parse.parse_qsl(url.query))
            if url.path == "/ready":
                return self.reply(200, "ready\n")
            if url.path == "/metrics":
                return self.reply(200, self.metrics(), "text/plain; version=0.0.4")
            if url.path == "/loki/api/v1/status/buildinfo":
                return self.reply(200, {"version": VERSION, "revision": "STAND-IN",
                                        "branch": "", "buildUser": "", "buildDate": "",
                                        "goVersion": ""})
            if not url.path.startswith("/loki/api/v1/"):
                return self.reply(404, "404 page not found\n")
            tenant = self.tenant()
            if tenant is None:
                return
            if url.path == "/loki/api/v1/labels":
                names = sorted({k for e in store.entries if e["tenant"] == tenant
                                for k in e["labels"]})
                return self.reply(200, {"status": "success", "data": names})
            if url.path in ("/loki/api/v1/query_range", "/loki/api/v1/query"):
                return self.query(url.path.endswith("_range"), params, tenant)
            return self.reply(404, "404 page not found\n")

        do_HEAD = do_GET

        def query(self, ranged: bool, params: dict, tenant: str):
            q = params.get("query", "")
            now = time.time_ns()
            total = vector_sum(q)
            if total is not None:
                at = parse_time(params.get("time") or params.get("end"), now) / 10**9
                value = [at, str(int(total) if total == int(total) else total)]
                result = ({"resultType": "matrix", "result": [{"metric": {}, "values": [value]}]}
                          if ranged else
                          {"resultType": "vector", "result": [{"metric": {}, "value": value}]})
                return self.reply(200, {"status": "success", "data": {**result, "stats": {}}})
            try:
                matchers, filters = parse_logql(q)
            except (ValueError, re.error) as exc:
                return self.reply(400, f"{exc}\n")
            end = parse_time(params.get("end") or params.get("time"), now)
            start = parse_time(params.get("start"), end - 3600 * 10**9)
            limit = int(params.get("limit", 100))
            forward = params.get("direction", "backward") == "forward"
            found = [e for e in store.entries if e["tenant"] == tenant
                     and start <= e["ts"] < end and matches(e["labels"], matchers)
                     and line_passes(e["line"], filters)]
            found.sort(key=lambda e: e["ts"], reverse=not forward)
            streams: dict = {}
            for e in found[:limit]:
                key = json.dumps(e["labels"], sort_keys=True)
                values = [str(e["ts"]), e["line"]] + ([e["metadata"]] if e["metadata"] else [])
                streams.setdefault(key, {"stream": e["labels"], "values": []})["values"].append(
                    values)
            return self.reply(200, {"status": "success", "data": {
                "resultType": "streams", "result": list(streams.values()), "stats": {}}})

        def do_POST(self):
            url = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
                try:
                    raw = gzip.decompress(raw)
                except OSError as exc:
                    return self.reply(400, f"gzip: {exc}\n")
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if url.path not in ("/loki/api/v1/push", "/otlp/v1/logs"):
                return self.reply(404, "404 page not found\n")
            tenant = self.tenant()
            if tenant is None:
                return
            try:
                if url.path == "/otlp/v1/logs":
                    entries = self.otlp(raw, ctype)
                elif ctype == "application/json":
                    entries = self.json_push(raw)
                else:
                    return self.reply(415, f"STAND-IN: push with Content-Type {ctype!r} is not "
                                      "implemented (JSON and OTLP only)\n")
            except (ValueError, KeyError, TypeError, otlp_wire.WireError) as exc:
                return self.reply(400, f"{exc}\n")
            now = time.time_ns()
            for labels, ts, line, metadata in entries:
                if reject_old and ts < now - max_age:
                    return self.reply(400, f"entry for stream '{labels}' has timestamp too old: "
                                      f"{ts}\n")
                if metadata and not structured:
                    return self.reply(400, "stream has structured metadata but structured "
                                      "metadata is disabled (allow_structured_metadata)\n")
            for labels, ts, line, metadata in entries:
                store.add(tenant, labels, ts, line, metadata)
            if url.path == "/otlp/v1/logs":  # ExportLogsServiceResponse, empty
                return self.reply(200, b"" if ctype != "application/json" else b"{}",
                                  ctype or "application/x-protobuf")
            return self.reply(204)

        def json_push(self, raw: bytes):
            out = []
            for stream in json.loads(raw).get("streams", []):
                labels = {str(k): str(v) for k, v in (stream.get("stream") or {}).items()}
                if not labels:
                    raise ValueError("error at least one label pair is required per stream")
                if "service_name" not in labels:
                    labels["service_name"] = next((labels[k] for k in SERVICE_NAME_FROM
                                                   if labels.get(k)), "unknown_service")
                for value in stream.get("values", []):
                    metadata = value[2] if len(value) > 2 else {}
                    out.append((labels, int(value[0]), str(value[1]), metadata))
            return out

        def otlp(self, raw: bytes, ctype: str):
            if ctype == "application/json":
                request = json.loads(raw or b"{}")
            elif ctype == "application/x-protobuf":
                request = otlp_wire.decode(raw, "ExportLogsServiceRequest")
            else:
                raise ValueError(f"unsupported content type {ctype!r}")
            out = []
            for rl in request.get("resourceLogs", []):
                resource = otlp_wire.attributes((rl.get("resource") or {}).get("attributes"))
                labels = {k.replace(".", "_"): str(v) for k, v in resource.items()
                          if k in OTLP_INDEX_LABELS}
                labels.setdefault("service_name", "unknown_service")
                rest = {k.replace(".", "_"): str(v) for k, v in resource.items()
                        if k not in OTLP_INDEX_LABELS}
                for sl in rl.get("scopeLogs", []):
                    for record in sl.get("logRecords", []):
                        ts = int(record.get("timeUnixNano") or record.get("observedTimeUnixNano")
                                 or time.time_ns())
                        meta = dict(rest)
                        meta.update({k.replace(".", "_"): str(v) for k, v in
                                     otlp_wire.attributes(record.get("attributes")).items()})
                        if record.get("severityText"):
                            meta["severity_text"] = record["severityText"]
                        body = otlp_wire.any_value(record.get("body"))
                        out.append((labels, ts, body if isinstance(body, str)
                                    else json.dumps(body), meta))
            return out

        def metrics(self) -> str:
            streams = {json.dumps(e["labels"], sort_keys=True) for e in store.entries}
            return (
                "# HELP loki_build_info STAND-IN build information\n"
                "# TYPE loki_build_info gauge\n"
                f'loki_build_info{{version="{VERSION}",revision="STAND-IN"}} 1\n'
                "# TYPE loki_distributor_lines_received_total counter\n"
                f"loki_distributor_lines_received_total {store.received['lines']}\n"
                "# TYPE loki_distributor_bytes_received_total counter\n"
                f"loki_distributor_bytes_received_total {store.received['bytes']}\n"
                "# TYPE loki_ingester_memory_streams gauge\n"
                f"loki_ingester_memory_streams {len(streams)}\n"
                "# TYPE process_start_time_seconds gauge\n"
                f"process_start_time_seconds {started}\n")

    address = server_cfg.get("http_listen_address", "") or "0.0.0.0"
    server = ThreadingHTTPServer((address, port), Handler)
    print(f"level=info msg=\"Starting Loki\" version=\"({BANNER})\"", flush=True)
    print(f"level=info msg=\"Loki started\" http_listen_port={port}", flush=True)
    server.serve_forever()
    return 0


def health(args: list[str]) -> int:
    """cmd/loki/health.go: GET the -health.url (default http://localhost:3100/ready)."""
    url = "http://localhost:3100/ready"
    for i, a in enumerate(args):
        m = re.match(r"^-+health\.url[=:]?(.*)$", a)
        if m:
            url = m.group(1) or (args[i + 1] if i + 1 < len(args)
                                 and not args[i + 1].startswith("-") else url)
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5) \
                as resp:
            code = resp.status
    except urllib.error.HTTPError as exc:
        code = exc.code
    except OSError as exc:
        sys.stderr.write(f"Health check failed: {exc}\n")
        return 1
    if code == 200:
        print("Loki is healthy")
        return 0
    sys.stderr.write(f"Loki is unhealthy: status code {code}\n")
    return 1


def main(args: list[str]) -> int:
    if any(re.fullmatch(r"-+health", a) for a in args):
        return health(args)
    if any(re.fullmatch(r"-+version", a) for a in args):
        print(BANNER)
        return 0
    config_file = None
    for i, a in enumerate(args):
        m = re.fullmatch(r"-+config\.file(?:=(.*))?", a)
        if m:
            config_file = m.group(1) if m.group(1) is not None else (
                args[i + 1] if i + 1 < len(args) else None)
    if not config_file:
        sys.stderr.write("failed parsing config: no config file given (-config.file)\n")
        return 1
    try:
        config = load_config(config_file)
    except (OSError, ConfigError) as exc:
        sys.stderr.write(f"failed parsing config: {config_file}: {exc}\n")
        return 1
    if any(re.fullmatch(r"-+verify-config(=true)?", a) for a in args):
        sys.stderr.write("level=info msg=\"config is valid\"\n")
        return 0
    return serve(config)
