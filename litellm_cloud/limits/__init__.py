"""Tier limits: requests and tokens per rolling minute, tokens per UTC day, requests in flight.

One limiter with one set of semantics (``limiter.py``) over a storage chosen by URI (``storage/``:
``memory://`` for one process, ``redis://`` shared by every replica, atomic by Lua). ``hook.py`` is the
LiteLLM edge (admit, settle, headers), ``metering.py`` reads the tokens a response used, ``subjects.py``
says whom a request counts against, ``usage.py`` serves ``GET /v1/usage``. See docs/limits.md.

``build_limits(settings, metrics)`` wires them into one ``TierLimits``: the limiter (whose lease
heartbeat ``gateway.Gateway.start`` starts), the hook and the usage router.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..observability import Metrics
from ._types import Cost, Limits, Usage
from .estimate import estimate_cost
from .hook import LimitsHook
from .limiter import Decision, Limiter, Ticket
from .storage import Storage, StorageError, storage_from_uri
from .subjects import Subjects

if TYPE_CHECKING:
    from fastapi import APIRouter

    from .._config import Settings


@dataclass(frozen=True)
class TierLimits:
    """The limiter and its two edges: the LiteLLM hook and the ``GET /v1/usage`` router."""

    limiter: Limiter
    hook: LimitsHook
    router: APIRouter


def install_keepalive_headers() -> bool:
    """The LiteLLM adaptation that keeps our headers and codes on streams it opens early for a keepalive
    (installed once, by the gateway); True if active."""
    from . import _keepalive

    return _keepalive.install()


def build_limits(settings: Settings, metrics: Metrics) -> TierLimits:
    """The limiter over the storage the settings name, its LiteLLM hook and its usage route."""
    from .usage import usage_router  # needs LiteLLM's proxy auth dependency: only where a proxy is built

    limiter = Limiter(
        storage_from_uri(settings.limits_storage), metrics, on_storage_error=settings.limits_on_storage_error
    )
    subjects = Subjects(settings.tiers, settings.limits_scope)
    return TierLimits(limiter, LimitsHook(limiter, subjects, metrics), usage_router(limiter, subjects))


__all__ = [
    "Cost",
    "Decision",
    "Limiter",
    "Limits",
    "LimitsHook",
    "Storage",
    "StorageError",
    "Subjects",
    "Ticket",
    "TierLimits",
    "Usage",
    "build_limits",
    "estimate_cost",
    "install_keepalive_headers",
    "storage_from_uri",
]
