"""litellm-cloud: HeartCode's OpenAI-compatible gateway in front of its GPU fleet, built on LiteLLM.

The parts: ``auth`` (who is calling), ``limits`` (tier enforcement), ``fleet`` (manifest and rendered
configs), ``tunnel`` (reverse SSH tunnels), ``observability`` (metrics, traces), ``sim`` (stand-ins for
the GPU servers and the key backend), ``gateway`` (wiring) and ``cli``.
"""

from ._config import Settings
from ._errors import (
    AccessError,
    AuthError,
    AuthTimeout,
    AuthUnavailable,
    BadRequest,
    ConcurrencyLimited,
    ConfigError,
    ContextLengthExceeded,
    DailyQuotaExceeded,
    FleetBusy,
    GatewayError,
    InvalidApiKey,
    LimitError,
    LimiterUnavailable,
    ModelNotAllowed,
    ModelNotFound,
    ModelUnavailable,
    RateLimited,
    RequestTooLarge,
    RevocationNotShared,
    RouteNotAllowed,
    TierNotConfigured,
)
from .identity import Identity, key_hash
from .tiers import Tier, Tiers

__all__ = [
    "AccessError",
    "AuthError",
    "AuthTimeout",
    "AuthUnavailable",
    "BadRequest",
    "ConcurrencyLimited",
    "ConfigError",
    "ContextLengthExceeded",
    "DailyQuotaExceeded",
    "FleetBusy",
    "GatewayError",
    "Identity",
    "InvalidApiKey",
    "LimitError",
    "LimiterUnavailable",
    "ModelNotAllowed",
    "ModelNotFound",
    "ModelUnavailable",
    "RateLimited",
    "RequestTooLarge",
    "RevocationNotShared",
    "RouteNotAllowed",
    "Settings",
    "Tier",
    "TierNotConfigured",
    "Tiers",
    "key_hash",
]
