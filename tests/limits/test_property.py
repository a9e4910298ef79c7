"""The limiter against a simple reference model and invariants, on both storages.

Hypothesis draws the limits themselves (small enough that every check binds: requests, tokens, the day
and the in-flight leases) and a run of admissions, settlements, lease renewals, clock steps landing on
window and lease edges, midnight crossings, and retries exactly at ``Retry-After``. Two kinds of check:

- the model keeps every event in plain lists and recomputes each answer from scratch (no expiry, no
  running sums), so it shares no arithmetic with either storage;
- invariants that need no model's answers, only the admissions it recorded: never more than ``rpm``
  admissions in any rolling minute, never more than ``max_parallel`` unexpired leases, reservations
  within the minute and the day at admission, and ``Retry-After`` exact: positive, the same refusal 1 ms before it, and that refusal gone at it (with
  nothing else changed; a later check may still refuse).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from litellm_cloud._errors import ConcurrencyLimited, DailyQuotaExceeded, GatewayError, RateLimited
from litellm_cloud.limits import Cost, Limiter, Limits
from litellm_cloud.limits._types import DAY_MS, WINDOW_MS
from litellm_cloud.limits.storage.memory import MemoryStorage
from litellm_cloud.limits.storage.redis import RedisStorage

from .conftest import RecordingMetrics, RedisServer

LEASE_TTL_MS = 20_000
START_MS = (1_800_000_000_000 // DAY_MS + 1) * DAY_MS - 150_000  # 23:57:30 UTC: days get crossed
ORDER = ["day", "rpm", "tpm", "parallel"]  # the limiter checks in this order; "large" is before all


class MsClock:
    """Whole milliseconds, so that steps add up exactly (float seconds drift by a millisecond)."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000

    def advance(self, ms: int) -> None:
        self.ms += ms


@dataclass
class _Entry:
    subject: str
    ms: int
    amount: int


@dataclass
class Model:
    limits: Limits
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

    def admit(self, subject: str, cost: Cost, ticket: str, now: int) -> tuple[str | None, float | None, int]:
        """(refusal reason, retry_after, reserved)."""
        lim = self.limits
        if cost.need > lim.tpm:
            return "large", 60.0, 0
        n, used, day_used, flying, oldest, _ = self.usage(subject, now)
        day = now // DAY_MS
        if day_used + cost.need > lim.daily_tokens:
            return "day", ((day + 1) * DAY_MS - now) / 1000, 0
        if n >= lim.rpm:
            return "rpm", (oldest + WINDOW_MS - now) / 1000, 0
        if used + cost.need > lim.tpm:
            room_needed, freed = used + cost.need - lim.tpm, 0
            entries = sorted(
                (e.ms, k) for k, e in self.tokens.items() if e.subject == subject and self.counts(e.ms, now)
            )
            for ms, key in entries:
                freed += self.tokens[key].amount
                if freed >= room_needed:
                    return "tpm", (ms + WINDOW_MS - now) / 1000, 0
            raise AssertionError("a request that fits the minute always frees in time")
        if flying >= lim.max_parallel:
            return "parallel", 1.0, 0
        reserved = min(cost.want, lim.tpm - used, lim.daily_tokens - day_used)
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


def reason(err: GatewayError) -> str:
    """Why the limiter refused, from the error alone (RPM and TPM share a class, not a message)."""
    if isinstance(err, DailyQuotaExceeded):
        return "day"
    if isinstance(err, ConcurrencyLimited):
        return "parallel"
    assert isinstance(err, RateLimited), err
    if err.message.startswith("Request too large"):
        return "large"
    return "rpm" if "requests per minute" in err.message else "tpm"


EDGES = [1, 999, 1000, LEASE_TTL_MS - 1, LEASE_TTL_MS, LEASE_TTL_MS + 1, WINDOW_MS - 1, WINDOW_MS, WINDOW_MS + 1]


@st.composite
def cases(draw: Any) -> tuple[Limits, list[tuple]]:
    """Small limits (each one binds in some runs) and a run of operations sized to them."""
    tpm = 10 * draw(st.integers(2, 60))
    limits = Limits(
        rpm=draw(st.integers(1, 8)),
        tpm=tpm,
        daily_tokens=10 * draw(st.integers(tpm // 10, 4 * tpm // 10)),
        max_parallel=draw(st.integers(1, 5)),
    )
    big = st.tuples(st.just("admit"), st.sampled_from(["a", "b"]), st.integers(1, tpm + 5), st.integers(0, tpm))
    # Costs and settlements in tens too, so that "room needed == an entry's amount" happens often.
    tens = st.tuples(st.just("admit"), st.sampled_from(["a", "b"]), st.integers(1, tpm // 10).map(lambda n: 10 * n),
                     st.sampled_from([0, 10, 20, 50]))  # fmt: skip
    small = st.tuples(st.just("admit"), st.sampled_from(["a", "b"]), st.integers(1, max(1, tpm // 8)),
                      st.integers(0, 8))  # fmt: skip
    op = st.one_of(  # weighted by repetition: mostly admissions, short steps, and retries after refusals
        big, tens, small, small,
        st.tuples(st.just("settle"), st.integers(0, 50), st.integers(0, tpm + tpm // 2)),
        st.tuples(st.just("settle"), st.integers(0, 50), st.integers(0, tpm // 10).map(lambda n: 10 * n)),
        st.tuples(st.just("advance"), st.sampled_from(EDGES)),
        # Straight to (1 ms before, at, 1 ms after) the next lease expiry or the oldest admission's expiry.
        st.tuples(st.just("edge"), st.sampled_from(["lease", "window"]), st.sampled_from([-1, 0, 0, 1])),
        st.tuples(st.just("advance"), st.integers(0, 3_000)),
        st.tuples(st.just("advance"), st.integers(0, 30_000)),
        st.tuples(st.just("retry")), st.tuples(st.just("retry")),
        st.tuples(st.just("renew")),
    )  # fmt: skip
    return limits, draw(st.lists(op, min_size=30, max_size=100))


@dataclass
class Harness:
    """Runs operations against the limiter and the model, and checks the invariants."""

    limiter: Limiter
    clock: MsClock
    model: Model
    open_tickets: list[Any] = field(default_factory=list)
    last_refused: tuple[str, Cost, str, float] | None = None  # subject, cost, reason, retry_after

    async def admit(self, subject: str, cost: Cost) -> str | None:
        lim, now = self.model.limits, self.limiter.now_ms()
        decision = await self.limiter.admit(subject, "t", lim, cost)
        ticket_id = decision.ticket.id if decision.ticket else "refused"
        want, retry, reserved = self.model.admit(subject, cost, ticket_id, now)
        if decision.ticket is not None:
            assert want is None, (subject, cost, want)
            assert decision.ticket.reserved == reserved
            self.open_tickets.append(decision.ticket)
            # Invariants over what was admitted (the model's plain event lists): RPM in every rolling
            # minute, leases in flight, reservations within the limits.
            assert sum(1 for s, t in self.model.requests if s == subject and now - WINDOW_MS < t <= now) <= lim.rpm
            in_flight = sum(1 for s, until in self.model.leases.values() if s == subject and until > now)
            assert in_flight <= lim.max_parallel
            assert decision.usage is not None and decision.usage.tokens <= lim.tpm
            assert decision.usage.day_tokens <= lim.daily_tokens
            got = None
        else:
            err = decision.error
            assert err is not None and err.retry_after is not None and err.retry_after > 0, err
            got = reason(err)
            assert got == want, (subject, cost, got, want, err)
            assert err.retry_after == pytest.approx(retry, abs=1e-9), (got, err.retry_after, retry)
            self.last_refused = (subject, cost, got, err.retry_after)
            event(f"refused: {got}")  # --hypothesis-show-statistics: every check binds in some runs
        if decision.usage is not None:
            u = decision.usage
            seen = (u.requests, u.tokens, u.day_tokens, u.in_flight,
                    u.oldest_request_ms or -1, u.oldest_tokens_ms or -1)  # fmt: skip
            assert seen == self.model.usage(subject, now), (subject, cost)
        return got

    async def retry(self, refused: tuple[str, Cost, str, float] | None) -> None:
        """Retry the refusal just made 1 ms before ``Retry-After`` (still refused, same reason), then at it."""
        if refused is None:
            return
        subject, cost, why, retry_after = refused
        if why in ("large", "parallel"):  # never admissible; a hint (leases end when requests do)
            return
        wait_ms = round(retry_after * 1000)
        self.clock.advance(wait_ms - 1)
        assert await self.admit(subject, cost) == why
        self.clock.advance(1)
        then = await self.admit(subject, cost)
        self.last_refused = None
        event(f"retried {why}: then {then or 'admitted'}")
        # Nothing else changed, so this check passes now; a later one (in ORDER) may still refuse.
        assert then is None or ORDER.index(then) > ORDER.index(why), (why, then)

    async def run(self, ops: list[tuple]) -> None:
        for item in ops:
            now = self.limiter.now_ms()
            # Retries test "nothing else changed": only the operation right after a refusal retries it.
            refused, self.last_refused = self.last_refused, None
            if item[0] == "admit":
                _, subject, need, extra = item
                await self.admit(subject, Cost(need=need, want=need + extra))
            elif item[0] == "settle" and self.open_tickets:
                ticket = self.open_tickets.pop(item[1] % len(self.open_tickets))
                await self.limiter.settle(ticket, item[2])
                self.model.settle(ticket.subject, ticket.id, ticket.reserved, ticket.day, item[2], now)
            elif item[0] == "advance":
                self.clock.advance(item[1])
            elif item[0] == "edge":
                _, which, delta = item
                if which == "lease":
                    ends = [until for _, until in self.model.leases.values() if until > now]
                else:
                    ends = [t + WINDOW_MS for _, t in self.model.requests if t + WINDOW_MS > now]
                if ends and min(ends) + delta > now:
                    self.clock.advance(min(ends) + delta - now)
            elif item[0] == "retry":
                await self.retry(refused)
            elif item[0] == "renew":
                await self.limiter.renew_leases()
                self.model.renew([t.id for t in self.open_tickets], now)
        for subject in ("a", "b"):
            u = await self.limiter.usage(subject)
            got = (u.requests, u.tokens, u.day_tokens, u.in_flight, u.oldest_request_ms or -1, u.oldest_tokens_ms or -1)
            assert got == self.model.usage(subject, self.limiter.now_ms())


async def _run(storage_kind: str, url: str, limits: Limits, ops: list[tuple]) -> None:
    if storage_kind == "redis":
        await redis.asyncio.Redis.from_url(url).flushall()
    storage = MemoryStorage() if storage_kind == "memory" else RedisStorage.from_url(url)
    clock = MsClock(START_MS)
    # Retries jump up to a day: no ticket may count as lost (settled at its reservation) meanwhile.
    limiter = Limiter(storage, RecordingMetrics(), clock=clock, lease_ttl_ms=LEASE_TTL_MS, max_request_ms=10 * DAY_MS)
    try:
        await Harness(limiter, clock, Model(limits)).run(ops)
    finally:
        await limiter.aclose()


WIDE_RPM = Limits(rpm=8, tpm=600, daily_tokens=2400, max_parallel=2)


@pytest.mark.parametrize("storage_kind", ["memory", "redis"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
# The edges, each once for sure: the third request in flight; a lease at exactly its expiry; a TPM
# refusal freed exactly by the oldest entry (room needed == its amount); an RPM retry; a day retry.
@example(case=(WIDE_RPM, [("admit", "a", 5, 0), ("admit", "a", 5, 0), ("admit", "a", 5, 0), ("settle", 0, 5),
                          ("admit", "a", 5, 0)]))  # fmt: skip
@example(case=(WIDE_RPM, [("admit", "a", 5, 0), ("admit", "a", 5, 0), ("advance", LEASE_TTL_MS - 1),
                          ("admit", "a", 5, 0), ("advance", 1), ("admit", "a", 5, 0)]))  # fmt: skip
@example(case=(Limits(rpm=8, tpm=100, daily_tokens=400, max_parallel=5),
               [("admit", "a", 60, 0), ("advance", 1000), ("admit", "a", 40, 0), ("admit", "a", 60, 0), ("retry",)]))  # fmt: skip
@example(case=(Limits(rpm=2, tpm=100, daily_tokens=400, max_parallel=5),
               [("admit", "a", 1, 0), ("advance", 7000), ("admit", "a", 1, 0), ("admit", "a", 1, 0), ("retry",)]))  # fmt: skip
@example(case=(Limits(rpm=8, tpm=100, daily_tokens=100, max_parallel=5),
               [("admit", "a", 90, 0), ("settle", 0, 90), ("advance", WINDOW_MS), ("admit", "a", 20, 0),
                ("retry",)]))  # fmt: skip
def test_limiter_matches_the_model_and_its_invariants(
    storage_kind: str, redis_server: RedisServer, case: tuple[Limits, list[tuple]]
) -> None:
    limits, ops = case
    asyncio.run(_run(storage_kind, redis_server.url, limits, ops))
