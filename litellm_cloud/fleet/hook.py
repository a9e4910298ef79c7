"""Fleet behaviour at the LiteLLM edge: a malformed request is a 400; a retry goes to another server;
when no GPU server can answer, say so.

LiteLLM answers a model group with every server down (or cooling down) with a 500, or a 429 that
looks like the client's fault. Clients get ``503 model_unavailable`` with ``Retry-After`` instead. A
client mistake the GPU server reported (400, 422) is the client's ``400``: ``context_length_exceeded``
for a prompt that does not fit (as OpenAI answers), else ``invalid_request`` with the server's own
message (LiteLLM's "OpenAIException - ... Received Model Group=..." wrapping removed). LiteLLM neither
retries a 400 (``Router.should_retry_this_error``) nor cools a server down for it
(``cooldown_handlers._is_cooldown_required``), measured on 1.103.7: a client cannot take a GPU out of
rotation with bad requests (tests/fleet/test_upstream_400.py).

LiteLLM 1.103.7 retries a retryable failure (500, connection refused, timeout, 429) by routing again
among every server not cooling down, so one request could meet the same dead server on all its tries
before that server has failed often enough to be cooled down. The hook leaves the servers that already
failed this request out of its next tries (while any other remains).

With ``router.queue_routing`` the hook then narrows the rest to the one server with the least queue
(``queue.py``), refuses a tier whose ``fleet_busy_at`` the group's queue reached with ``503 fleet_busy``
(before the limits hook, so a refused request costs no quota), and with ``router.vllm_priority`` sends
the tier's ``priority`` to vLLM.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping
from typing import Any

import litellm
from fastapi import HTTPException
from litellm.proxy._types import ProxyException, UserAPIKeyAuth

from .._edge import to_proxy_exception, to_replacement_exception
from .._errors import BadRequest, ContextLengthExceeded, FleetBusy, ModelUnavailable
from .._litellm import GatewayHook, gateway_error_of, identity_of, metadata_dicts, writable_metadata
from ..tiers import Tiers
from .manifest import Manifest
from .queue import QueueRouter
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
# Upstream answers that mean "the request was wrong" (LiteLLM maps vLLM's 400 and 422 to these).
_CLIENT_MISTAKES = (litellm.exceptions.BadRequestError, litellm.exceptions.UnprocessableEntityError)
_WRAPPED = re.compile(r"(?s)^.*?Exception - (.*?)(?:\.?\s*Received Model Group=.*)?$")
_QUOTED = re.compile(r"""\{'error': \{'message': ["'](.*?)["'], 'type'""")
_MESSAGE_MAX = 500


def _upstream_message(exc: BaseException) -> str:
    """The GPU server's own error message inside LiteLLM's exception, without LiteLLM's wrapping."""
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error") if isinstance(body.get("error"), Mapping) else body
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return inner["message"][:_MESSAGE_MAX]
    match = _WRAPPED.match(str(exc))
    text = match.group(1) if match else ""
    # LiteLLM appends its own lines (fallback hints) and may quote the whole upstream body.
    text = text.split("\n", 1)[0]
    quoted = _QUOTED.search(text)
    return (quoted.group(1) if quoted else text).strip()[:_MESSAGE_MAX]


def upstream_refusal(exc: BaseException) -> BadRequest | None:
    """Our 400 for a request the GPU server refused as invalid, or None for any other failure."""
    if not isinstance(exc, _CLIENT_MISTAKES):
        return None
    message = _upstream_message(exc)
    if isinstance(exc, litellm.exceptions.ContextWindowExceededError):
        return ContextLengthExceeded(message or "The prompt and the completion asked for exceed the model's context.")
    return BadRequest(message or "The GPU server refused the request as invalid.")


META_KEY = "hc_fleet_rid"  # our own request id (litellm_call_id is client-settable)


def _request_id(data: Mapping[str, Any] | None) -> str | None:
    """Our request id in a request body's (or callback kwargs') metadata, if the pre-call hook set one."""
    rid = next((m[META_KEY] for m in metadata_dicts(data) if META_KEY in m), None)
    return rid if isinstance(rid, str) else None


def _event_ids(kwargs: Any) -> tuple[str | None, str | None]:
    """(our request id, deployment id) of a LiteLLM log event."""
    params = kwargs.get("litellm_params") if isinstance(kwargs, dict) else None
    if not isinstance(params, dict):
        return None, None
    rid = _request_id(params) or _request_id(kwargs)
    server = (params.get("model_info") or {}).get("id")
    return rid, (server if isinstance(server, str) else None)


def _metrics_url(deployment: Mapping[str, Any]) -> str | None:
    base = (deployment.get("litellm_params") or {}).get("api_base")
    if not isinstance(base, str):
        return None
    base = base.rstrip("/")
    return (base.removesuffix("/v1")) + "/metrics"


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

    def __init__(
        self, manifest: Manifest, tiers: Tiers | None = None, queue: QueueRouter | None = None,
        retry_after: float = 5.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self._manifest = manifest
        self._tiers = tiers
        self._queue = queue if manifest.router.queue_routing else None
        self._retry_after = retry_after
        if self._queue is not None:
            for name, group_spec in manifest.groups.items():
                self._queue.know_group(name, (s.name for s in group_spec.servers))

    def start(self) -> None:
        """Start the background ``/metrics`` scraper of queue-aware routing (on the running loop)."""
        if self._queue is not None:
            self._queue.scraper.start()

    async def async_pre_call_hook(
        self, user_api_key_dict: UserAPIKeyAuth, cache: object, data: dict, call_type: str
    ) -> dict:
        try:
            group = self._manifest.resolve(str(data.get("model") or ""))
            mode = self._manifest.groups[group].mode if group is not None else None
            validate_request(str(call_type), data, mode)
        except BadRequest as err:
            raise to_proxy_exception(err) from None
        data.pop("priority", None)  # vLLM's queue order is ours to set, never the client's
        ident = identity_of(user_api_key_dict)
        tier = self._tiers.get(ident.tier) if ident is not None and self._tiers is not None else None
        if self._queue is not None and tier is not None and tier.fleet_busy_at is not None and group:
            load = self._queue.group_load(group)  # admitted requests included; no await until admit()
            if load is not None and load >= tier.fleet_busy_at:
                log.info("fleet_busy: %s at %.1f per server, %s refused", group, load, tier.name)
                raise to_proxy_exception(FleetBusy(
                    f"{group} is full; {tier.name} requests wait while paying tiers are served. Retry shortly.",
                    retry_after=self._queue.retry_after(group, tier.fleet_busy_at),
                ))  # fmt: skip
        if self._manifest.router.vllm_priority and tier is not None and call_type in ("completion", "acompletion"):
            extra = data.get("extra_body")
            data["extra_body"] = {**(extra if isinstance(extra, dict) else {}), "priority": tier.priority}
        if self._queue is not None:
            rid = secrets.token_hex(8)
            writable_metadata(data)[META_KEY] = rid
            if group:
                self._queue.admit(rid, group)  # counted from now: the next request's check sees it
        return data

    async def async_filter_deployments(
        self,
        model: str,
        healthy_deployments: list,
        messages: object,
        request_kwargs: dict | None = None,
        parent_otel_span: object = None,
    ) -> list[dict]:
        if not isinstance(healthy_deployments, list):
            return healthy_deployments
        failed = failed_deployments(request_kwargs)
        untried = [d for d in healthy_deployments if (d.get("model_info") or {}).get("id") not in failed]
        candidates = untried or healthy_deployments
        rid = _request_id(request_kwargs)
        if self._queue is None or rid is None or len(candidates) < 1:
            return candidates
        by_id = {str((d.get("model_info") or {}).get("id")): d for d in candidates}
        if not self._queue.scraper.urls.keys() >= by_id.keys():  # a server not scraped yet (rare: once each)
            self._queue.scraper.know({i: u for i, d in by_id.items() if (u := _metrics_url(d)) is not None})
        chosen = self._queue.choose(model, by_id)
        if chosen is None:
            return candidates
        self._queue.start(rid, model, chosen)  # counted now, before the call: the next choice sees it
        return [by_id[chosen]]

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        if self._queue is not None:
            rid, server = _event_ids(kwargs)
            if rid is not None:
                self._queue.finish(rid, server, completed=True)

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        if self._queue is not None:
            rid, server = _event_ids(kwargs)
            if rid is not None:
                self._queue.finish(rid, server, completed=False)

    async def on_failure(self, request_data: dict[str, Any], exc: Exception) -> HTTPException | None:
        rid = _request_id(request_data)
        if self._queue is not None and rid is not None:
            self._queue.finish(rid, completed=False)
        if gateway_error_of(exc) is not None:
            return None  # ours already
        refusal = upstream_refusal(exc)
        if refusal is not None:
            return to_replacement_exception(refusal)
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
