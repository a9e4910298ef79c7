"""Fleet behaviour at the LiteLLM edge: a malformed request is a 400; a retry goes to another server;
when no GPU server can answer, say so.

LiteLLM answers a model group with every server down (or cooling down) with a 500, or a 429 that
looks like the client's fault. Clients get ``503 model_unavailable`` with ``Retry-After`` instead; a
client mistake the upstream reported (400, 404, 422) passes through as LiteLLM maps it.

LiteLLM 1.103.7 retries a retryable failure (500, connection refused, timeout, 429) by routing again
among every server not cooling down, so one request could meet the same dead server on all its tries
before that server has failed often enough to be cooled down. The hook leaves the servers that already
failed this request out of its next tries (while any other remains).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import litellm
from fastapi import HTTPException
from litellm.proxy._types import ProxyException, UserAPIKeyAuth

from .._edge import to_proxy_exception, to_replacement_exception
from .._errors import BadRequest, ModelUnavailable
from .._litellm import GatewayHook, gateway_error_of, metadata_dicts
from .manifest import Manifest
from .validate import validate_request

log = logging.getLogger("litellm_cloud.fleet")

# Upstream failures that mean "no server could answer", not "the request was wrong".
_UNAVAILABLE = (
    litellm.exceptions.APIConnectionError,
    litellm.exceptions.ServiceUnavailableError,
    litellm.exceptions.InternalServerError,
    litellm.exceptions.Timeout,
    litellm.exceptions.RateLimitError,
)
_NO_DEPLOYMENTS = ("No deployments available", "No healthy deployment available")


def failed_deployments(request_kwargs: Mapping[str, object] | None) -> frozenset[str]:
    """The ids of the servers that already failed this request (LiteLLM's retry breadcrumbs)."""
    found = (meta.get("previous_models") for meta in metadata_dicts(request_kwargs))
    breadcrumbs = next((b for b in found if isinstance(b, (list, tuple))), None)
    if breadcrumbs is None:
        return frozenset()
    return frozenset(
        crumb["deployment_id"]
        for crumb in breadcrumbs
        if isinstance(crumb, Mapping) and isinstance(crumb.get("deployment_id"), str)
    )


def is_fleet_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the model group could not serve (as opposed to a bad request)."""
    if isinstance(exc, ProxyException):
        return any(marker in exc.message for marker in _NO_DEPLOYMENTS)
    if isinstance(exc, _UNAVAILABLE):
        return True
    return any(marker in str(exc) for marker in _NO_DEPLOYMENTS)


class FleetHook(GatewayHook):
    """Refuses malformed requests before routing, sends retries to servers that have not failed the
    request yet, and maps a fleet outage to ``503 model_unavailable``."""

    def __init__(self, manifest: Manifest, retry_after: float = 5.0) -> None:
        super().__init__()
        self._manifest = manifest
        self._retry_after = retry_after

    async def async_pre_call_hook(
        self, user_api_key_dict: UserAPIKeyAuth, cache: object, data: dict, call_type: str
    ) -> dict:
        try:
            validate_request(call_type, data)
        except BadRequest as err:
            raise to_proxy_exception(err) from None
        return data

    async def async_filter_deployments(
        self,
        model: str,
        healthy_deployments: list,
        messages: object,
        request_kwargs: dict | None = None,
        parent_otel_span: object = None,
    ) -> list[dict]:
        failed = failed_deployments(request_kwargs)
        if not failed or not isinstance(healthy_deployments, list):
            return healthy_deployments
        untried = [d for d in healthy_deployments if (d.get("model_info") or {}).get("id") not in failed]
        return untried or healthy_deployments

    async def on_failure(self, request_data: dict[str, Any], exc: Exception) -> HTTPException | None:
        if gateway_error_of(exc) is not None:
            return None  # ours already
        if not is_fleet_unavailable(exc):
            return None
        requested = str(request_data.get("model") or "")
        group = self._manifest.resolve(requested) or requested or "the requested model"
        log.warning("model group %s unavailable: %s", group, type(exc).__name__)
        return to_replacement_exception(
            ModelUnavailable(
                f"No GPU server of {group} can answer right now; retry shortly.",
                retry_after=self._retry_after,
            )
        )
