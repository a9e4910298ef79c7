"""What one request was, read out of LiteLLM's callback arguments into a plain ``RequestRecord``.

LiteLLM 1.103.7 hands the callbacks different shapes (measured, see docs/observability.md):

- success (``async_log_success_event``): ``kwargs["standard_logging_object"]`` holds times, tokens, the
  model group as asked (an alias possibly), the deployment (``model_id`` = our server name), messages
  and the response; our identity is in ``kwargs["litellm_params"]["metadata"]["user_api_key_metadata"]``.
- failure of the whole request (``async_post_call_failure_hook``, once per request, refusals by auth and
  by pre-call hooks included): ``request_data``, the exception and the ``UserAPIKeyAuth``.

Raw keys: on an auth failure LiteLLM's own metadata (``user_api_key_hash``) and ``UserAPIKeyAuth.api_key``
hold the key as sent. Nothing here copies LiteLLM metadata; a key is only ever kept as ``key_hash``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .._litellm import gateway_error_of, identity_in, identity_of, is_master, metadata_dicts
from ..fleet.hook import is_fleet_unavailable
from ..fleet.manifest import Manifest
from ..identity import Identity, key_hash
from .metrics import TIER_MASTER, TIER_NONE

_KEYLIKE = re.compile(r"(?:hc-)?sk-[A-Za-z0-9_\-]{4,}")


@dataclass(frozen=True)
class RequestRecord:
    """One finished request, as traces and metrics see it (no raw key, content kept for redaction)."""

    call_id: str
    kind: str  # chat | embedding | other
    requested_model: str
    model_group: str | None  # the fleet group the requested name reaches, None if none
    deployment: str | None  # server name (model_info.id) that served it
    user_id: str | None
    key_id: str | None
    key_hash: str | None
    tier: str
    start: float
    end: float
    first_token: float | None
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    code: str  # ok or an error code
    status: int
    error: str | None
    input: Any
    output: Any
    parameters: Mapping[str, Any]

    @property
    def ok(self) -> bool:
        return self.code == "ok"


def scrub(text: str, limit: int = 300) -> str:
    """An error message safe for a trace: key-looking tokens replaced, length bounded."""
    return _KEYLIKE.sub("[key]", text)[:limit]


def epoch(value: Any) -> float | None:
    """Seconds since the epoch from a LiteLLM time (a datetime or a float), or None."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)) and value > 0:
        return float(value)
    return None


def _kind(call_type: Any) -> str:
    text = str(call_type or "")
    if "embedding" in text:
        return "embedding"
    if "completion" in text:
        return "chat"
    return "other"


def _who(ident: Identity | None, user_api_key_auth: Any) -> tuple[str | None, str | None, str | None, str]:
    if ident is not None:
        return ident.user_id, ident.key_id, ident.key_hash, ident.tier
    if is_master(user_api_key_auth):
        return None, None, None, TIER_MASTER
    return None, None, None, TIER_NONE


def _output(response: Any, kind: str) -> Any:
    if not isinstance(response, Mapping):
        return None
    if kind == "embedding":
        data = response.get("data")
        return {"embeddings": len(data) if isinstance(data, list) else 0}
    messages = []
    for choice in response.get("choices") or []:
        message = choice.get("message") if isinstance(choice, Mapping) else None
        if isinstance(message, Mapping):
            messages.append({"role": message.get("role") or "assistant", "content": message.get("content")})
    return messages[0] if len(messages) == 1 else messages or None


_PARAMS = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop")


def from_success(kwargs: Mapping[str, Any], manifest: Manifest, now: float) -> RequestRecord:
    """The record of a request LiteLLM served (``async_log_success_event``)."""
    slo = kwargs.get("standard_logging_object") or {}
    litellm_params = kwargs.get("litellm_params") or {}
    metadata = litellm_params.get("metadata") or {}
    ident = identity_in(metadata) or identity_in(slo.get("metadata"))
    user_id, key_id, hashed, tier = _who(ident, metadata.get("user_api_key_auth"))
    requested = str(slo.get("model_group") or metadata.get("model_group") or kwargs.get("model") or "")
    model_info = litellm_params.get("model_info") or {}
    deployment = slo.get("model_id") or model_info.get("id") or None
    kind = _kind(slo.get("call_type") or kwargs.get("call_type"))
    start = epoch(slo.get("startTime")) or epoch(kwargs.get("start_time")) or now
    end = epoch(slo.get("endTime")) or epoch(kwargs.get("end_time")) or now
    stream = bool(slo.get("stream") or kwargs.get("stream"))
    first = epoch(slo.get("completionStartTime")) or epoch(kwargs.get("completion_start_time"))
    optional = kwargs.get("optional_params") or {}
    return RequestRecord(
        call_id=str(kwargs.get("litellm_call_id") or slo.get("id") or ""),
        kind=kind,
        requested_model=requested,
        model_group=manifest.resolve(requested),
        deployment=str(deployment) if deployment else None,
        user_id=user_id,
        key_id=key_id,
        key_hash=hashed,
        tier=tier,
        start=start,
        end=end,
        first_token=first if stream else None,
        stream=stream,
        prompt_tokens=int(slo.get("prompt_tokens") or 0),
        completion_tokens=int(slo.get("completion_tokens") or 0),
        code="ok",
        status=200,
        error=None,
        input=kwargs.get("input") if kind == "embedding" else (slo.get("messages") or kwargs.get("messages")),
        output=_output(slo.get("response"), kind),
        parameters={k: optional[k] for k in _PARAMS if isinstance(optional, Mapping) and k in optional},
    )


def outcome(exc: BaseException) -> tuple[str, int, str]:
    """``(code, status, message)`` for a failed request, as the client was told (or close to it)."""
    gateway_error = gateway_error_of(exc)
    if gateway_error is not None:
        return gateway_error.code, gateway_error.status, gateway_error.message
    if is_fleet_unavailable(exc):
        return "model_unavailable", 503, scrub(str(exc))  # what FleetHook turns it into
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        try:
            status = int(getattr(exc, "code", 500))
        except (TypeError, ValueError):
            status = 500
    return _code_for_status(status), status, scrub(getattr(exc, "message", None) or str(exc))


def _code_for_status(status: int) -> str:
    mapping = {
        400: "bad_request", 401: "invalid_api_key", 403: "forbidden", 404: "model_not_found",
        408: "timeout", 422: "bad_request", 429: "rate_limited", 499: "client_closed",
        500: "internal_error", 502: "upstream_error", 503: "upstream_error", 504: "timeout",
    }  # fmt: skip
    if status in mapping:
        return mapping[status]
    return "internal_error" if status >= 500 else "bad_request"


def from_failure(
    request_data: Mapping[str, Any], exc: BaseException, user_api_key_auth: Any, manifest: Manifest, now: float
) -> RequestRecord:
    """The record of a request that failed or was refused (``async_post_call_failure_hook``)."""
    ident = identity_of(user_api_key_auth) or next(filter(None, map(identity_in, metadata_dicts(request_data))), None)
    user_id, key_id, hashed, tier = _who(ident, user_api_key_auth)
    if hashed is None:
        sent = getattr(user_api_key_auth, "api_key", None)
        if isinstance(sent, str) and sent.startswith("hc-sk-"):
            hashed = key_hash(sent)  # the key a refused client sent, hashed: never kept raw
    code, status, message = outcome(exc)
    requested = str(request_data.get("model") or "")
    return RequestRecord(
        call_id=str(request_data.get("litellm_call_id") or ""),
        kind=_kind(request_data.get("call_type") or ("acompletion" if "messages" in request_data else "")),
        requested_model=requested,
        model_group=manifest.resolve(requested),
        deployment=None,
        user_id=user_id,
        key_id=key_id,
        key_hash=hashed,
        tier=tier,
        start=epoch(request_data.get("start_time")) or now,
        end=now,
        first_token=None,
        stream=bool(request_data.get("stream")),
        prompt_tokens=0,
        completion_tokens=0,
        code=code,
        status=status,
        error=message,
        input=None,  # a refused or failed request's content is not kept
        output=None,
        parameters={},
    )
