"""Tier limits: RPM, TPM, daily tokens and concurrency, per account. PLACEHOLDER until issue 4 lands."""

from __future__ import annotations

from litellm.integrations.custom_logger import CustomLogger

from .._config import Settings
from ..observability import Metrics


def build_limits_hook(settings: Settings, metrics: Metrics) -> CustomLogger:
    """The LiteLLM hook that admits, settles and reports limits."""
    return CustomLogger()
