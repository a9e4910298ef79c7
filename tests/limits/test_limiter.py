"""The limiter's semantics, against every storage (memory and a real Redis), on an injected clock."""

from __future__ import annotations

import random

import pytest

from litellm_cloud._errors import ConcurrencyLimited, DailyQuotaExceeded, LimiterUnavailable, RateLimited
from litellm_cloud.limits import Cost, Limiter, Limits, estimate_cost

from .conftest import FakeClock, RecordingMetrics, dead_redis_storage

FREE = Limits(rpm=10, tpm=1000, daily_tokens=10_000, max_parallel=2)
WIDE = Limits(rpm=1000, tpm=1_000_000, daily_tokens=10_000_000, max_parallel=1000)
RPM10 = Limits(rpm=10, tpm=1000, daily_tokens=10_000, max_parallel=100)
SMALL = Cost(need=2, want=2)


async def test_rpm_is_a_rolling_minute_without_double_bursts(limiter: Limiter, clock: FakeClock) -> None:
    for _ in range(5):
        assert (await limiter.admit("a", "free", RPM10, SMALL)).ticket
    clock.advance(30)
    for _ in range(5):
        assert (await limiter.admit("a", "free", RPM10, SMALL)).ticket
    refused = await limiter.admit("a", "free", RPM10, SMALL)
    assert isinstance(refused.error, RateLimited) and refused.error.retry_after == pytest.approx(30)
    # A fixed window would open a fresh minute at t=60 and let 10 more through; the rolling one frees 5.
    clock.advance(30)
    admitted = [await limiter.admit("a", "free", RPM10, SMALL) for _ in range(6)]
    assert [d.ticket is not None for d in admitted] == [True] * 5 + [False]
    assert admitted[-1].error.retry_after == pytest.approx(30)  # type: ignore[union-attr]


async def test_entry_counts_until_exactly_one_window_later(limiter: Limiter, clock: FakeClock) -> None:
    lim = Limits(rpm=1, tpm=1000, daily_tokens=10_000, max_parallel=5)
    assert (await limiter.admit("a", "t", lim, SMALL)).ticket
    clock.advance(59.999)
    assert isinstance((await limiter.admit("a", "t", lim, SMALL)).error, RateLimited)
    clock.advance(0.001)
    assert (await limiter.admit("a", "t", lim, SMALL)).ticket


async def test_tpm_reserves_what_fits_and_settles_to_real_usage(limiter: Limiter, clock: FakeClock) -> None:
    first = (await limiter.admit("a", "free", FREE, Cost(need=101, want=700))).ticket
    assert first is not None and first.reserved == 700 and first.usage.tokens == 700
    second = (await limiter.admit("a", "free", FREE, Cost(need=101, want=700))).ticket
    assert second is not None and second.reserved == 300  # only what is left in the minute
    clock.advance(10)
    refused = await limiter.admit("a", "free", FREE, Cost(need=50, want=50))
    assert isinstance(refused.error, RateLimited) and refused.error.retry_after == pytest.approx(50)
    usage = await limiter.settle(first, 150)
    assert usage is not None and usage.tokens == 150 + 300 and usage.day_tokens == 450
    assert await limiter.settle(first, 999) is None  # only the first settlement counts
    assert await limiter.release(second) is not None
    assert (await limiter.usage("a")).tokens == 150
    assert (await limiter.usage("a")).day_tokens == 150


async def test_settled_after_the_window_counts_only_the_overrun(limiter: Limiter, clock: FakeClock) -> None:
    t = (await limiter.admit("a", "free", FREE, Cost(need=10, want=100))).ticket
    assert t is not None
    clock.advance(90)  # a long stream: its reservation has left the window
    usage = await limiter.settle(t, 400)
    assert usage is not None and usage.tokens == 300 and usage.day_tokens == 400


async def test_daily_quota_resets_at_utc_midnight(limiter: Limiter, clock: FakeClock) -> None:
    clock.now = 1_800_000_000 - 1_800_000_000 % 86_400 + 86_400 - 3_600  # 23:00 UTC
    lim = Limits(rpm=1000, tpm=10_000, daily_tokens=2_500, max_parallel=10)
    for _ in range(2):
        t = (await limiter.admit("a", "t", lim, Cost(need=1000, want=1000))).ticket
        assert t is not None
        await limiter.settle(t, 1000)
        clock.advance(61)
    refused = await limiter.admit("a", "t", lim, Cost(need=600, want=600))
    assert isinstance(refused.error, DailyQuotaExceeded)
    assert refused.error.retry_after == pytest.approx(3600 - 122)
    assert (await limiter.admit("a", "t", lim, Cost(need=400, want=800))).ticket.reserved == 500  # type: ignore[union-attr]
    clock.advance(3600 - 122)
    assert (await limiter.usage("a")).day_tokens == 0
    assert (await limiter.admit("a", "t", lim, Cost(need=600, want=600))).ticket


async def test_concurrency_leases_release_and_expire(limiter: Limiter, clock: FakeClock) -> None:
    a = (await limiter.admit("a", "free", FREE, SMALL)).ticket
    b = (await limiter.admit("a", "free", FREE, SMALL)).ticket
    assert a and b
    refused = await limiter.admit("a", "free", FREE, SMALL)
    assert isinstance(refused.error, ConcurrencyLimited) and refused.usage.in_flight == 2  # type: ignore[union-attr]
    await limiter.settle(a, 2)
    assert (await limiter.admit("a", "free", FREE, SMALL)).ticket
    # A renewed lease stays; an abandoned one (a crashed proxy) expires after its TTL.
    clock.advance(limiter.lease_ttl_ms / 1000 - 1)
    await limiter.renew_leases()
    clock.advance(2)
    assert (await limiter.usage("a")).in_flight == 2
    limiter._active.clear()  # this "process" crashed: nobody renews its leases any more
    clock.advance(limiter.lease_ttl_ms / 1000)
    assert (await limiter.usage("a")).in_flight == 0
    assert (await limiter.admit("a", "free", FREE, SMALL)).ticket


async def test_subjects_are_independent(limiter: Limiter) -> None:
    lim = Limits(rpm=1, tpm=100, daily_tokens=100, max_parallel=1)
    assert (await limiter.admit("a", "t", lim, SMALL)).ticket
    assert (await limiter.admit("b", "t", lim, SMALL)).ticket
    assert (await limiter.admit("a", "t", lim, SMALL)).error


async def test_request_larger_than_the_minute_is_refused_without_storage(limiter: Limiter) -> None:
    d = await limiter.admit("a", "free", FREE, Cost(need=1001, want=1001))
    assert isinstance(d.error, RateLimited) and "too large" in d.error.message


def _ordinary_request(i: int) -> dict:
    return {
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are a friendly companion."},
            {"role": "user", "content": f"Tell me something nice about day {i} in two short sentences."},
        ],
    }


async def test_free_user_with_ten_ordinary_requests_a_minute_is_never_refused(
    limiter: Limiter, clock: FakeClock
) -> None:
    rng = random.Random(4)
    cost = estimate_cost(_ordinary_request(0), "acompletion", FREE)
    assert cost.need < 40 and cost.want == 100  # a fair share of the minute, not a whole minute
    # As many at once as the tier lets run (two), settled at ~100 tokens each...
    tickets = [(await limiter.admit("free-user", "free", FREE, cost)) for _ in range(2)]
    assert all(d.ticket for d in tickets)
    for d in tickets:
        await limiter.settle(d.ticket, 100)  # type: ignore[arg-type]
    # ...then nine minutes of ten requests a minute at random spacing (>= 6 s), two overlapping at times
    # (90 requests: the day's 10,000 tokens are the next limit, as they should be).
    clock.advance(60)
    pending = []
    for i in range(90):
        clock.advance(6 + rng.random() * 0.5)
        d = await limiter.admit("free-user", "free", FREE, estimate_cost(_ordinary_request(i), "acompletion", FREE))
        assert d.ticket is not None, (i, d.error)
        pending.append(d.ticket)
        if len(pending) == 2 or rng.random() < 0.5:
            await limiter.settle(pending.pop(0), rng.randint(90, 110))


async def test_fail_closed_refuses_with_503_and_counts() -> None:
    metrics = RecordingMetrics()
    dead = dead_redis_storage()
    lim = Limiter(dead, metrics, on_storage_error="closed", clock=FakeClock())
    d = await lim.admit("a", "free", FREE, SMALL)
    assert isinstance(d.error, LimiterUnavailable) and d.error.status == 503
    assert metrics.fallbacks == ["closed"]
    await lim.aclose()


async def test_fail_open_serves_with_process_limits_and_counts() -> None:
    metrics = RecordingMetrics()
    dead = dead_redis_storage()
    lim = Limiter(dead, metrics, on_storage_error="open", clock=FakeClock())
    lim1 = Limits(rpm=3, tpm=1000, daily_tokens=1000, max_parallel=10)
    results = [await lim.admit("a", "t", lim1, SMALL) for _ in range(4)]
    assert [r.ticket is not None for r in results] == [True, True, True, False]
    assert metrics.fallbacks == ["open"] * 4
    await lim.aclose()
