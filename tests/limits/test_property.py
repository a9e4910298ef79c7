"""The limiter against a simple reference model: random arrivals, costs and clock, on both storages.

The model keeps every event in plain lists and recomputes each answer from scratch (no expiry, no
running sums), so it shares no arithmetic with either storage.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from litellm_cloud._errors import ConcurrencyLimited, DailyQuotaExceeded, RateLimited
from litellm_cloud.limits import Cost, Limiter, Limits
from litellm_cloud.limits._types import DAY_MS, WINDOW_MS
from litellm_cloud.limits.storage.memory import MemoryStorage
from litellm_cloud.limits.storage.redis import RedisStorage

from .conftest import FakeClock, RecordingMetrics, RedisServer

LIMITS = Limits(rpm=4, tpm=1000, daily_tokens=1800, max_parallel=3)
LEASE_TTL_MS = 20_000
START_MS = (1_800_000_000_000 // DAY_MS + 1) * DAY_MS - 150_000  # 23:57:30 UTC: days get crossed


@dataclass
class _Entry:
    subject: str
    ms: int
    amount: int


@dataclass
class Model:
    requests: list[tuple[str, int]] = field(default_factory=list)
    tokens: dict[str, _Entry] = field(default_factory=dict)
    leases: dict[str, tuple[str, int]] = field(default_factory=dict)
    days: dict[tuple[str, int], int] = field(default_factory=dict)

    @staticmethod
    def counts(ms: int, now: int) -> bool:
        return now - WINDOW_MS < ms <= now

    def usage(self, subject: str, now: int) -> tuple[int, ...]:
        reqs = sorted(ms for s, ms in self.requests if s == subject and self.counts(ms, now))
        toks = sorted(e.ms for e in self.tokens.values() if e.subject == subject and self.counts(e.ms, now))
        return (
            len(reqs),
            sum(e.amount for e in self.tokens.values() if e.subject == subject and self.counts(e.ms, now)),
            self.days.get((subject, now // DAY_MS), 0),
            sum(1 for s, until in self.leases.values() if s == subject and until > now),
            reqs[0] if reqs else -1,
            toks[0] if toks else -1,
        )

    def admit(self, subject: str, cost: Cost, ticket: str, now: int) -> tuple[type | None, float | None, int]:
        """(error type, retry_after, reserved)."""
        if cost.need > LIMITS.tpm:
            return RateLimited, 60.0, 0
        n, used, day_used, flying, oldest, _ = self.usage(subject, now)
        day = now // DAY_MS
        if day_used + cost.need > LIMITS.daily_tokens:
            return DailyQuotaExceeded, ((day + 1) * DAY_MS - now) / 1000, 0
        if n >= LIMITS.rpm:
            return RateLimited, (oldest + WINDOW_MS - now) / 1000, 0
        if used + cost.need > LIMITS.tpm:
            room_needed, freed = used + cost.need - LIMITS.tpm, 0
            entries = sorted(
                (e.ms, k) for k, e in self.tokens.items() if e.subject == subject and self.counts(e.ms, now)
            )
            for ms, key in entries:
                freed += self.tokens[key].amount
                if freed >= room_needed:
                    return RateLimited, (ms + WINDOW_MS - now) / 1000, 0
            raise AssertionError("a request that fits the minute always frees in time")
        if flying >= LIMITS.max_parallel:
            return ConcurrencyLimited, 1.0, 0
        reserved = min(cost.want, LIMITS.tpm - used, LIMITS.daily_tokens - day_used)
        self.requests.append((subject, now))
        self.tokens[ticket] = _Entry(subject, now, reserved)
        self.days[(subject, day)] = day_used + reserved
        self.leases[ticket] = (subject, now + LEASE_TTL_MS)
        return None, None, reserved

    def settle(self, subject: str, ticket: str, reserved: int, day: int, actual: int, now: int) -> None:
        entry = self.tokens[ticket]
        if self.counts(entry.ms, now):
            entry.amount = actual
        elif actual > reserved:
            self.tokens[ticket + ":s"] = _Entry(subject, now, actual - reserved)
        self.days[(subject, day)] = max(0, self.days.get((subject, day), 0) + actual - reserved)
        self.leases.pop(ticket, None)

    def renew(self, tickets: list[str], now: int) -> None:
        for t in tickets:
            if t in self.leases and self.leases[t][1] > now:
                self.leases[t] = (self.leases[t][0], now + LEASE_TTL_MS)


op = st.one_of(
    st.tuples(st.just("admit"), st.sampled_from(["a", "b"]), st.integers(1, 1100), st.integers(0, 600)),
    st.tuples(st.just("settle"), st.integers(0, 50), st.integers(0, 900)),
    # Steps that land exactly on window and lease edges, and arbitrary ones.
    st.tuples(st.just("advance"), st.sampled_from([1, 999, 1000, 19_999, 20_000, 59_999, 60_000, 60_001])),
    st.tuples(st.just("advance"), st.integers(0, 40_000)),
    st.tuples(st.just("renew")),
)


async def _run(storage_kind: str, url: str, ops: list[tuple]) -> None:
    if storage_kind == "redis":
        await redis.asyncio.Redis.from_url(url).flushall()
    storage = MemoryStorage() if storage_kind == "memory" else RedisStorage.from_url(url)
    clock = FakeClock(START_MS / 1000)
    limiter = Limiter(storage, RecordingMetrics(), clock=clock, lease_ttl_ms=LEASE_TTL_MS)
    model = Model()
    open_tickets = []
    try:
        for item in ops:
            now = limiter.now_ms()
            if item[0] == "admit":
                _, subject, need, extra = item
                cost = Cost(need=need, want=need + extra)
                decision = await limiter.admit(subject, "t", LIMITS, cost)
                ticket_id = decision.ticket.id if decision.ticket else "refused"
                err, retry, reserved = model.admit(subject, cost, ticket_id, now)
                if err is None:
                    assert decision.ticket is not None, (item, decision.error)
                    assert decision.ticket.reserved == reserved
                    open_tickets.append(decision.ticket)
                else:
                    assert decision.error is not None and isinstance(decision.error, err), (item, decision.error)
                    assert decision.error.retry_after == pytest.approx(retry)
                if decision.usage is not None:
                    u = decision.usage
                    got = (u.requests, u.tokens, u.day_tokens, u.in_flight,
                           u.oldest_request_ms or -1, u.oldest_tokens_ms or -1)  # fmt: skip
                    assert got == model.usage(subject, now), item
            elif item[0] == "settle" and open_tickets:
                ticket = open_tickets.pop(item[1] % len(open_tickets))
                await limiter.settle(ticket, item[2])
                model.settle(ticket.subject, ticket.id, ticket.reserved, ticket.day, item[2], now)
            elif item[0] == "advance":
                clock.advance(item[1] / 1000)
            elif item[0] == "renew":
                await limiter.renew_leases()
                model.renew([t.id for t in open_tickets], now)
        for subject in ("a", "b"):
            u = await limiter.usage(subject)
            got = (u.requests, u.tokens, u.day_tokens, u.in_flight, u.oldest_request_ms or -1, u.oldest_tokens_ms or -1)
            assert got == model.usage(subject, limiter.now_ms())
    finally:
        await limiter.aclose()


@pytest.mark.parametrize("storage_kind", ["memory", "redis"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=1, max_size=60))
def test_limiter_matches_the_reference_model(storage_kind: str, redis_server: RedisServer, ops: list[tuple]) -> None:
    asyncio.run(_run(storage_kind, redis_server.url, ops))
