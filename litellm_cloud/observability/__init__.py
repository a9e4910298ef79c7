"""Observability: Prometheus metrics and Langfuse traces. PLACEHOLDER until issue 7 lands."""

from __future__ import annotations

from litellm.integrations.custom_logger import CustomLogger

from .._config import Settings
from .metrics import Metrics


def build_observability_hook(settings: Settings, metrics: Metrics) -> CustomLogger:
    """The LiteLLM hook that records metrics and traces for every request."""
    return CustomLogger()


__all__ = ["Metrics", "build_observability_hook"]
