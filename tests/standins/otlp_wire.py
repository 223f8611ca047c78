"""
STAND-IN helper shared by the Loki and OTel collector stand-ins (copied into both images): OTLP
messages in protobuf's wire format, read and written with the standard library only, for the
fields of open-telemetry/opentelemetry-proto's `collector/{logs,trace,metrics}/v1/*_service.proto`,
`logs/v1/logs.proto`, `trace/v1/trace.proto`, `metrics/v1/metrics.proto` and
`common/v1/common.proto` that the stand-ins use. Messages are handled in their OTLP/JSON shape
(lowerCamelCase names, trace and span ids as hex, 64-bit integers as decimal strings), which is
also what OTLP/HTTP with `Content-Type: application/json` carries.
"""

from __future__ import annotations

import struct

# message -> {field number: (json name, kind, repeated)}; kind: a message name, or a scalar
# (string, bytes, hexbytes, bool, int64, uint32, enum, double, fixed64, fixed32, sfixed64)
SCHEMA: dict[str, dict[int, tuple[str, str, bool]]] = {
    "ExportLogsServiceRequest": {1: ("resourceLogs", "ResourceLogs", True)},
    "ExportTraceServiceRequest": {1: ("resourceSpans", "ResourceSpans", True)},
    "ExportMetricsServiceRequest": {1: ("resourceMetrics", "ResourceMetrics", True)},
    "Resource": {1: ("attributes", "KeyValue", True),
                 2: ("droppedAttributesCount", "uint32", False)},
    "InstrumentationScope": {1: ("name", "string", False), 2: ("version", "string", False),
                             3: ("attributes", "KeyValue", True)},
    "KeyValue": {1: ("key", "string", False), 2: ("value", "AnyValue", False)},
    "AnyValue": {1: ("stringValue", "string", False), 2: ("boolValue", "bool", False),
                 3: ("intValue", "int64", False), 4: ("doubleValue", "double", False),
                 5: ("arrayValue", "ArrayValue", False), 6: ("kvlistValue", "KeyValueList", False),
                 7: ("bytesValue", "bytes", False)},
    "ArrayValue": {1: ("values", "AnyValue", True)},
    "KeyValueList": {1: ("values", "KeyValue", True)},
    "ResourceLogs": {1: ("resource", "Resource", False), 2: ("scopeLogs", "ScopeLogs", True),
                     3: ("schemaUrl", "string", False)},
    "ScopeLogs": {1: ("scope", "InstrumentationScope", False),
                  2: ("logRecords", "LogRecord", True), 3: ("schemaUrl", "string", False)},
    "LogRecord": {1: ("timeUnixNano", "fixed64", False), 2: ("severityNumber", "enum", False),
                  3: ("severityText", "string", False), 5: ("body", "AnyValue", False),
                  6: ("attributes", "KeyValue", True),
                  7: ("droppedAttributesCount", "uint32", False),
                  8: ("flags", "fixed32", False), 9: ("traceId", "hexbytes", False),
                  10: ("spanId", "hexbytes", False), 11: ("observedTimeUnixNano", "fixed64", False),
                  12: ("eventName", "string", False)},
    "ResourceSpans": {1: ("resource", "Resource", False), 2: ("scopeSpans", "ScopeSpans", True),
                      3: ("schemaUrl", "string", False)},
    "ScopeSpans": {1: ("scope", "InstrumentationScope", False), 2: ("spans", "Span", True),
                   3: ("schemaUrl", "string", False)},
    "Span": {1: ("traceId", "hexbytes", False), 2: ("spanId", "hexbytes", False),
             3: ("traceState", "string", False), 4: ("parentSpanId", "hexbytes", False),
             5: ("name", "string", False), 6: ("kind", "enum", False),
             7: ("startTimeUnixNano", "fixed64", False), 8: ("endTimeUnixNano", "fixed64", False),
             9: ("attributes", "KeyValue", True)},
    "ResourceMetrics": {1: ("resource", "Resource", False),
                        2: ("scopeMetrics", "ScopeMetrics", True),
                        3: ("schemaUrl", "string", False)},
    "ScopeMetrics": {1: ("scope", "InstrumentationScope", False), 2: ("metrics", "Metric", True),
                     3: ("schemaUrl", "string", False)},
    "Metric": {1: ("name", "string", False), 2: ("description", "string", False),
               3: ("unit", "string", False), 5: ("gauge", "Gauge", False),
               7: ("sum", "Sum", False)},
    "Gauge": {1: ("dataPoints", "NumberDataPoint", True)},
    "Sum": {1: ("dataPoints", "NumberDataPoint", True),
            2: ("aggregationTemporality", "enum", False), 3: ("isMonotonic", "bool", False)},
    "NumberDataPoint": {7: ("attributes", "KeyValue", True),
                        2: ("startTimeUnixNano", "fixed64", False),
                        3: ("timeUnixNano", "fixed64", False), 4: ("asDouble", "double", False),
                        6: ("asInt", "sfixed64", False)},
}
VARINT = {"bool", "int64", "uint32", "enum"}
FIXED64 = {"double", "fixed64", "sfixed64"}


class WireError(ValueError):
    pass


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(data):
            raise WireError("truncated varint")
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise WireError("varint too long")


def decode(data: bytes, message: str) -> dict:
    """Protobuf bytes of `message` -> its OTLP/JSON shape (unknown fields skipped, as protobuf
    does)."""
    fields = SCHEMA[message]
    out: dict = {}
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            raw, i = _varint(data, i)
        elif wire == 1:
            raw, i = data[i:i + 8], i + 8
        elif wire == 5:
            raw, i = data[i:i + 4], i + 4
        elif wire == 2:
            length, i = _varint(data, i)
            raw, i = data[i:i + length], i + length
            if i > len(data):
                raise WireError("truncated field")
        else:
            raise WireError(f"unsupported wire type {wire}")
        if number not in fields:
            continue
        name, kind, repeated = fields[number]
        value = _scalar(kind, raw) if kind not in SCHEMA else decode(raw, kind)  # type: ignore
        if repeated:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    return out


def _scalar(kind: str, raw):
    if kind == "string":
        return raw.decode("utf-8")
    if kind == "bytes":
        import base64
        return base64.b64encode(raw).decode()
    if kind == "hexbytes":
        return raw.hex()
    if kind == "bool":
        return bool(raw)
    if kind in ("int64",):
        return str(raw - (1 << 64) if raw >= 1 << 63 else raw)
    if kind in ("uint32", "enum"):
        return raw
    if kind == "double":
        return struct.unpack("<d", raw)[0]
    if kind == "fixed64":
        return str(struct.unpack("<Q", raw)[0])
    if kind == "sfixed64":
        return str(struct.unpack("<q", raw)[0])
    if kind == "fixed32":
        return struct.unpack("<I", raw)[0]
    raise WireError(kind)


def _put_varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode(value: dict, message: str) -> bytes:
    """The OTLP/JSON shape of `message` -> protobuf bytes."""
    out = bytearray()
    for number, (name, kind, repeated) in SCHEMA[message].items():
        if name not in value:
            continue
        for item in (value[name] if repeated else [value[name]]):
            if kind in SCHEMA:
                body = encode(item, kind)
                out += _put_varint(number << 3 | 2) + _put_varint(len(body)) + body
            elif kind in VARINT:
                out += _put_varint(number << 3) + _put_varint(int(item))
            elif kind in FIXED64:
                fmt = {"double": "<d", "fixed64": "<Q", "sfixed64": "<q"}[kind]
                out += _put_varint(number << 3 | 1) + struct.pack(
                    fmt, float(item) if kind == "double" else int(item))
            elif kind == "fixed32":
                out += _put_varint(number << 3 | 5) + struct.pack("<I", int(item))
            else:
                if kind == "hexbytes":
                    body = bytes.fromhex(item)
                elif kind == "bytes":
                    import base64
                    body = base64.b64decode(item)
                else:
                    body = str(item).encode("utf-8")
                out += _put_varint(number << 3 | 2) + _put_varint(len(body)) + body
    return bytes(out)


def any_value(value: dict | None):
    """An AnyValue's Python value (a string for a log line)."""
    if not value:
        return ""
    for key in ("stringValue", "boolValue", "intValue", "doubleValue", "bytesValue"):
        if key in value:
            return value[key]
    if "arrayValue" in value:
        return [any_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return {kv["key"]: any_value(kv.get("value"))
                for kv in value["kvlistValue"].get("values", [])}
    return ""


def attributes(kvs: list | None) -> dict:
    return {kv["key"]: any_value(kv.get("value")) for kv in kvs or []}
