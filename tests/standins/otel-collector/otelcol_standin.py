"""
STAND-IN for the OpenTelemetry Collector Contrib 0.158.0 binary (`/otelcol-contrib`) inside the
collector stand-in image (NOT the collector): the components the rendered configuration uses.

- `otelcol-contrib --config=FILE` (also `--config FILE`, `file:FILE`; `validate --config=...`):
  reads the YAML as the collector's confmap does, strictly: an unknown top-level key, an unknown
  component type, a key a component does not have (`'' has invalid keys: ...`), a pipeline naming
  a component that is not configured, a pipeline without receivers or exporters, an extension
  listed in `service.extensions` but not configured, all refuse the start with the collector's
  message. A component or key the collector has but this stand-in does not implement is refused
  too, naming it. Implemented: receivers `otlp` (HTTP protocol served; gRPC not served), processors
  `batch` and `memory_limiter` (their values checked as the collector does; data passed on, the
  batch flushed every `timeout`), exporters `prometheus` (what was received, as Prometheus text),
  `otlp_http` (and its deprecated alias `otlphttp`: protobuf, gzip, to `endpoint` + `/v1/<signal>`
  as the real exporter sends, retried on failure) and `debug`, the extension `health_check`, and
  `service.telemetry.metrics.readers[].pull.exporter.prometheus` (the collector's own metrics).
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
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import otlp_wire  # noqa: E402

VERSION = "0.158.0"
BANNER = f"otelcol-contrib version {VERSION} (STAND-IN: tests/standins/otel-collector)"
SIGNALS = {"traces": "ExportTraceServiceRequest", "metrics": "ExportMetricsServiceRequest",
           "logs": "ExportLogsServiceRequest"}
ANY = object()  # a value of any shape (not checked further)
ENDPOINT = {"endpoint": str}
# kind -> type -> the keys the stand-in implements (nested dicts are checked the same way)
COMPONENTS: dict[str, dict[str, dict]] = {
    "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": str},
                                         "http": {"endpoint": str}}}},
    "processors": {"batch": {"timeout": "duration", "send_batch_size": int,
                             "send_batch_max_size": int},
                   "memory_limiter": {"check_interval": "duration", "limit_mib": int,
                                      "spike_limit_mib": int, "limit_percentage": int,
                                      "spike_limit_percentage": int}},
    "exporters": {"prometheus": {"endpoint": str, "namespace": str, "const_labels": ANY,
                                 "send_timestamps": bool, "add_metric_suffixes": bool,
                                 "resource_to_telemetry_conversion": {"enabled": bool}},
                  "otlp_http": {"endpoint": str, "logs_endpoint": str, "traces_endpoint": str,
                                "metrics_endpoint": str, "encoding": str, "compression": str,
                                "headers": ANY, "timeout": "duration",
                                "retry_on_failure": {"enabled": bool}},
                  "debug": {"verbosity": str}},
    "extensions": {"health_check": {"endpoint": str, "path": str}},
    "connectors": {},
}
ALIASES = {"otlphttp": "otlp_http"}  # deprecated since v0.144.0
# component types the pinned contrib release has that this stand-in does not implement (the
# collector would accept them): named in the refusal so it is not mistaken for the collector's
CONTRIB_KNOWN = {"receivers": {"prometheus", "filelog", "hostmetrics", "jaeger", "zipkin",
                               "kafka", "otlpjsonfile"},
                 "processors": {"attributes", "resource", "filter", "transform",
                                "resourcedetection", "k8sattributes"},
                 "exporters": {"otlp", "otlp_grpc", "file", "kafka", "loadbalancing",
                               "prometheusremotewrite", "zipkin", "nop"},
                 "extensions": {"pprof", "zpages", "file_storage", "basicauth"},
                 "connectors": {"forward", "spanmetrics", "count", "routing"}}


class ConfigError(Exception):
    pass


def duration(value) -> float:
    """Go's time.ParseDuration."""
    text = str(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"time: invalid duration {text!r}")
    scale = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


def check(data, spec, where: str, owner: str) -> None:
    if spec is ANY:
        return
    if isinstance(spec, dict):
        if data is None:
            return
        if not isinstance(data, dict):
            raise ConfigError(f"{owner}: '{where}' expected a map, got '{type(data).__name__}'")
        extra = sorted(str(k) for k in data if k not in spec)
        if extra:
            raise ConfigError(f"{owner}: decoding failed due to the following error(s):\n\n"
                              f"'{where}' has invalid keys: {', '.join(extra)} (the STAND-IN "
                              "implements only: " + ", ".join(spec) + ")")
        for key, value in data.items():
            check(value, spec[key], f"{where}.{key}" if where else key, owner)
    elif spec == "duration":
        try:
            duration(data)
        except ConfigError as exc:
            raise ConfigError(f"{owner}: '{where}' {exc}") from None
    elif spec is bool and not isinstance(data, bool) or spec is int and (
            not isinstance(data, int) or isinstance(data, bool)):
        raise ConfigError(f"{owner}: '{where}' expected type '{spec.__name__}', got "
                          f"'{type(data).__name__}'")
    elif spec is str and not isinstance(data, str):
        raise ConfigError(f"{owner}: '{where}' expected type 'string', got "
                          f"'{type(data).__name__}'")


def component_type(cid: str) -> tuple[str, str]:
    ctype, _, name = str(cid).partition("/")
    if not re.fullmatch(r"[a-zA-Z][0-9a-zA-Z_]{0,62}", ctype):
        raise ConfigError(f"invalid character(s) in type {ctype!r}")
    return ctype, name


def load(path: str) -> dict:
    import yaml
    if path.startswith("file:"):
        path = path[len("file:"):]
    with open(path, encoding="utf-8") as f:
        try:
            config = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot unmarshal the configuration: {exc}") from None
    extra = sorted(k for k in config if k not in COMPONENTS and k != "service")
    if extra:
        raise ConfigError("decoding failed due to the following error(s):\n\n"
                          f"'' has invalid keys: {', '.join(extra)}")
    resolved: dict = {}
    for kind, types in COMPONENTS.items():
        resolved[kind] = {}
        for cid, body in (config.get(kind) or {}).items():
            ctype, _ = component_type(cid)
            real = ALIASES.get(ctype, ctype)
            if ctype in ALIASES:
                print(f"warn\t{ctype!r} alias is deprecated; use {real!r} instead", flush=True)
            if real not in types:
                if real in CONTRIB_KNOWN.get(kind, ()):
                    raise ConfigError(f"{kind}: {cid!r}: the collector STAND-IN does not "
                                      f"implement {real!r} (it implements "
                                      f"{', '.join(types) or 'none'})")
                valid = sorted(set(types) | CONTRIB_KNOWN.get(kind, set()))
                raise ConfigError(f"error decoding '{kind}': unknown type: \"{ctype}\" for id: "
                                  f"\"{cid}\" (valid values: [{' '.join(valid)}])")
            owner = f"error decoding '{kind}': error reading configuration for \"{cid}\""
            check(body or {}, types[real], "", owner)
            resolved[kind][str(cid)] = (real, body or {})
    validate_components(resolved)
    service = config.get("service") or {}
    check(service, {"extensions": ANY, "pipelines": ANY, "telemetry": ANY}, "",
          "error decoding 'service'")
    for ext in service.get("extensions") or []:
        if ext not in resolved["extensions"]:
            raise ConfigError(f"service::extensions: references extension \"{ext}\" which is "
                              "not configured")
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        raise ConfigError("service must have at least one pipeline")
    for pid, body in pipelines.items():
        signal, _ = component_type(pid)
        if signal not in SIGNALS:
            raise ConfigError(f"service::pipelines: unknown signal \"{signal}\"")
        check(body, {"receivers": ANY, "processors": ANY, "exporters": ANY}, "",
              f"service::pipelines::{pid}")
        for kind, singular in (("receivers", "receiver"), ("processors", "processor"),
                               ("exporters", "exporter")):
            listed = body.get(kind) or []
            if not listed and kind != "processors":
                raise ConfigError(f"service::pipelines::{pid}: must have at least one {singular}")
            for cid in listed:
                if cid not in resolved[kind]:
                    raise ConfigError(f"service::pipelines::{pid}: references {singular} "
                                      f"\"{cid}\" which is not configured")
    readers = (((service.get("telemetry") or {}).get("metrics") or {}).get("readers") or [])
    config["_telemetry"] = [((r.get("pull") or {}).get("exporter") or {}).get("prometheus")
                            for r in readers if isinstance(r, dict)]
    config["_resolved"] = resolved
    return config


def validate_components(resolved: dict) -> None:
    for cid, (ctype, body) in resolved["processors"].items():
        if ctype == "memory_limiter":
            if duration(body.get("check_interval", "0s")) <= 0:
                raise ConfigError(f"processors::{cid}: 'check_interval' must be greater than zero")
            limit, spike = body.get("limit_percentage", 0), body.get("spike_limit_percentage", 0)
            if not body.get("limit_mib") and not limit:
                raise ConfigError(f"processors::{cid}: 'limit_mib' or 'limit_percentage' must be "
                                  "greater than zero")
            if limit and (limit > 100 or spike > 100):
                raise ConfigError(f"processors::{cid}: 'limit_percentage' and "
                                  "'spike_limit_percentage' must be greater than zero and less "
                                  "than or equal to hundred")
            if limit and spike >= limit:
                raise ConfigError(f"processors::{cid}: 'spike_limit_percentage' must be smaller "
                                  "than 'limit_percentage'")
    for cid, (ctype, body) in resolved["exporters"].items():
        if ctype == "otlp_http":
            if not any(body.get(k) for k in ("endpoint", "logs_endpoint", "traces_endpoint",
                                            "metrics_endpoint")):
                raise ConfigError(f"exporters::{cid}: at least one endpoint must be specified")
            if body.get("encoding", "proto") not in ("proto", "json"):
                raise ConfigError(f"exporters::{cid}: invalid encoding "
                                  f"{body.get('encoding')!r}")
            if body.get("compression", "gzip") not in ("gzip", "none", "", "zstd", "snappy",
                                                      "deflate", "zlib", "lz4"):
                raise ConfigError(f"exporters::{cid}: unsupported compression type "
                                  f"{body.get('compression')!r}")
            for key in ("endpoint", "logs_endpoint", "traces_endpoint", "metrics_endpoint"):
                if body.get(key) and not re.match(r"https?://[^/]+", body[key]):
                    raise ConfigError(f"exporters::{cid}: invalid endpoint {body[key]!r}: "
                                      "must be a valid URL with http or https scheme")
        if ctype == "debug" and body.get("verbosity", "basic") not in ("basic", "normal",
                                                                        "detailed"):
            raise ConfigError(f"exporters::{cid}: unknown verbosity level "
                              f"{body.get('verbosity')!r}")
        if ctype == "prometheus" and not body.get("endpoint"):
            raise ConfigError(f"exporters::{cid}: endpoint must be specified")
    for cid, (ctype, body) in resolved["receivers"].items():
        if ctype == "otlp" and not (body.get("protocols") or {}):
            raise ConfigError(f"receivers::{cid}: must specify at least one protocol when using "
                              "the OTLP receiver")


def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return (host or "0.0.0.0"), int(port)


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.values: dict[tuple[str, tuple], float] = {}

    def add(self, name: str, labels: dict, n: float) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self.lock:
            self.values[key] = self.values.get(key, 0) + n

    def text(self) -> str:
        with self.lock:
            items = sorted(self.values.items())
        lines = []
        for (name, labels), value in items:
            body = ",".join(f'{k}="{v}"' for k, v in labels)
            lines.append(f"{name}{{{body}}} {value:g}")
        return "\n".join(lines) + "\n"


def prom_name(name: str, unit: str, counter: bool, suffixes: bool) -> str:
    out = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
    if suffixes:
        unit_word = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": "ratio"}.get(unit)
        if unit_word and not out.endswith(unit_word) and not (unit == "1" and counter):
            out += "_" + unit_word
        if counter and not out.endswith("_total"):
            out += "_total"
    return out


class Exporters:
    def __init__(self, resolved: dict, own: Counters):
        self.resolved = resolved
        self.own = own
        self.series: dict[tuple[str, tuple], tuple[str, float]] = {}  # prometheus exporter
        self.lock = threading.Lock()

    def export(self, cid: str, signal: str, request: dict) -> None:
        ctype, body = self.resolved["exporters"][cid]
        count = count_items(signal, request)
        try:
            getattr(self, ctype)(cid, body, signal, request)
            self.own.add(f"otelcol_exporter_sent_{ITEM[signal]}_total", {"exporter": cid}, count)
        except Exception as exc:  # noqa: BLE001 - the collector logs and counts the failure
            self.own.add(f"otelcol_exporter_send_failed_{ITEM[signal]}_total", {"exporter": cid},
                         count)
            print(f"error\texporterhelper: Exporting failed. Dropping data.\t"
                  f"{{\"exporter\": \"{cid}\", \"error\": \"{exc}\"}}", flush=True)

    def debug(self, cid, body, signal, request):
        names = {"traces": ("resource spans", "spans"), "metrics": ("resource metrics", "metrics"),
                 "logs": ("resource logs", "log records")}[signal]
        top = request.get(list(request)[0], []) if request else []
        print(f"info\t{signal.capitalize()}\t{{\"otelcol.component.id\": \"{cid}\", "
              f"\"{names[0]}\": {len(top)}, \"{names[1]}\": {count_items(signal, request)}}}",
              flush=True)

    def otlp_http(self, cid, body, signal, request):
        url = body.get(f"{signal}_endpoint") or body["endpoint"].rstrip("/") + f"/v1/{signal}"
        if body.get("encoding", "proto") == "json":
            data, ctype = json.dumps(request).encode(), "application/json"
        else:
            data, ctype = otlp_wire.encode(request, SIGNALS[signal]), "application/x-protobuf"
        headers = {"Content-Type": ctype, "User-Agent": f"OpenTelemetry Collector Contrib/"
                                                        f"{VERSION} (STAND-IN)"}
        if body.get("compression", "gzip") == "gzip":
            data, headers["Content-Encoding"] = gzip.compress(data), "gzip"
        headers.update({str(k): str(v) for k, v in (body.get("headers") or {}).items()})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        retry = (body.get("retry_on_failure") or {}).get("enabled", True)
        delay, last = 1.0, None
        for _ in range(5 if retry else 1):
            try:
                with opener.open(urllib.request.Request(url, data=data, headers=headers,
                                                        method="POST"),
                                 timeout=duration(body.get("timeout", "30s"))) as resp:
                    resp.read()
                    return
            except urllib.error.HTTPError as exc:
                last = f"{url}: HTTP {exc.code} {exc.read()[:200]!r}"
                if exc.code not in (429, 502, 503, 504):
                    break  # permanent, as the exporter treats other 4xx/5xx
            except OSError as exc:
                last = f"{url}: {exc}"
            time.sleep(delay)
            delay *= 1.5
        raise RuntimeError(last)

    def prometheus(self, cid, body, signal, request):
        if signal != "metrics":
            return
        suffixes = body.get("add_metric_suffixes", True)
        namespace = body.get("namespace", "")
        for rm in request.get("resourceMetrics", []):
            res = otlp_wire.attributes((rm.get("resource") or {}).get("attributes"))
            job = "/".join(str(res[k]) for k in ("service.namespace", "service.name") if k in res)
            base = {"job": job} if job else {}
            if "service.instance.id" in res:
                base["instance"] = str(res["service.instance.id"])
            for sm in rm.get("scopeMetrics", []):
                for metric in sm.get("metrics", []):
                    kind = "sum" if "sum" in metric else "gauge" if "gauge" in metric else None
                    if kind is None:
                        continue
                    counter = kind == "sum" and metric["sum"].get("isMonotonic", False)
                    name = prom_name(metric["name"], metric.get("unit", ""), counter, suffixes)
                    if namespace:
                        name = f"{namespace}_{name}"
                    for point in metric[kind].get("dataPoints", []):
                        labels = dict(base)
                        labels.update({re.sub(r"[^a-zA-Z0-9_]", "_", k): str(v) for k, v in
                                       otlp_wire.attributes(point.get("attributes")).items()})
                        value = float(point.get("asDouble", point.get("asInt", 0)))
                        with self.lock:
                            self.series[(name, tuple(sorted(labels.items())))] = (
                                "counter" if counter else "gauge", value)

    def prometheus_text(self) -> str:
        with self.lock:
            items = sorted(self.series.items())
        lines, typed = [], set()
        for (name, labels), (kind, value) in items:
            if name not in typed:
                lines.append(f"# TYPE {name} {kind}")
                typed.add(name)
            body = ",".join(f'{k}="{v}"' for k, v in labels)
            lines.append(f"{name}{{{body}}} {value:g}" if body else f"{name} {value:g}")
        return "\n".join(lines) + "\n"


ITEM = {"traces": "spans", "metrics": "metric_points", "logs": "log_records"}


def count_items(signal: str, request: dict) -> int:
    outer, inner, leaf = {"traces": ("resourceSpans", "scopeSpans", "spans"),
                          "metrics": ("resourceMetrics", "scopeMetrics", "metrics"),
                          "logs": ("resourceLogs", "scopeLogs", "logRecords")}[signal]
    return sum(len(s.get(leaf, [])) for r in request.get(outer, []) for s in r.get(inner, []))


def http_server(endpoint: str, handler) -> ThreadingHTTPServer:
    host, port = split_endpoint(endpoint)
    server = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def simple_handler(routes):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            path = self.path.split("?")[0]
            if path not in routes:
                return self.send(404, b"404 page not found\n", "text/plain")
            code, body, ctype = routes[path]()
            self.send(code, body, ctype)

        def send(self, code, body, ctype):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_HEAD = do_GET
    return Handler


def run(config: dict) -> int:
    resolved = config["_resolved"]
    service = config.get("service") or {}
    started = time.time()
    own = Counters()
    exporters = Exporters(resolved, own)
    pipelines = service.get("pipelines") or {}
    batches: dict[str, list] = {pid: [] for pid in pipelines}
    batch_lock = threading.Lock()

    def deliver(pid: str, signal: str, request: dict) -> None:
        for cid in pipelines[pid].get("exporters") or []:
            exporters.export(cid, signal, request)

    def flusher(pid: str, signal: str, interval: float) -> None:
        while True:
            time.sleep(interval)
            with batch_lock:
                pending, batches[pid] = batches[pid], []
            for request in pending:
                deliver(pid, signal, request)

    for pid, body in pipelines.items():
        signal = component_type(pid)[0]
        procs = [resolved["processors"][p] for p in body.get("processors") or []]
        timeouts = [duration(b.get("timeout", "200ms")) for t, b in procs if t == "batch"]
        if timeouts:
            threading.Thread(target=flusher, args=(pid, signal, min(timeouts)),
                             daemon=True).start()

    def receive(receiver: str, signal: str, request: dict) -> None:
        own.add(f"otelcol_receiver_accepted_{ITEM[signal]}_total",
                {"receiver": receiver, "transport": "http"}, count_items(signal, request))
        for pid, body in pipelines.items():
            if component_type(pid)[0] != signal or receiver not in (body.get("receivers") or []):
                continue
            batched = any(resolved["processors"][p][0] == "batch"
                          for p in body.get("processors") or [])
            if batched:
                with batch_lock:
                    batches[pid].append(request)
            else:
                deliver(pid, signal, request)

    for cid, (ctype, body) in resolved["extensions"].items():
        if ctype == "health_check" and cid in (service.get("extensions") or []):
            path = body.get("path", "/")
            status = lambda: (200, json.dumps({  # noqa: E731
                "status": "Server available", "upSince": time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                "uptime": f"{time.time() - started:.3f}s"}).encode(), "application/json")
            http_server(body.get("endpoint", "localhost:13133"), simple_handler({path: status}))
    for reader in config["_telemetry"]:
        if reader:
            endpoint = f"{reader.get('host', 'localhost')}:{reader.get('port', 8888)}"

            def own_metrics():
                text = own.text() + (f"otelcol_process_uptime_seconds_total "
                                     f"{time.time() - started:.3f}\n")
                return 200, text.encode(), "text/plain; version=0.0.4"
            http_server(endpoint, simple_handler({"/metrics": own_metrics}))
    for cid, (ctype, body) in resolved["exporters"].items():
        if ctype == "prometheus" and any(cid in (p.get("exporters") or [])
                                         for p in pipelines.values()):
            http_server(body["endpoint"], simple_handler({"/metrics": lambda: (
                200, exporters.prometheus_text().encode(), "text/plain; version=0.0.4")}))
    for cid, (ctype, body) in resolved["receivers"].items():
        if not any(cid in (p.get("receivers") or []) for p in pipelines.values()):
            continue
        protocols = body.get("protocols") or {}
        if "grpc" in protocols:
            print(f"warn\tSTAND-IN: the OTLP gRPC receiver of {cid!r} "
                  f"({(protocols['grpc'] or {}).get('endpoint', 'localhost:4317')}) is not "
                  "served", flush=True)
        if "http" in protocols:
            http_server((protocols["http"] or {}).get("endpoint", "localhost:4318"),
                        otlp_handler(cid, receive))
    print(f"info\tEverything is ready. Begin running and processing data. ({BANNER})", flush=True)
    while True:
        time.sleep(3600)


def otlp_handler(receiver: str, receive):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def send(self, code: int, body: bytes, ctype: str):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            signal = {"/v1/traces": "traces", "/v1/metrics": "metrics",
                      "/v1/logs": "logs"}.get(self.path.split("?")[0])
            if signal is None:
                return self.send(404, b"404 page not found\n", "text/plain")
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
                raw = gzip.decompress(raw)
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            try:
                if ctype == "application/json":
                    request = json.loads(raw or b"{}")
                elif ctype == "application/x-protobuf":
                    request = otlp_wire.decode(raw, SIGNALS[signal])
                else:
                    return self.send(415, "415 unsupported media type, supported: "
                                          "[application/json, application/x-protobuf]".encode(),
                                     "text/plain")
            except (ValueError, otlp_wire.WireError) as exc:
                return self.send(400, str(exc).encode(), "text/plain")
            receive(receiver, signal, request)
            if ctype == "application/json":
                return self.send(200, b"{}", "application/json")
            return self.send(200, b"", "application/x-protobuf")

        def do_GET(self):
            self.send(405, b"405 method not allowed, supported: [POST]", "text/plain")
    return Handler


def main(args: list[str]) -> int:
    if "--version" in args or "-v" in args:
        print(BANNER)
        return 0
    validate_only = bool(args) and args[0] == "validate"
    configs = []
    for i, a in enumerate(args):
        if a.startswith("--config="):
            configs.append(a.split("=", 1)[1])
        elif a == "--config" and i + 1 < len(args):
            configs.append(args[i + 1])
    if not configs:
        sys.stderr.write("Error: at least one config flag must be provided\n")
        return 1
    try:
        config = load(configs[-1])
    except OSError as exc:
        sys.stderr.write(f"Error: failed to get config: cannot resolve the configuration: {exc}\n")
        return 1
    except ConfigError as exc:
        sys.stderr.write(f"Error: invalid configuration: {exc}\n")
        return 1
    if validate_only:
        return 0
    return run(config)
