"""Who is calling: key format -> cache -> backend -> tier table -> ``Identity``.

The cache is indexed by the key's full SHA-256 and holds either an ``Identity`` or a ``Refusal``; the raw
key lives only for the duration of one backend call. A tier name the tier table does not know is refused
with ``403 tier_not_configured`` (the key is fine, the gateway's tiers.yaml lacks its tier: retrying will
not help, unlike ``503 auth_unavailable``) and logged as an error; it is never mapped to a guessed tier.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .._errors import AuthTimeout, AuthUnavailable, GatewayError, InvalidApiKey, TierNotConfigured
from ..identity import Identity, key_hash
from ..observability import Metrics
from ..tiers import Tiers
from .backend import KeyBackend
from .cache import AuthCache
from .keys import check_format, key_digest

log = logging.getLogger("litellm_cloud.auth")


@dataclass(frozen=True, slots=True)
class Refusal:
    """A cached "no" for one key: the error to raise, rebuilt on each use."""

    error: type[GatewayError]
    message: str
    key_hash: str

    def raise_(self) -> None:
        raise self.error(self.message)


Verdict = Identity | Refusal


def new_cache(
    *, ttl: float, negative_ttl: float, grace: float, max_size: int, clock: object | None = None
) -> AuthCache[Verdict]:
    """The verdict cache with the transient errors that may be answered from grace."""
    extra = {"clock": clock} if clock is not None else {}
    return AuthCache(
        ttl=ttl,
        negative_ttl=negative_ttl,
        grace=grace,
        max_size=max_size,
        transient=(AuthUnavailable, AuthTimeout),
        retry_interval=min(1.0, ttl) if ttl > 0 else 1.0,
        **extra,  # type: ignore[arg-type]
    )


class Authenticator:
    """Turns an API key into an ``Identity`` or raises a ``GatewayError``."""

    def __init__(self, backend: KeyBackend, cache: AuthCache[Verdict], tiers: Tiers, metrics: Metrics) -> None:
        self._backend = backend
        self.cache = cache
        self._tiers = tiers
        self._metrics = metrics

    async def authenticate(self, api_key: object) -> Identity:
        """The identity of a well-formed, valid key; else ``InvalidApiKey``, ``TierNotConfigured``,
        ``AuthUnavailable`` or ``AuthTimeout``."""
        key = check_format(api_key)
        verdict, result = await self.cache.get(key_digest(key), lambda: self._load(key))
        self._metrics.auth_cache(result)
        if isinstance(verdict, Refusal):
            verdict.raise_()
        assert isinstance(verdict, Identity)
        if result == "stale":
            log.warning("key backend unavailable: %s served from cache within its grace period", verdict.key_hash)
        return verdict

    async def _load(self, key: str) -> tuple[Verdict, bool]:
        who = key_hash(key)
        answer = await self._backend.validate(key)
        if not answer.valid:
            log.info("key %s refused by the backend (%s)", who, answer.reason[:80] or "no reason given")
            return Refusal(InvalidApiKey, f"Invalid API key ({who}).", who), False
        if answer.tier not in self._tiers:
            log.error(
                "key %s of user %s has tier %r, which tiers.yaml does not define; refusing it",
                who, answer.user_id, answer.tier[:40],
            )
            message = f"This key's tier is not configured on the gateway; contact support ({who})."
            return Refusal(TierNotConfigured, message, who), False
        identity = Identity(
            user_id=answer.user_id,
            key_id=answer.key_id,
            key_hash=who,
            tier=answer.tier,
            age_verified=answer.age_verified,
        )
        return identity, True
