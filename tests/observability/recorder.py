"""A fake Langfuse (or OTLP collector) on loopback: records every connection and request, decodes OTLP.

It answers ``POST .../v1/traces`` as an OTLP/HTTP receiver does (200 and an empty protobuf
``ExportTraceServiceResponse``), or with the statuses scripted in ``fail_with`` first (503, 429, ...), or
never (``hang``), or after ``delay`` seconds. Anything else gets 404, as a server without that endpoint would. Spans are decoded
with ``opentelemetry-proto`` from the requests it *accepted*, so a retried batch counts once.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

TRACES_SUFFIX = "/v1/traces"


@dataclass
class Received:
    """One HTTP request the recorder got, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0

    def spans(self) -> list[Span]:
        return decode(self.body)


@dataclass(frozen=True)
class Span:
    """One decoded OTLP span: ids as hex, attributes as Python values."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    scope: str
    resource: dict[str, Any]

    def prefixed(self, prefix: str) -> dict[str, Any]:
        """Attributes under ``prefix.`` with the prefix removed (Langfuse's metadata convention)."""
        return {k[len(prefix) + 1 :]: v for k, v in self.attributes.items() if k.startswith(prefix + ".")}

    @property
    def metadata(self) -> dict[str, Any]:
        return self.prefixed("langfuse.trace.metadata")

    def json(self, key: str) -> Any:
        """An attribute Langfuse parses as JSON (input, output, completion start time)."""
        return json.loads(self.attributes[key]) if key in self.attributes else None


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(x) for x in v.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def decode(body: bytes) -> list[Span]:
    """Every span of an OTLP/HTTP protobuf export request."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    out = []
    for rs in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(Span(
                    s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name, s.kind,
                    s.start_time_unix_nano, s.end_time_unix_nano,
                    {kv.key: _value(kv.value) for kv in s.attributes}, s.status.code, s.status.message,
                    ss.scope.name, resource,
                ))  # fmt: skip
    return out


@dataclass
class _State:
    hang: bool = False
    delay: float = 0.0
    fail_with: list[int] = field(default_factory=list)
    connections: int = 0
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        with self.state.lock:
            self.state.connections += 1
        return conn, addr


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        state = self.server.state
        received = Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        with state.lock:
            state.requests.append(received)
            scripted = state.fail_with.pop(0) if state.fail_with and self.path.endswith(TRACES_SUFFIX) else None
        if state.hang:
            state.release.wait(60)  # accepts and never answers
            return
        if state.delay:
            state.release.wait(state.delay)  # a slow receiver
        if not self.path.endswith(TRACES_SUFFIX):
            status, reply, kind = 404, b'{"message":"not found"}', "application/json"
        elif scripted is not None:
            status, reply, kind = scripted, b'{"message":"try again"}', "application/json"
        else:
            status, reply, kind = 200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf"
        received.status = status
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


class Recorder:
    """Start with ``with Recorder() as rec``; ``rec.url`` is the base URL to give as ``LANGFUSE_HOST``."""

    def __init__(self, *, hang: bool = False, delay: float = 0.0, fail_with: list[int] | None = None) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State(hang=hang, delay=delay, fail_with=list(fail_with or []))
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="recorder", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.state.release.set()
        self._server.shutdown()
        self._server.server_close()

    def fail_next(self, *statuses: int) -> None:
        """Answer the next trace exports with these statuses, in order."""
        with self._server.state.lock:
            self._server.state.fail_with.extend(statuses)

    @property
    def connections(self) -> int:
        with self._server.state.lock:
            return self._server.state.connections

    @property
    def requests(self) -> list[Received]:
        with self._server.state.lock:
            return list(self._server.state.requests)

    def spans(self) -> list[Span]:
        """Every span of every export the recorder accepted (200), in arrival order."""
        return [s for r in self.requests if r.status == 200 for s in r.spans()]

    def traces(self) -> dict[str, dict[str, Any]]:
        """Trace id -> {"root": the span without parent, "children": the others}."""
        out: dict[str, dict[str, Any]] = defaultdict(lambda: {"root": None, "children": []})
        for span in self.spans():
            if span.parent_span_id:
                out[span.trace_id]["children"].append(span)
            else:
                out[span.trace_id]["root"] = span
        return dict(out)
