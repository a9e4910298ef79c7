"""Observability: Prometheus metrics and OpenTelemetry traces (Langfuse, any OTLP collector) per request.

``build_observability_hook(settings, metrics)`` returns the LiteLLM callback (``ObservabilityHook``)
that records metrics and traces; its ``router`` carries ``GET /metrics``. Traces go to Langfuse only when
both keys are set, and to ``HEARTCODE_OTLP_ENDPOINT`` when it is set; with neither, no ``Tracing``
exists and no connection is ever made. ``LoopLagSampler`` measures how late the worker's event loop runs
(the gateway starts it with its other background tasks). See docs/observability.md for the metrics, the span attributes
and why the exporter is built this way.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._config import Settings
from ._gc import GcWatch
from ._loop_lag import LoopLagSampler
from .metrics import Metrics

if TYPE_CHECKING:
    from ._hook import ObservabilityHook
    from ._otlp import LANGFUSE_OTLP_PATH, Tracing, parse_headers

# The LiteLLM hook (and litellm itself, ~150 MB and ~3.5 s to import) and the tracing (OpenTelemetry SDK)
# load only when asked for: the tunnel process serves these metrics too and needs neither.
_LAZY = {
    "LANGFUSE_OTLP_PATH": "._otlp",
    "ObservabilityHook": "._hook",
    "Tracing": "._otlp",
    "parse_headers": "._otlp",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_tracing(settings: Settings, metrics: Metrics) -> Tracing | None:
    """The request tracing, or ``None`` unless Langfuse's keys or ``HEARTCODE_OTLP_ENDPOINT`` are set."""
    metrics.langfuse_enabled(settings.langfuse_enabled)
    if not settings.tracing_enabled:
        return None
    from ._otlp import Target, Tracing, langfuse_target, parse_headers

    targets = []
    if settings.langfuse_enabled:
        targets.append(langfuse_target(settings.langfuse_host, settings.langfuse_public_key, settings.langfuse_secret_key))
    if settings.otlp_endpoint:
        targets.append(Target("otlp", settings.otlp_endpoint, parse_headers(settings.otlp_headers.reveal())))
    return Tracing(
        targets,
        report=lambda target, result, count, queued: metrics.langfuse_events(result, count, queued=queued, target=target),
    )


def build_observability_hook(settings: Settings, metrics: Metrics) -> ObservabilityHook:
    """The LiteLLM hook that records metrics and traces for every request, with its ``/metrics`` router."""
    from ._hook import ObservabilityHook
    from ._route import metrics_router

    fleet = settings.fleet
    metrics.set_known_labels(
        tiers=list(settings.tiers),
        model_groups=list(fleet.groups),
        deployments={server.name: group for group, server in fleet.servers()},
    )
    # Spans still queued when the proxy stops are sent by ``hook.close``, which the gateway's shutdown
    # calls (``Gateway.stop``, run inside LiteLLM's app shutdown).
    return ObservabilityHook(
        manifest=fleet,
        metrics=metrics,
        tracing=build_tracing(settings, metrics),
        router=metrics_router(metrics, (settings.metrics_token, settings.master_key)),
    )


def watch_gc(metrics: Metrics) -> GcWatch:
    """Garbage-collection pauses of this process into ``metrics`` (``GcWatch.start`` begins timing)."""
    return GcWatch(metrics.gc_pause)


__all__ = [
    "LANGFUSE_OTLP_PATH",
    "GcWatch",
    "LoopLagSampler",
    "Metrics",
    "ObservabilityHook",
    "Tracing",
    "build_observability_hook",
    "build_tracing",
    "parse_headers",
    "watch_gc",
]
