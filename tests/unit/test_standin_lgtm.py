"""
The Loki, Grafana and OTel collector STAND-INS (tests/standins/{loki,grafana,otel-collector}: not
Grafana's or the OpenTelemetry project's servers) against the rendered tree of every environment:
they accept the rendered configuration, refuse what the real servers refuse for the keys they
implement, and, run here as processes (ports moved to free ones, nothing else changed), serve what
the stack uses: a pushed line and an OTLP log sent through the collector come back from Loki,
the collector's Prometheus exporter shows a received metric, Grafana provisions the rendered
datasources and dashboard and checks each datasource by asking its URL. Their images (user,
paths, entrypoint) are checked by test_images.py and run in the converge tier's all-services
machine.
"""

from __future__ import annotations

import base64
import gzip
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from mnemos_provision import render, secret_store
from mnemos_provision.settings import validate
from tests.conftest import REPO, need
from tests.unit.test_render import ENVIRONMENTS, env_data, free_port, wait_for, write_tree

pytestmark = pytest.mark.unit

STANDINS = REPO / "tests/standins"
sys.path.insert(0, str(STANDINS))  # otlp_wire, as the images have it beside each server


def load(name: str, directory: str):
    spec = importlib.util.spec_from_file_location(name, STANDINS / directory / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


loki = load("loki_standin", "loki")
otelcol = load("otelcol_standin", "otel-collector")
grafana = load("grafana_standin", "grafana")
import otlp_wire  # noqa: E402


@pytest.fixture(scope="module", params=list(ENVIRONMENTS))
def tree(request, tmp_path_factory):
    settings = validate(env_data(request.param))
    root = tmp_path_factory.mktemp(request.param) / "mnemos"
    write_tree(root, render.render_tree(settings, "/home/dev", secret_store.complete({}, {})))
    return root


def test_the_rendered_configs_are_accepted(tree):
    loki.load_config(str(tree / "config/loki/loki-config.yaml"))
    config = otelcol.load(str(tree / "config/otel-collector.yaml"))
    assert config["_resolved"]["exporters"]["otlp_http/loki"][0] == "otlp_http"
    sources = grafana.provision_datasources(str(tree / "config/grafana/datasources"))
    assert {(s["uid"], s["url"]) for s in sources} == {("prometheus", "http://prometheus:9090"),
                                                       ("loki", "http://loki:3100")}


def mutated(tree: Path, relative: str, tmp_path: Path, change) -> str:
    data = yaml.safe_load((tree / relative).read_text())
    change(data)
    path = tmp_path / Path(relative).name
    path.write_text(yaml.safe_dump(data))
    return str(path)


LOKI_REFUSED = {
    "an unknown block": (lambda c: c.update(no_such_block={}), "field no_such_block not found"),
    "retention without a delete-request store": (
        lambda c: c["compactor"].pop("delete_request_store"), "delete-request-store"),
    "a 7-day index period": (
        lambda c: c["schema_config"]["configs"][0]["index"].update(period="168h"),
        "index.period: 168h"),
    "structured metadata on schema v12": (
        lambda c: c["schema_config"]["configs"][0].update(schema="v12"), "schema v13 is required"),
    "a retention that is not a duration": (
        lambda c: c["limits_config"].update(retention_period="31 days"),
        "limits_config.retention_period"),
    "a boolean written as a string": (
        lambda c: c.update(auth_enabled="no"), "auth_enabled"),
}


@pytest.mark.parametrize("case", sorted(LOKI_REFUSED))
def test_loki_refuses_what_loki_refuses(tree, tmp_path, case):
    change, message = LOKI_REFUSED[case]
    path = mutated(tree, "config/loki/loki-config.yaml", tmp_path, change)
    with pytest.raises(loki.ConfigError, match=re.escape(message)):
        loki.load_config(path)


COLLECTOR_REFUSED = {
    "an unknown top-level key": (lambda c: c.update(pipelines={}), "'' has invalid keys"),
    "a pipeline naming an exporter not configured": (
        lambda c: c["exporters"].pop("otlp_http/loki"),
        'references exporter "otlp_http/loki" which is not configured'),
    "a key the exporter does not have": (
        lambda c: c["exporters"]["otlp_http/loki"].update(url="http://loki:3100"),
        "has invalid keys: url"),
    "an unknown component type": (
        lambda c: c["exporters"].update({"lokiexporter": {}}), 'unknown type: "lokiexporter"'),
    "a spike limit above the limit": (
        lambda c: c["processors"]["memory_limiter"].update(spike_limit_percentage=90),
        "'spike_limit_percentage' must be smaller"),
    "a pipeline without receivers": (
        lambda c: c["service"]["pipelines"]["logs"].update(receivers=[]),
        "must have at least one receiver"),
    "an extension not configured": (
        lambda c: c["extensions"].clear(), 'references extension "health_check"'),
}


@pytest.mark.parametrize("case", sorted(COLLECTOR_REFUSED))
def test_the_collector_refuses_what_the_collector_refuses(tree, tmp_path, case):
    change, message = COLLECTOR_REFUSED[case]
    path = mutated(tree, "config/otel-collector.yaml", tmp_path, change)
    with pytest.raises(otelcol.ConfigError, match=re.escape(message)):
        otelcol.load(path)


def test_grafana_refuses_a_malformed_or_contradictory_datasource_file(tree, tmp_path):
    (tmp_path / "bad.yaml").write_text("apiVersion: 1\ndatasources:\n  - name: [unclosed\n")
    with pytest.raises(grafana.StartError, match="Datasource provisioning error"):
        grafana.provision_datasources(str(tmp_path))
    data = yaml.safe_load((tree / "config/grafana/datasources/datasources.yml").read_text())
    for ds in data["datasources"]:
        ds["isDefault"] = True
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(grafana.StartError, match="Only one datasource per organization"):
        grafana.provision_datasources(str(tmp_path))


# ------------------------------------------------------------------ the three running together

def get(url: str, auth: str = "", data: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, data=data, headers=dict(headers or {}))
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """Loki, the collector and Grafana started here on the dev tree's rendered files, each port
    moved to a free one and the service names pointed at 127.0.0.1 (nothing else changed)."""
    root = tmp_path_factory.mktemp("lgtm") / "mnemos"
    write_tree(root, render.render_tree(validate(env_data("dev")), "/home/dev",
                                        secret_store.complete({}, {})))
    work = root.parent
    ports = {k: free_port() for k in ("loki", "http", "health", "own", "exported", "grafana",
                                      "prometheus")}
    config = yaml.safe_load((root / "config/loki/loki-config.yaml").read_text())
    config["server"]["http_listen_port"] = ports["loki"]
    text = yaml.safe_dump(config).replace("/loki", str(work / "loki-data"))
    (work / "loki.yaml").write_text(text)
    config = yaml.safe_load((root / "config/otel-collector.yaml").read_text())
    config["extensions"]["health_check"]["endpoint"] = f"127.0.0.1:{ports['health']}"
    config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] = f"127.0.0.1:{ports['http']}"
    config["exporters"]["prometheus"]["endpoint"] = f"127.0.0.1:{ports['exported']}"
    config["exporters"]["otlp_http/loki"]["endpoint"] = f"http://127.0.0.1:{ports['loki']}/otlp"
    reader = config["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]
    reader["prometheus"].update(host="127.0.0.1", port=ports["own"])
    (work / "otel.yaml").write_text(yaml.safe_dump(config))
    home = work / "grafana-home"
    (home / "conf").mkdir(parents=True)
    shutil.copy(STANDINS / "grafana/defaults.ini", home / "conf/defaults.ini")
    provisioning = work / "provisioning"
    shutil.copytree(root / "config/grafana/datasources", provisioning / "datasources")
    shutil.copytree(root / "config/grafana/provisioning", provisioning / "dashboards")
    sources = provisioning / "datasources/datasources.yml"
    sources.write_text(sources.read_text()
                       .replace("http://loki:3100", f"http://127.0.0.1:{ports['loki']}")
                       .replace("http://prometheus:9090",
                                f"http://127.0.0.1:{ports['prometheus']}"))
    provider = provisioning / "dashboards/dashboards.yml"
    provider.write_text(provider.read_text().replace("/var/lib/grafana/dashboards",
                                                     str(root / "config/grafana/dashboards")))
    env = {**os.environ, "GF_SECURITY_ADMIN_USER": "admin", "GF_SECURITY_ADMIN_PASSWORD": "pw-1",
           "GF_SERVER_HTTP_PORT": str(ports["grafana"]), "PYTHONPATH": str(STANDINS)}
    python = [sys.executable, "-c", "import sys, runpy; sys.argv[0] = sys.argv[1]; "
              "sys.path.insert(0, sys.argv[2]); m = __import__(sys.argv[3]); "
              "sys.exit(m.main(sys.argv[4:]))"]
    need("prometheus")  # Debian's real Prometheus (the Prometheus stand-in's), for Grafana to ask
    (work / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\n")
    procs = [
        subprocess.Popen(["prometheus", f"--config.file={work / 'prometheus.yml'}",
                          f"--storage.tsdb.path={work / 'prometheus-data'}",
                          f"--web.listen-address=127.0.0.1:{ports['prometheus']}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([*python, "loki", str(STANDINS / "loki"), "loki_standin",
                          f"-config.file={work / 'loki.yaml'}"], env=env),
        subprocess.Popen([*python, "otelcol", str(STANDINS / "otel-collector"), "otelcol_standin",
                          f"--config={work / 'otel.yaml'}"], env=env,
                         stdout=open(work / "otel.log", "w")),
        subprocess.Popen([*python, "grafana", str(STANDINS / "grafana"), "grafana_standin",
                          "server", f"--homepath={home}",
                          f"--config={root / 'config/grafana/grafana.ini'}", "--packaging=docker",
                          f"cfg:default.paths.data={work / 'grafana-data'}",
                          f"cfg:default.paths.provisioning={provisioning}"], env=env),
    ]
    try:
        assert wait_for(lambda: get(f"http://127.0.0.1:{ports['loki']}/ready")[0] == 200)
        assert wait_for(lambda: get(f"http://127.0.0.1:{ports['health']}/")[0] == 200)
        assert wait_for(lambda: get(f"http://127.0.0.1:{ports['grafana']}/api/health")[0] == 200)
        assert wait_for(lambda: get(f"http://127.0.0.1:{ports['prometheus']}/-/ready")[0] == 200)
        yield {"ports": ports, "work": work, "procs": procs}
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


def loki_query(ports, selector: str) -> dict:
    q = urllib.parse.quote(selector)
    code, body = get(f"http://127.0.0.1:{ports['loki']}/loki/api/v1/query_range?query={q}"
                     f"&start={time.time_ns() - 60 * 10**9}&end={time.time_ns() + 10**9}")
    assert code == 200, body
    return json.loads(body)


def test_loki_returns_a_pushed_line_and_refuses_a_stream_without_labels(running):
    ports = running["ports"]
    mark = f"unit-{time.time_ns()}"
    push = {"streams": [{"stream": {"job": "unit"}, "values": [[str(time.time_ns()), mark]]}]}
    code, _ = get(f"http://127.0.0.1:{ports['loki']}/loki/api/v1/push",
                  data=json.dumps(push).encode(), headers={"Content-Type": "application/json"})
    assert code == 204
    streams = loki_query(ports, '{job="unit"}')["data"]["result"]
    assert [s["stream"] for s in streams if mark in str(s["values"])] == [
        {"job": "unit", "service_name": "unit"}]
    push["streams"][0]["stream"] = {}
    code, body = get(f"http://127.0.0.1:{ports['loki']}/loki/api/v1/push",
                     data=json.dumps(push).encode(), headers={"Content-Type": "application/json"})
    assert code == 400 and b"at least one label pair" in body


def test_an_otlp_log_goes_through_the_collector_to_loki(running):
    """Sent as protobuf to the collector; the collector's otlp_http exporter sends it on as the real
    one does (protobuf, gzip) to Loki's /otlp/v1/logs; Loki makes service.name a label."""
    ports = running["ports"]
    mark = f"otlp-{time.time_ns()}"
    request = {"resourceLogs": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "unit-otlp"}}]},
        "scopeLogs": [{"logRecords": [{"timeUnixNano": str(time.time_ns()),
                                        "body": {"stringValue": mark},
                                        "attributes": [{"key": "http.route",
                                                        "value": {"stringValue": "/x"}}]}]}]}]}
    code, _ = get(f"http://127.0.0.1:{ports['http']}/v1/logs",
                  data=otlp_wire.encode(request, "ExportLogsServiceRequest"),
                  headers={"Content-Type": "application/x-protobuf"})
    assert code == 200
    found: list = []
    assert wait_for(lambda: found.extend(loki_query(ports, '{service_name="unit-otlp"}')
                                         ["data"]["result"]) or mark in json.dumps(found), 10), \
        (running["work"] / "otel.log").read_text()
    stream = next(s for s in found if mark in json.dumps(s))
    assert stream["values"][0][2] == {"http_route": "/x"}  # structured metadata
    code, own = get(f"http://127.0.0.1:{ports['own']}/metrics")
    assert b'otelcol_exporter_sent_log_records_total{exporter="otlp_http/loki"}' in own


def test_the_collector_exports_a_received_metric_for_prometheus(running):
    ports = running["ports"]
    request = {"resourceMetrics": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "unit"}}]},
        "scopeMetrics": [{"metrics": [{"name": "unit.requests", "sum": {
            "isMonotonic": True, "aggregationTemporality": 2,
            "dataPoints": [{"asInt": "7"}]}}]}]}]}
    code, _ = get(f"http://127.0.0.1:{ports['http']}/v1/metrics",
                  data=gzip.compress(json.dumps(request).encode()),
                  headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert code == 200
    seen: list[bytes] = []

    def exported() -> bool:
        seen.append(get(f"http://127.0.0.1:{ports['exported']}/metrics")[1])
        return b'unit_requests_total{job="unit"} 7' in seen[-1]
    assert wait_for(exported, 10), seen[-1:]
    code, _ = get(f"http://127.0.0.1:{ports['http']}/v1/traces", data=b"x",
                  headers={"Content-Type": "text/plain"})
    assert code == 415


def test_grafana_provisions_and_checks_each_datasource_at_its_url(running):
    ports = running["ports"]
    base = f"http://127.0.0.1:{ports['grafana']}"
    assert get(f"{base}/api/datasources", auth="admin:wrong")[0] == 401
    code, body = get(f"{base}/api/datasources", auth="admin:pw-1")
    assert code == 200 and {d["uid"] for d in json.loads(body)} == {"prometheus", "loki"}
    for uid, what in (("loki", "Loki"), ("prometheus", "Prometheus")):  # the real Prometheus
        code, body = get(f"{base}/api/datasources/uid/{uid}/health", auth="admin:pw-1")
        assert (code, json.loads(body)) == (200, {
            "status": "OK", "message": f"Successfully queried the {what} API."}), body
    # where nothing answers at the datasource's URL, its check fails
    ok, message = grafana.check_datasource({"type": "loki", "url": f"http://127.0.0.1:{free_port()}"})
    assert not ok and message.startswith("There was an error returned querying the Loki API."), \
        message
    code, body = get(f"{base}/api/search", auth="admin:pw-1")
    assert [d["uid"] for d in json.loads(body)] == ["mnemos-stack-health"]
