"""``Tracing``: requests become OpenTelemetry spans, exported over OTLP/HTTP to Langfuse and collectors.

One private ``TracerProvider`` per gateway, never the global one: the global provider would also carry
spans of other libraries (LiteLLM's own OpenTelemetry hooks, HTTP client instrumentation) with their
attributes, raw keys included, and code elsewhere setting it would redirect ours. Spans are built after
the fact from a ``RequestRecord`` with the times LiteLLM measured (``start_span(start_time=...)``,
``end(end_time=...)``), with an explicit empty parent context so that no span active in the caller's
context can become their parent. Trace ids are random: LiteLLM's call id can be chosen by the client
(``x-litellm-call-id``), so a trace id made from it would let a client write into another's trace; the
call id is kept, scrubbed, in the trace's metadata instead.

Each export target (Langfuse; optionally any OTLP collector) gets its own ``SpanQueue``, so a collector
that hangs cannot hold Langfuse's traces back. Targets are built only when configured: without Langfuse
keys and without ``HEARTCODE_OTLP_ENDPOINT`` no ``Tracing`` exists at all (no thread, no connection).
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

from .._config import Secret
from ._queue import SpanQueue
from ._record import RequestRecord
from ._spans import SpanSpec, request_spans

#: Langfuse's OTLP/HTTP traces endpoint, under ``LANGFUSE_HOST``.
LANGFUSE_OTLP_PATH = "/api/public/otel/v1/traces"
#: The scope name our spans carry. Not ``langfuse-sdk...``: Langfuse treats those as its own SDK's spans.
SCOPE = "litellm-cloud"
#: ``(target, result, count, queued)``.
Report = Callable[[str, str, int, int], None]


@dataclass(frozen=True)
class Target:
    """Where spans go: a name for metrics and logs, the OTLP/HTTP traces URL, headers (secret values)."""

    name: str
    endpoint: str
    headers: Mapping[str, Secret] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Target({self.name!r}, {self.endpoint!r})"  # never the headers


def langfuse_target(host: str, public_key: Secret, secret_key: Secret) -> Target:
    """Langfuse's OTLP endpoint with basic auth ``public:secret``.

    ``x-langfuse-ingestion-version: 4`` asks Langfuse Cloud (v4) to show the spans in its observations
    table at once instead of up to 10 minutes later; servers that do not know it ignore it.
    """
    basic = base64.b64encode(f"{public_key.reveal()}:{secret_key.reveal()}".encode()).decode()
    return Target(
        "langfuse",
        host.rstrip("/") + LANGFUSE_OTLP_PATH,
        {"authorization": Secret(f"Basic {basic}"), "x-langfuse-ingestion-version": Secret("4")},
    )


def parse_headers(text: str) -> dict[str, Secret]:
    """``key=value,key2=value2`` (the ``OTEL_EXPORTER_OTLP_HEADERS`` format) into secret header values."""
    headers = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            headers[key.strip().lower()] = Secret(value.strip())
    return headers


def otlp_exporter(target: Target, timeout: float) -> OTLPSpanExporter:
    """The SDK's OTLP/HTTP protobuf exporter for ``target``; ``timeout`` bounds one export, retries included."""
    return OTLPSpanExporter(
        endpoint=target.endpoint,
        headers={k: v.reveal() for k, v in target.headers.items()},
        timeout=timeout,
        compression=Compression.NoCompression,
    )


class Tracing:
    """Builds one trace per request and hands its spans to every target's queue."""

    def __init__(
        self,
        targets: Sequence[Target],
        *,
        report: Report | None = None,
        exporter_factory: Callable[[Target], SpanExporter] | None = None,
        max_queue: int = 10_000,
        batch_size: int = 200,
        flush_interval: float = 1.0,
        export_timeout: float = 10.0,
    ) -> None:
        reporter = report or (lambda target, result, count, queued: None)
        make = exporter_factory or (lambda target: otlp_exporter(target, export_timeout))
        self.targets = tuple(targets)
        # Resource attributes chosen here: Resource.create() would merge OTEL_RESOURCE_ATTRIBUTES and
        # detectors (process command line...), which we do not vouch for.
        self._provider = TracerProvider(
            resource=Resource({"service.name": SCOPE}),
            sampler=ALWAYS_ON,  # not OTEL_TRACES_SAMPLER: an environment meant for another app
            span_limits=SpanLimits(max_span_attributes=128, max_attributes=128),
            shutdown_on_exit=False,  # the gateway closes us (see close), within its own bound
        )
        self._queues: list[SpanQueue] = []
        for target in self.targets:
            q = SpanQueue(
                make(target), name=target.name, max_queue=max_queue, batch_size=batch_size,
                flush_interval=flush_interval, report=functools.partial(reporter, target.name),
            )  # fmt: skip
            self._queues.append(q)
            self._provider.add_span_processor(q)
        self._tracer = self._provider.get_tracer(SCOPE)

    def __repr__(self) -> str:
        return f"Tracing({list(self.targets)!r})"

    def submit(self, record: RequestRecord, *, redact: bool) -> None:
        """Build the request's spans and queue them for every target; never waits for the network."""
        root = request_spans(record, redact=redact)
        self._emit(root, Context(), SpanKind.SERVER)

    def _emit(self, spec: SpanSpec, parent: Context, kind: SpanKind) -> None:
        span = self._tracer.start_span(
            spec.name, context=parent, kind=kind, attributes=dict(spec.attributes), start_time=spec.start_ns
        )
        if spec.error is not None:
            span.set_status(Status(StatusCode.ERROR, spec.error))
        child_context = set_span_in_context(span, Context())
        for child in spec.children:
            self._emit(child, child_context, SpanKind.INTERNAL)
        span.end(end_time=spec.end_ns)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queue has handed its spans to its exporter (tests and shutdown)."""
        return all(q.force_flush(int(timeout * 1000)) for q in self._queues)

    def close(self, timeout: float = 5.0) -> int:
        """Send what is queued to every target, at most ``timeout`` seconds each; spans left unsent."""
        left = sum(q.close(timeout) for q in self._queues)
        self._provider.shutdown()
        return left
