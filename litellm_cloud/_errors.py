"""The error tree of litellm-cloud.

Every refusal a client can see is a ``GatewayError`` with a stable ``code`` and an HTTP ``status``; every
class of this module is drawn here and exported by ``litellm_cloud`` (bases too, to catch a family)::

    Exception
    ├── ConfigError                   (never reaches a client: stops a process at start-up)
    └── GatewayError                  500 gateway_error (code, status, message, retry_after)
        ├── AuthError
        │   ├── InvalidApiKey         401 invalid_api_key
        │   ├── AuthUnavailable       503 auth_unavailable
        │   └── AuthTimeout           504 auth_timeout
        ├── AccessError
        │   ├── ModelNotAllowed       403 model_not_allowed
        │   ├── RouteNotAllowed       403 route_not_allowed
        │   ├── TierNotConfigured     403 tier_not_configured
        │   └── ModelNotFound         404 model_not_found
        ├── LimitError                429, with retry_after
        │   ├── RateLimited           429 rate_limited
        │   ├── DailyQuotaExceeded    429 daily_quota_exceeded
        │   └── ConcurrencyLimited    429 concurrency_limited
        ├── RevocationNotShared       503 revocation_not_shared
        ├── LimiterUnavailable        503 limiter_unavailable
        ├── ModelUnavailable          503 model_unavailable
        ├── FleetBusy                 503 fleet_busy, with retry_after
        └── BadRequest                400 invalid_request
            ├── ContextLengthExceeded 400 context_length_exceeded
            └── RequestTooLarge       413 request_too_large

``ConfigError`` says what to fix. Conversion to an HTTP answer happens only at the LiteLLM edge
(``to_openai``; ``_edge.py`` wraps a ``GatewayError`` in ``GatewayProxyException`` and, for failure hooks,
``GatewayHTTPException``). Internal errors, translated at their boundary and never shown as they are:
``limits.storage.StorageError`` (the limiter applies its policy), ``auth.backend.BackendContractError``
and ``auth.backend._Failed`` (both become ``AuthUnavailable``), ``auth.revocation.RevocationPublishFailed``
(becomes ``RevocationNotShared``); the tunnel has its own tree in ``tunnel/errors.py``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar


class ConfigError(Exception):
    """A configuration file or setting is wrong; the message says where and what to do."""


class GatewayError(Exception):
    """A refusal with a stable ``code`` and HTTP ``status``, safe to show to the client."""

    code: ClassVar[str] = "gateway_error"
    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        """HTTP headers that belong to this refusal (``Retry-After`` when known)."""
        if self.retry_after is None:
            return {}
        return {"retry-after": str(max(1, math.ceil(self.retry_after)))}

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI-style error body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": None, "code": self.code}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status}, message={self.message!r})"


class AuthError(GatewayError):
    """The caller could not be identified."""

    type = "authentication_error"


class InvalidApiKey(AuthError):
    code = "invalid_api_key"
    status = 401


class AuthUnavailable(AuthError):
    code = "auth_unavailable"
    status = 503
    type = "service_unavailable_error"


class AuthTimeout(AuthError):
    code = "auth_timeout"
    status = 504
    type = "timeout_error"


class AccessError(GatewayError):
    """The caller is known but may not do this."""

    type = "permission_error"


class ModelNotAllowed(AccessError):
    code = "model_not_allowed"
    status = 403


class RouteNotAllowed(AccessError):
    code = "route_not_allowed"
    status = 403


class TierNotConfigured(AccessError):
    """The backend names a tier that tiers.yaml does not define: refused, never guessed (not retryable)."""

    code = "tier_not_configured"
    status = 403


class ModelNotFound(AccessError):
    code = "model_not_found"
    status = 404
    type = "invalid_request_error"


class LimitError(GatewayError):
    """A tier limit refused the request; ``retry_after`` says when it may pass."""

    type = "rate_limit_error"
    status = 429


class RateLimited(LimitError):
    code = "rate_limited"


class DailyQuotaExceeded(LimitError):
    code = "daily_quota_exceeded"


class ConcurrencyLimited(LimitError):
    code = "concurrency_limited"


class RevocationNotShared(GatewayError):
    """A key was dropped from this replica's cache only: the other replicas could not be told."""

    code = "revocation_not_shared"
    status = 503
    type = "service_unavailable_error"


class LimiterUnavailable(GatewayError):
    code = "limiter_unavailable"
    status = 503
    type = "service_unavailable_error"


class ModelUnavailable(GatewayError):
    code = "model_unavailable"
    status = 503
    type = "service_unavailable_error"


class FleetBusy(GatewayError):
    """The model group's queue passed this tier's ``fleet_busy_at``: paying tiers go first."""

    code = "fleet_busy"
    status = 503
    type = "service_unavailable_error"


class BadRequest(GatewayError):
    code = "invalid_request"
    status = 400
    type = "invalid_request_error"


class ContextLengthExceeded(BadRequest):
    """The prompt and the completion asked for do not fit the model's context (the GPU server said so)."""

    code = "context_length_exceeded"


class RequestTooLarge(BadRequest):
    """The body is over the gateway's size limit (the same code nginx answers with)."""

    code = "request_too_large"
    status = 413
