"""Observability: Prometheus metrics and Langfuse traces for every request.

``build_observability_hook(settings, metrics)`` returns the LiteLLM callback (``ObservabilityHook``)
that records metrics and traces; its ``router`` carries ``GET /metrics``. Langfuse is used only when
both keys are set; otherwise no exporter exists and no connection is ever made. See
docs/observability.md for the metrics, the trace fields and why the exporter is our own.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._config import Settings
from .metrics import Metrics

if TYPE_CHECKING:
    from ._hook import ObservabilityHook
    from ._langfuse import LangfuseExporter

# The LiteLLM hook (and litellm itself, ~150 MB and ~3.5 s to import) and the Langfuse exporter (httpx)
# load only when asked for: the tunnel process serves these metrics too and needs neither.
_LAZY = {"ObservabilityHook": "._hook", "LangfuseExporter": "._langfuse"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_exporter(settings: Settings, metrics: Metrics) -> LangfuseExporter | None:
    """The Langfuse exporter, or ``None`` unless both Langfuse keys are set."""
    metrics.langfuse_enabled(settings.langfuse_enabled)
    if not settings.langfuse_enabled:
        return None
    from ._langfuse import LangfuseExporter

    return LangfuseExporter(
        settings.langfuse_host,
        settings.langfuse_public_key,
        settings.langfuse_secret_key,
        report=lambda result, count, queued: metrics.langfuse_events(result, count, queued=queued),
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
    return ObservabilityHook(
        manifest=fleet,
        metrics=metrics,
        exporter=build_exporter(settings, metrics),
        router=metrics_router(metrics, (settings.metrics_token, settings.master_key)),
    )


__all__ = ["LangfuseExporter", "Metrics", "ObservabilityHook", "build_exporter", "build_observability_hook"]
