"""``GET /v1/usage`` (and ``/usage``): a customer key's tier, limits, and what is used and left.

Mounted ahead of LiteLLM's routes by the gateway; it authenticates through LiteLLM's own
``user_api_key_auth`` dependency, so the same custom auth (and route gate) decides who may call it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from litellm.proxy._types import UserAPIKeyAuth
from litellm.proxy.auth.user_api_key_auth import user_api_key_auth

from .._edge import to_proxy_exception
from .._errors import BadRequest, GatewayError
from .._litellm import identity_of
from ._types import Limits, Usage, next_day_ms, window_reset_ms
from .headers import rate_limit_headers
from .limiter import Limiter
from .subjects import Subjects


def _seconds_until(when_ms: int | None, now_ms: int) -> float:
    return round(window_reset_ms(when_ms, now_ms) / 1000, 3)


def usage_body(tier: str, scope: str, limits: Limits, usage: Usage) -> dict[str, Any]:
    """The JSON answer of the usage route."""
    now = usage.now_ms
    day_ends_ms = next_day_ms(now)
    return {
        "object": "usage",
        "tier": tier,
        "scope": scope,
        "limits": {
            "requests_per_minute": limits.rpm,
            "tokens_per_minute": limits.tpm,
            "tokens_per_day": limits.daily_tokens,
            "max_parallel_requests": limits.max_parallel,
        },
        "minute": {
            "requests": {
                "limit": limits.rpm,
                "used": usage.requests,
                "remaining": max(0, limits.rpm - usage.requests),
                "reset_seconds": _seconds_until(usage.oldest_request_ms, now),
            },
            "tokens": {
                "limit": limits.tpm,
                "used": usage.tokens,
                "remaining": max(0, limits.tpm - usage.tokens),
                "reset_seconds": _seconds_until(usage.oldest_tokens_ms, now),
            },
        },
        "day": {
            "tokens": {
                "limit": limits.daily_tokens,
                "used": usage.day_tokens,
                "remaining": max(0, limits.daily_tokens - usage.day_tokens),
            },
            "resets_at": datetime.fromtimestamp(day_ends_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "reset_seconds": round((day_ends_ms - now) / 1000, 3),
        },
        "in_flight": {"limit": limits.max_parallel, "used": usage.in_flight},
    }


def usage_router(limiter: Limiter, subjects: Subjects) -> APIRouter:
    """The router serving the usage of the calling key's account (or key, per the scope setting)."""
    router = APIRouter()

    async def usage(user_api_key_dict: UserAPIKeyAuth = Depends(user_api_key_auth)) -> JSONResponse:  # noqa: B008
        ident = identity_of(user_api_key_dict)
        if ident is None:
            raise to_proxy_exception(BadRequest("Usage is reported for customer API keys only."))
        tier = subjects.tier_of(ident)
        limits = Limits.of(tier)
        try:
            snapshot = await limiter.usage(subjects.subject(ident))
        except GatewayError as err:
            raise to_proxy_exception(err) from err
        return JSONResponse(
            usage_body(tier.name, subjects.scope, limits, snapshot), headers=rate_limit_headers(limits, snapshot)
        )

    router.add_api_route("/v1/usage", usage, methods=["GET"], include_in_schema=True, tags=["usage"])
    router.add_api_route("/usage", usage, methods=["GET"], include_in_schema=False)
    return router
