"""Revocation: make every replica forget a key at once.

A revocation names keys by one field: the key's SHA-256 ``digest`` (what ``{"api_key": ...}`` becomes at
the admin endpoint: the raw key never leaves the process), its ``key_hash`` (the ``key-...`` name in logs),
its backend ``key_id``, or a ``user_id`` (every key of an account).

``LocalRevocations`` applies it to this process's cache. ``RedisRevocations`` also publishes it on the
Redis channel ``hc:auth:revoke``; every replica subscribes and applies what it hears. When the
subscription breaks, a replica may miss revocations, so on reconnecting it empties its cache (each key is
then validated again once). While Redis is unreachable a replica learns nothing: entries then last at
most ``HEARTCODE_AUTH_CACHE_TTL`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ..identity import Identity
from .authenticator import Verdict
from .cache import AuthCache

log = logging.getLogger("litellm_cloud.auth")

CHANNEL = "hc:auth:revoke"
Field = Literal["digest", "key_hash", "key_id", "user_id"]
FIELDS: tuple[Field, ...] = ("digest", "key_hash", "key_id", "user_id")


@dataclass(frozen=True, slots=True)
class Selector:
    """Which cached keys a revocation drops."""

    field: Field
    value: str

    def apply(self, cache: AuthCache[Verdict]) -> int:
        """Drop the matching entries from ``cache``; returns how many went."""
        if self.field == "digest":
            return cache.drop(self.value)
        if self.field == "key_hash":
            return cache.drop_where(lambda v: v.key_hash == self.value)
        attr = self.field

        def match(v: Verdict) -> bool:
            return isinstance(v, Identity) and getattr(v, attr) == self.value

        return cache.drop_where(match)


@dataclass(frozen=True, slots=True)
class RevokeResult:
    """What one revocation did: entries dropped here, and replicas the message reached (if shared)."""

    dropped_here: int
    scope: Literal["local", "redis"]
    replicas_notified: int | None = None


class Revocations(Protocol):
    async def revoke(self, selector: Selector) -> RevokeResult: ...

    def start(self) -> None: ...

    async def close(self) -> None: ...


class LocalRevocations:
    """Revocation in this process only (no Redis configured)."""

    def __init__(self, cache: AuthCache[Verdict]) -> None:
        self._cache = cache

    async def revoke(self, selector: Selector) -> RevokeResult:
        return RevokeResult(selector.apply(self._cache), "local")

    def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


class RevocationPublishFailed(Exception):
    """Redis did not take the message: only this replica forgot the key."""

    def __init__(self, dropped_here: int) -> None:
        super().__init__("revocation applied here but not published: Redis is unreachable")
        self.dropped_here = dropped_here


class RedisRevocations:
    """Revocation through Redis pub/sub: every subscribed replica applies every message."""

    def __init__(self, cache: AuthCache[Verdict], redis_url: str, *, client: Any | None = None) -> None:
        from .._redis import async_client

        self._cache = cache
        # ``redis_url`` may name a Sentinel service: the listener's reconnect then finds the new master.
        self._redis = client or async_client(redis_url, socket_connect_timeout=2, socket_timeout=5)
        self._origin = uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        """Start listening (idempotent; needs a running event loop, so call it from async code)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="hc-auth-revocations")

    async def revoke(self, selector: Selector) -> RevokeResult:
        dropped = selector.apply(self._cache)
        message = json.dumps({"field": selector.field, "value": selector.value, "origin": self._origin})
        try:
            receivers = int(await self._redis.publish(CHANNEL, message))
        except Exception as exc:  # any Redis failure: the caller must learn the revocation is partial
            log.error("revocation of %s=%s not published: %s", selector.field, _short(selector), exc)
            raise RevocationPublishFailed(dropped) from exc
        return RevokeResult(dropped, "redis", receivers)

    async def _listen(self) -> None:
        delay, broke = 0.1, False
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                if broke:
                    dropped = self._cache.clear()
                    log.warning("revocation channel back; emptied the key cache (%d entries) in case one was missed", dropped)
                self.subscribed.set()
                delay = 0.1
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._apply(message.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any Redis failure means: reconnect, then flush
                self.subscribed.clear()
                if not broke:
                    log.error("revocation channel lost (%s); retrying; cached keys expire by TTL meanwhile", exc)
                broke = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _apply(self, raw: Any) -> None:
        try:
            body = json.loads(raw)
            field, value = body["field"], body["value"]
            if field not in FIELDS or not isinstance(value, str):
                raise ValueError(field)
        except (ValueError, TypeError, KeyError):
            log.warning("ignored a malformed revocation message")
            return
        if body.get("origin") == self._origin:
            return  # applied before publishing
        dropped = Selector(field, value).apply(self._cache)
        log.info("revocation %s=%s from another replica: %d entries dropped", field, _short(Selector(field, value)), dropped)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self._redis.aclose()


def _short(selector: Selector) -> str:
    # Digests are long and key ids may be sensitive to someone: log a prefix only.
    return selector.value[:16]
