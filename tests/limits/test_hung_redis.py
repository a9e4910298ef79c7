"""The circuit breaker against a real redis-server that hangs (SIGSTOP) instead of dying.

A dead Redis refuses connections at once; a hung one answers nothing, so each call waits for the client's
socket timeout (2 s, longer than the 1 s pause after a failure). The pause must count from the failure:
after the first slow failure, admissions are answered at once by the policy until the pause is over,
then one probe tries Redis again, and the limiter is back on Redis once it answers.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from litellm_cloud._errors import LimiterUnavailable
from litellm_cloud.limits import Cost, Limiter, Limits
from litellm_cloud.limits.storage.redis import RedisStorage

from .conftest import RecordingMetrics, RedisServer

LIMITS = Limits(rpm=100, tpm=100_000, daily_tokens=1_000_000, max_parallel=100)
SMALL = Cost(need=2, want=2)
SLOW = 1.5  # a call that waited for the 2 s socket timeout
FAST = 0.2  # a call answered without Redis (generous: the machine is shared)


class JumpClock:
    """Real time (a hung Redis takes real seconds), plus jumps forward by hand."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def jump(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def frozen_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.process.signal(signal.SIGCONT)  # type: ignore[union-attr]  # a stopped process ignores SIGTERM
        server.stop()


async def _timed(coro: object) -> tuple[float, object]:
    started = time.monotonic()
    result = await coro  # type: ignore[misc]
    return time.monotonic() - started, result


@pytest.mark.parametrize("mode", ["closed", "open"])
async def test_hung_redis_costs_one_slow_attempt_per_pause(mode: str, frozen_redis: RedisServer) -> None:
    clock, metrics = JumpClock(), RecordingMetrics()
    storage = RedisStorage.from_url(frozen_redis.url)
    limiter = Limiter(storage, metrics, on_storage_error=mode, clock=clock)  # type: ignore[arg-type]
    proc = frozen_redis.process
    assert proc is not None

    def policy_answer(decision: object) -> bool:
        """The answer the policy gives without Redis: 503 (closed) or a per-process ticket (open)."""
        if mode == "closed":
            return isinstance(getattr(decision, "error", None), LimiterUnavailable)
        ticket = getattr(decision, "ticket", None)
        return ticket is not None and ticket.storage is limiter.fallback

    try:
        assert (await limiter.admit("a", "t", LIMITS, SMALL)).ticket  # Redis up: a warm connection
        proc.signal(signal.SIGSTOP)
        took, first = await _timed(limiter.admit("a", "t", LIMITS, SMALL))
        assert took >= SLOW and policy_answer(first), took
        # Within the pause: answered at once, by the policy, without touching Redis.
        for _ in range(5):
            took, decision = await _timed(limiter.admit("a", "t", LIMITS, SMALL))
            assert took < FAST and policy_answer(decision), took
        # The pause is over: one probe waits for Redis again; a request arriving meanwhile does not.
        clock.jump(1.0)
        probe = asyncio.ensure_future(_timed(limiter.admit("a", "t", LIMITS, SMALL)))
        await asyncio.sleep(0.05)
        took, during = await _timed(limiter.admit("a", "t", LIMITS, SMALL))
        assert took < FAST and policy_answer(during), took
        clock.jump(1.5)  # still probing after more than a pause: still no second probe
        took, during = await _timed(limiter.admit("a", "t", LIMITS, SMALL))
        assert took < FAST and policy_answer(during), took
        took, probed = await probe
        assert took >= SLOW and policy_answer(probed), took
        took, decision = await _timed(limiter.admit("a", "t", LIMITS, SMALL))
        assert took < FAST and policy_answer(decision), took
        # Redis resumes: after the pause the next admission is Redis's again, and fast.
        proc.signal(signal.SIGCONT)
        clock.jump(1.0)
        took, back = await _timed(limiter.admit("a", "t", LIMITS, SMALL))
        assert back.ticket is not None and back.ticket.storage is storage and took < FAST, (took, back.error)
        took, again = await _timed(limiter.admit("a", "t", LIMITS, SMALL))
        assert again.ticket is not None and again.ticket.storage is storage and took < FAST
        # A timed-out call may still run when Redis resumes (its command sat in the socket buffer): at
        # most the two slow attempts are counted in addition, and their leases, renewed by nobody,
        # expire after the lease TTL.
        await limiter.settle(back.ticket, 2)
        await limiter.settle(again.ticket, 2)
        usage = await limiter.usage("a")
        assert 3 <= usage.requests <= 5 and usage.in_flight <= 2, usage
        clock.jump(limiter.lease_ttl_ms / 1000)
        assert (await limiter.usage("a")).in_flight == 0
        # Two slow failures, nine policy answers in all, each counted.
        assert metrics.fallbacks == [mode] * 10
    finally:
        proc.signal(signal.SIGCONT)
        await limiter.aclose()
