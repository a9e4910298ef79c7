"""One request, one Langfuse trace: the ingestion events built from a ``RequestRecord``.

A served request becomes a ``trace-create`` plus a ``generation-create`` (tokens, deployment, time to
first token); a failed or refused one a ``trace-create`` plus an ``event-create`` whose level and status
message carry the error. The trace id is LiteLLM's call id, so a duplicate callback would update the
same trace instead of adding one. Content (``input``/``output``) is replaced by ``REDACTED`` when the
model group says so, or when the group is unknown.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ._record import RequestRecord

REDACTED = "[redacted]"
MAX_CONTENT_CHARS = 32_000  # keeps a batch far below Langfuse's 3.5 MB limit
_REFUSAL_STATUSES = frozenset({400, 401, 403, 404, 422, 429})


def iso(epoch: float) -> str:
    """Langfuse's timestamp format (UTC, ISO 8601 with Z)."""
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _bounded(content: Any) -> Any:
    if content is None:
        return None
    text = json.dumps(content, default=str, ensure_ascii=False)
    if len(text) <= MAX_CONTENT_CHARS:
        return content
    return text[:MAX_CONTENT_CHARS] + f"... [truncated, {len(text)} chars]"


def tags(record: RequestRecord) -> list[str]:
    """Filterable tags: tier, model group, outcome (and stream)."""
    out = [f"tier:{record.tier}", f"model_group:{record.model_group or 'unknown'}", f"outcome:{record.code}"]
    if record.stream:
        out.append("stream")
    return out


def trace_events(
    record: RequestRecord,
    *,
    redact: bool,
    now: float,
    new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> list[dict[str, Any]]:
    """The ingestion events of one request (envelopes with unique ids, bodies keyed by the trace id)."""
    trace_id = record.call_id or new_id()
    content_in = REDACTED if redact and record.input is not None else _bounded(record.input)
    content_out = REDACTED if redact and record.output is not None else _bounded(record.output)
    latency_ms = round(max(0.0, record.end - record.start) * 1000, 1)
    ttft_ms = round((record.first_token - record.start) * 1000, 1) if record.first_token else None
    metadata: dict[str, Any] = {
        "tier": record.tier,
        "key_hash": record.key_hash,
        "key_id": record.key_id,
        "model_group": record.model_group,
        "requested_model": record.requested_model,
        "deployment": record.deployment,
        "outcome": record.code,
        "status": record.status,
        "stream": record.stream,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "latency_ms": latency_ms,
        "time_to_first_token_ms": ttft_ms,
        "redacted": redact,
    }
    if record.error:
        metadata["error"] = record.error
    stamp = iso(now)
    trace = {
        "id": trace_id,
        "timestamp": iso(record.start),
        "name": record.kind,
        "userId": record.user_id,
        "input": content_in,
        "output": content_out if record.ok else {"error": record.code, "status": record.status},
        "metadata": metadata,
        "tags": tags(record),
    }
    events = [{"id": new_id(), "type": "trace-create", "timestamp": stamp, "body": trace}]
    if record.ok:
        generation = {
            "id": f"{trace_id}-gen",
            "traceId": trace_id,
            "name": record.model_group or record.requested_model or "unknown",
            "startTime": iso(record.start),
            "endTime": iso(record.end),
            "completionStartTime": iso(record.first_token) if record.first_token else None,
            "model": record.model_group or record.requested_model,
            "modelParameters": {k: str(v) for k, v in record.parameters.items()},
            "input": content_in,
            "output": content_out,
            "usage": {
                "input": record.prompt_tokens,
                "output": record.completion_tokens,
                "total": record.prompt_tokens + record.completion_tokens,
                "unit": "TOKENS",
            },
            "usageDetails": {"input": record.prompt_tokens, "output": record.completion_tokens},
            "level": "DEFAULT",
            "metadata": {"deployment": record.deployment, "tier": record.tier, "stream": record.stream},
        }
        events.append({"id": new_id(), "type": "generation-create", "timestamp": stamp, "body": generation})
    else:
        refusal = record.status in _REFUSAL_STATUSES
        event = {
            "id": f"{trace_id}-outcome",
            "traceId": trace_id,
            "name": "refused" if refusal else "failed",
            "startTime": iso(record.end),
            "level": "WARNING" if refusal else "ERROR",
            "statusMessage": f"{record.status} {record.code}: {record.error or ''}".strip(),
            "metadata": {"code": record.code, "status": record.status},
        }
        events.append({"id": new_id(), "type": "event-create", "timestamp": stamp, "body": event})
    return events
