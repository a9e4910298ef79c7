"""``redis://`` or ``redis+sentinel://``: counters shared by every proxy replica, each operation one Lua script (atomic).

Keys of one subject share a hash tag (``hc:lim:{subject}:...``) so the scripts also run on a Redis
Cluster. Keys expire on their own: the minute's after two minutes idle, leases after their TTL, the day's
counter after two days. The scripts ship as package data next to this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from ..._redis import async_client
from .._types import WINDOW_MS, AdmitResult, Cost, Limits, RefusalReason, Usage
from ._base import StorageError

DAY_TTL_MS = 2 * 86_400_000
# A stale pooled connection (Redis restarted) fails once and is replaced: retry once, never more,
# so a dead Redis costs one quick connection refusal per call, not a backoff loop.
_RETRY = Retry(NoBackoff(), 1)
# Timeouts are measured on this process's event loop, which a burst of requests keeps busy: 0.5 s
# failed a 200-request burst (bench_limits.py). A bounded pool makes a burst queue for a connection
# instead of opening hundreds at once.
_DEFAULTS: dict[str, Any] = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0, "max_connections": 32}
POOL_WAIT_S = 2.0


def _script(name: str) -> str:
    prologue = resources.files(__package__).joinpath("_expire.lua").read_text()
    return prologue + "\n" + resources.files(__package__).joinpath(name).read_text()


def _usage(now_ms: int, raw: Sequence[Any]) -> Usage:
    requests, tokens, day_tokens, in_flight, oldest_req, oldest_tok = (int(v) for v in raw)
    return Usage(
        now_ms=now_ms,
        requests=requests,
        tokens=tokens,
        day_tokens=day_tokens,
        in_flight=in_flight,
        oldest_request_ms=None if oldest_req < 0 else oldest_req,
        oldest_tokens_ms=None if oldest_tok < 0 else oldest_tok,
    )


class RedisStorage:
    """Limit counters in Redis (one client; its pool binds to the event loop of first use)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._admit = client.register_script(_script("admit.lua"))
        self._settle = client.register_script(_script("settle.lua"))
        self._peek = client.register_script(_script("peek.lua"))
        self._renew = client.register_script(resources.files(__package__).joinpath("renew.lua").read_text())

    @classmethod
    def from_url(cls, url: str) -> RedisStorage:
        """A storage on ``url``, one server or a Sentinel service (``_redis``); query parameters such as
        ``socket_timeout`` override the defaults."""
        return cls(async_client(url, blocking_timeout=POOL_WAIT_S, retry=_RETRY, **_DEFAULTS))

    @staticmethod
    def _keys(subject: str, day: int) -> list[str]:
        base = f"hc:lim:{{{subject}}}:"
        return [base + "req", base + "tokz", base + "tokh", base + "lease", base + f"day:{day}"]

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise StorageError(f"redis: {type(exc).__name__}: {exc}") from exc

    async def admit(
        self, subject: str, limits: Limits, cost: Cost, ticket: str, now_ms: int, lease_until_ms: int, day: int
    ) -> AdmitResult:
        args = [now_ms, WINDOW_MS, limits.rpm, limits.tpm, limits.daily_tokens, limits.max_parallel,
                cost.need, cost.want, ticket, lease_until_ms, lease_until_ms - now_ms, DAY_TTL_MS]  # fmt: skip
        raw = await self._call(self._admit, self._keys(subject, day), args)
        admitted, refusal, reserved, free_at = int(raw[0]), raw[1], int(raw[2]), int(raw[3])
        if isinstance(refusal, bytes):
            refusal = refusal.decode()
        return AdmitResult(
            refusal=None if admitted else RefusalReason(refusal),
            reserved=reserved,
            free_at_ms=None if free_at < 0 else free_at,
            usage=_usage(now_ms, raw[4:]),
        )

    async def settle(self, subject: str, ticket: str, reserved: int, actual: int, now_ms: int, day: int) -> Usage:
        args = [now_ms, WINDOW_MS, ticket, reserved, actual, DAY_TTL_MS]
        return _usage(now_ms, await self._call(self._settle, self._keys(subject, day), args))

    async def renew(self, subject: str, tickets: Sequence[str], now_ms: int, lease_until_ms: int) -> None:
        if tickets:
            keys = [self._keys(subject, 0)[3]]
            await self._call(self._renew, keys, [now_ms, lease_until_ms, lease_until_ms - now_ms, *tickets])

    async def peek(self, subject: str, now_ms: int, day: int) -> Usage:
        return _usage(now_ms, await self._call(self._peek, self._keys(subject, day), [now_ms, WINDOW_MS]))

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._client.connection_pool.disconnect()  # ours: the client does not close a given pool
