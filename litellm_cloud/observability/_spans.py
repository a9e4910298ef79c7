"""One request, one trace: the OpenTelemetry spans of a ``RequestRecord``, in Langfuse's attribute mapping.

Pure data, no OpenTelemetry import: ``request_spans`` says what to export (names, times in nanoseconds,
attributes), ``_otlp.Tracing`` turns it into real spans. Every attribute is chosen here, from the record;
nothing of LiteLLM's metadata is copied, so no raw key can slip in.

A request is a root span (Langfuse: the trace and its first observation) named after the kind of call
(``chat``, ``embedding``, ``other``). A served request adds a child span of observation type
``generation`` (model group, tokens, deployment, time to first token). A refused or failed request is the
root span alone, with level ``WARNING`` (4xx) or ``ERROR`` (5xx) and a status message.

The attributes follow Langfuse's OpenTelemetry property mapping (langfuse.com/integrations/native/
opentelemetry, and its server's ``OtelIngestionProcessor``): ``langfuse.trace.*`` on the root for the
trace, ``langfuse.observation.*`` and ``gen_ai.*`` for observations. Values Langfuse parses as JSON
(input, output, completion start time) are JSON text. Content is replaced by ``REDACTED`` when the
model group says so, or when the group is unknown (the caller decides, see ``ObservabilityHook.redacts``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ._record import RequestRecord, scrub

REDACTED = "[redacted]"
MAX_CONTENT_CHARS = 32_000  # per field: keeps a batch of 200 spans far below the 4 MB Langfuse accepts
_REFUSAL_STATUSES = frozenset({400, 401, 403, 404, 422, 429})

AttributeValue = str | bool | int | float | tuple[str, ...]

# Langfuse's attribute names (the mapping its OTLP endpoint applies).
TRACE_NAME = "langfuse.trace.name"
USER_ID = "langfuse.user.id"
SESSION_ID = "langfuse.session.id"
TAGS = "langfuse.trace.tags"
TRACE_METADATA = "langfuse.trace.metadata"  # + ".<key>", one attribute per key
TRACE_INPUT = "langfuse.trace.input"
TRACE_OUTPUT = "langfuse.trace.output"
OBSERVATION_TYPE = "langfuse.observation.type"  # span | generation | event
OBSERVATION_METADATA = "langfuse.observation.metadata"  # + ".<key>"
LEVEL = "langfuse.observation.level"  # DEFAULT | WARNING | ERROR
STATUS_MESSAGE = "langfuse.observation.status_message"
INPUT = "langfuse.observation.input"
OUTPUT = "langfuse.observation.output"
COMPLETION_START_TIME = "langfuse.observation.completion_start_time"
# OpenTelemetry GenAI semantic conventions (Langfuse: model, modelParameters, usageDetails).
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_PARAMETER = "gen_ai.request"  # + ".<parameter>"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
HTTP_STATUS = "http.response.status_code"


@dataclass(frozen=True)
class SpanSpec:
    """One span to export: name, times (ns since the epoch), attributes, and an error status if any."""

    name: str
    start_ns: int
    end_ns: int
    attributes: Mapping[str, AttributeValue]
    error: str | None = None
    children: tuple[SpanSpec, ...] = field(default=())


def ns(epoch: float) -> int:
    """Nanoseconds since the epoch (OpenTelemetry's clock) from seconds."""
    return int(epoch * 1_000_000_000)


def iso(epoch: float) -> str:
    """UTC ISO 8601 with milliseconds and Z."""
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def content(value: Any, *, redact: bool) -> str | None:
    """Content as JSON text for Langfuse: ``REDACTED`` if ``redact``, bounded to ``MAX_CONTENT_CHARS``."""
    if value is None:
        return None
    if redact:
        return json.dumps(REDACTED)
    text = json.dumps(value, default=str, ensure_ascii=False)
    if len(text) <= MAX_CONTENT_CHARS:
        return text
    return json.dumps(text[:MAX_CONTENT_CHARS] + f"... [truncated, {len(text)} chars]", ensure_ascii=False)


def tags(record: RequestRecord) -> tuple[str, ...]:
    """Filterable tags: tier, model group, outcome (and stream)."""
    out = (f"tier:{record.tier}", f"model_group:{record.model_group or 'unknown'}", f"outcome:{record.code}")
    return (*out, "stream") if record.stream else out


def metadata(record: RequestRecord, *, redact: bool) -> dict[str, AttributeValue]:
    """The trace's metadata (what dashboards filter on); keys without a value are left out."""
    values: dict[str, AttributeValue | None] = {
        "tier": record.tier,
        "key_hash": record.key_hash,
        "key_id": record.key_id,
        "model_group": record.model_group,
        "requested_model": record.requested_model or None,
        "deployment": record.deployment,
        "outcome": record.code,
        "status": record.status,
        "stream": record.stream,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "latency_ms": round(max(0.0, record.end - record.start) * 1000, 1),
        "time_to_first_token_ms": round((record.first_token - record.start) * 1000, 1) if record.first_token else None,
        "redacted": redact,
        "error": record.error,
        "call_id": scrub(record.call_id, 64) or None,  # the client may choose it (x-litellm-call-id)
    }
    return {k: v for k, v in values.items() if v is not None}


def _with(attributes: dict[str, AttributeValue], **optional: AttributeValue | None) -> dict[str, AttributeValue]:
    for key, value in optional.items():
        if value is not None:
            attributes[key] = value
    return attributes


def _parameter(value: Any) -> AttributeValue:
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return json.dumps(value, default=str)


def request_spans(record: RequestRecord, *, redact: bool) -> SpanSpec:
    """The root span of one request, its generation (served requests) as its child."""
    start, end = ns(record.start), ns(max(record.end, record.start))
    content_in = content(record.input, redact=redact)
    content_out = content(record.output, redact=redact) if record.ok else json.dumps(
        {"error": record.code, "status": record.status}
    )
    root: dict[str, AttributeValue] = {
        TRACE_NAME: record.kind,
        TAGS: tags(record),
        OBSERVATION_TYPE: "span",
        HTTP_STATUS: record.status,
        **{f"{TRACE_METADATA}.{k}": v for k, v in metadata(record, redact=redact).items()},
    }
    _with(root, **{USER_ID: record.user_id, SESSION_ID: record.key_id, TRACE_INPUT: content_in,
                   TRACE_OUTPUT: content_out})  # fmt: skip
    if record.ok:
        root[LEVEL] = "DEFAULT"
        return SpanSpec(record.kind, start, end, root, children=(_generation(record, content_in, content_out),))
    refusal = record.status in _REFUSAL_STATUSES
    message = f"{record.status} {record.code}: {record.error or ''}".strip().rstrip(":")
    root[LEVEL] = "WARNING" if refusal else "ERROR"
    root[STATUS_MESSAGE] = message
    return SpanSpec(record.kind, start, end, root, error=None if refusal else message)


def _generation(record: RequestRecord, content_in: str | None, content_out: str | None) -> SpanSpec:
    model = record.model_group or record.requested_model or "unknown"
    attributes: dict[str, AttributeValue] = {
        OBSERVATION_TYPE: "generation",
        REQUEST_MODEL: model,
        INPUT_TOKENS: record.prompt_tokens,
        OUTPUT_TOKENS: record.completion_tokens,
        LEVEL: "DEFAULT",
        f"{OBSERVATION_METADATA}.tier": record.tier,
        f"{OBSERVATION_METADATA}.stream": record.stream,
        **{f"{REQUEST_PARAMETER}.{k}": _parameter(v) for k, v in record.parameters.items()},
    }
    first = json.dumps(iso(record.first_token)) if record.first_token else None
    _with(attributes, **{INPUT: content_in, OUTPUT: content_out, COMPLETION_START_TIME: first,
                         f"{OBSERVATION_METADATA}.deployment": record.deployment})  # fmt: skip
    return SpanSpec(model, ns(record.start), ns(max(record.end, record.start)), attributes)
