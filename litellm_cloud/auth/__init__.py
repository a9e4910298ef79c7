"""Authentication and access: who is calling, and what they may reach.

    keys.py          the hc-sk- key format (401 without a backend call)
    backend.py       the HeartCode backend contract over httpx (docs/backend-contract.md)
    cache.py         bounded TTL cache: negative entries, single-flight, stale-if-error, injected clock
    authenticator.py key -> cache -> backend -> tier table -> Identity
    gates.py         route allow-list for customer keys; model access by tier and age verification
    hook.py          the LiteLLM edge: the custom_auth function and the access hook
    revocation.py    dropping keys from every replica's cache (Redis pub/sub, or this process)
    admin.py         POST /hc/keys/revoke (master key only)
    model_route.py   GET /v1/models/{model}: one model, 404 for a name the key may not use

``build_auth(settings, metrics)`` wires them into one ``Auth``; docs/auth.md tells the whole story. The
revocation listener is a background task: ``gateway.Gateway.start`` starts it, with the proxy.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter

from .._config import Settings
from ..observability import Metrics
from .admin import build_admin_router
from .authenticator import Authenticator, new_cache
from .backend import HttpKeyBackend, KeyBackend
from .gates import ModelGate
from .hook import AccessHook, AuthFunction, MasterKey, make_auth_function
from .model_route import model_router
from .revocation import LocalRevocations, RedisRevocations, Revocations

__all__ = ["AccessHook", "Auth", "Authenticator", "ModelGate", "build_auth"]


@dataclass(frozen=True)
class Auth:
    """What LiteLLM calls (the auth function, the access hook) and our admin routes."""

    user_api_key_auth: AuthFunction
    access_hook: AccessHook
    router: APIRouter  # admin routes and GET /v1/models/{model}
    authenticator: Authenticator
    revocations: Revocations


def build_auth(settings: Settings, metrics: Metrics, *, backend: KeyBackend | None = None) -> Auth:
    """Build auth from settings (their tiers and fleet already checked against each other)."""
    gate = ModelGate(settings.fleet, settings.tiers)
    cache = new_cache(
        ttl=settings.auth_cache_ttl,
        negative_ttl=settings.auth_negative_ttl,
        grace=settings.auth_stale_grace,
        max_size=settings.auth_cache_size,
    )
    backend = backend or HttpKeyBackend(
        settings.backend_url, token=settings.backend_token, timeout=settings.backend_timeout, metrics=metrics
    )
    authenticator = Authenticator(backend, cache, settings.tiers, metrics)
    revocations: Revocations = (
        RedisRevocations(cache, settings.redis_url) if settings.redis_url else LocalRevocations(cache)
    )
    master = MasterKey(settings.master_key)
    router = build_admin_router(revocations, master)
    router.routes.extend(model_router(gate, settings.fleet).routes)
    return Auth(
        user_api_key_auth=make_auth_function(authenticator, gate, master),
        access_hook=AccessHook(gate),
        router=router,
        authenticator=authenticator,
        revocations=revocations,
    )
