"""One cut in LiteLLM 1.103.7's per-request router work, installed by ``gateway.build_gateway``.

After every answer LiteLLM's router calls ``Router._increment_deployment_usage`` twice (once from
``make_call``, once from its success callback) to count the deployment's tokens and requests per minute
for TPM/RPM limits. For a deployment with no such limit the method does nothing, but only after
building the deployment's whole model info (``get_router_model_info``: a pydantic ``TypeAdapter`` built
per call, a ``deepcopy``, provider lookups) to find that out: a py-spy profile of a worker serving plain
requests put 7.6% of its time there (bench/README.md, 3 Dec 2026). The fleet's deployments carry no
TPM/RPM limit (tiers are enforced by ``limits``, routing by ``fleet``), so every call was that no-op.

``skip_untracked_deployment_usage()`` wraps the method: when LiteLLM's own code answered None for a
deployment that exists, with something to count, that deployment has no limit to track; later calls for
it return None at once, as long as its entry in ``router.model_list`` is the same object and still
equal to the copy taken then (a deployment updated in place, replaced or removed is asked again).
Deployments with a limit are untouched: the original runs and counts as before.

**Guard.** The method must refer to exactly the names measured on LiteLLM 1.103.7 (the three ways it
answers None: no deployment, no limit, nothing to count); otherwise the cut logs an error and changes
nothing. tests/core/test_litellm_router.py checks both kinds of deployment on a real ``Router``.
"""

from __future__ import annotations

import copy
import functools
import logging
from typing import Any

from ._litellm_speed import _MARK, referenced_names

log = logging.getLogger("litellm_cloud.router")

_MEASURED = frozenset({
    "RPM", "RedisPipelineIncrementOperation", "RouterCacheEnum", "RoutingArgs", "TPM", "all",
    "async_increment_cache_pipeline", "async_set_cache", "cache", "deployment_has_io_token_limits", "format", "get",
    "get_deployment", "get_router_model_info", "get_utc_datetime", "int", "litellm.types.caching", "litellm_params",
    "model_dump", "redis_cache", "rpm", "strftime", "tpm", "ttl", "value", "zip",
})  # fmt: skip

_STATE = "_litellm_cloud_untracked"  # per router: {deployment id: (its model_list entry, a copy of it)}


def _entry(router: Any, deployment_id: str) -> Any:
    """The deployment's entry in ``router.model_list`` (the object LiteLLM builds ``Deployment`` from)."""
    idx = router.model_id_to_deployment_index_map.get(deployment_id)
    return None if idx is None else router.model_list[idx]


def _wrap(original: Any) -> Any:
    @functools.wraps(original)
    async def _increment_deployment_usage(self: Any, *, deployment_id: str, **kwargs: Any) -> str | None:
        untracked: dict[str, tuple[Any, Any]] = self.__dict__.setdefault(_STATE, {})
        known = untracked.get(deployment_id)
        entry = _entry(self, deployment_id)
        if known is not None and known[0] is entry and entry == known[1]:
            return None
        result: str | None = await original(self, deployment_id=deployment_id, **kwargs)
        counted = kwargs.get("total_tokens", 0) > 0 or kwargs.get("rpm_increment", 0) > 0
        if result is None and counted and entry is not None:
            untracked[deployment_id] = (entry, copy.deepcopy(entry))
        else:
            untracked.pop(deployment_id, None)
        return result

    setattr(_increment_deployment_usage, _MARK, original)
    return _increment_deployment_usage


def skip_untracked_deployment_usage() -> bool:
    """Install the wrapper above on ``litellm.Router`` (module docstring); True if active."""
    try:
        from litellm.router import Router
    except ImportError:  # pragma: no cover - LiteLLM without its router
        return False
    current = Router.__dict__.get("_increment_deployment_usage")
    original = getattr(current, _MARK, current)
    if original is None or referenced_names(original) != _MEASURED:
        log.error("LiteLLM's Router._increment_deployment_usage changed: every answer keeps its model-info lookups")
        return False
    if current is original:
        Router._increment_deployment_usage = _wrap(original)  # type: ignore[method-assign]
    return True
