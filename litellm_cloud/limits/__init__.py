"""Tier limits: requests and tokens per rolling minute, tokens per UTC day, requests in flight.

One limiter with one set of semantics (``limiter.py``) over a storage chosen by URI (``storage/``:
``memory://`` for one process, ``redis://`` shared by every replica, atomic by Lua). ``hook.py`` is the
LiteLLM edge (admit, settle, headers); ``usage.py`` serves ``GET /v1/usage``. See docs/limits.md.
"""

from __future__ import annotations

from .._config import Settings
from ..observability import Metrics
from ._types import Cost, Limits, Usage
from .estimate import estimate_cost
from .hook import LimitsHook
from .limiter import Decision, Limiter, Ticket
from .storage import Storage, StorageError, storage_from_uri


def build_limits_hook(settings: Settings, metrics: Metrics) -> LimitsHook:
    """The LiteLLM hook that admits, settles and reports limits, with the storage the settings name."""
    from . import _keepalive

    _keepalive.install()  # our headers on streams LiteLLM opens early for a keepalive
    limiter = Limiter(
        storage_from_uri(settings.limits_storage), metrics, on_storage_error=settings.limits_on_storage_error
    )
    return LimitsHook(limiter, settings.tiers, metrics, scope=settings.limits_scope)


__all__ = [
    "Cost",
    "Decision",
    "Limiter",
    "Limits",
    "LimitsHook",
    "Storage",
    "StorageError",
    "Ticket",
    "Usage",
    "build_limits_hook",
    "estimate_cost",
    "storage_from_uri",
]
