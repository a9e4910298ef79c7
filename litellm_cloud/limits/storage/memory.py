"""``memory://``: counters in this process (development, and the fail-open fallback).

Each operation runs without awaiting, so on one event loop it is atomic like the Redis scripts. The
algorithm mirrors ``admit.lua``/``settle.lua`` step by step (see ``storage/__init__.py``).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

from .._types import WINDOW_MS, AdmitResult, Cost, Limits, RefusalReason, Usage


@dataclass
class _Subject:
    requests: list[tuple[int, str]] = field(default_factory=list)  # (admitted_ms, ticket), sorted
    token_times: list[tuple[int, str]] = field(default_factory=list)  # (ms, entry id), sorted
    token_amounts: dict[str, int] = field(default_factory=dict)
    token_sum: int = 0
    leases: dict[str, int] = field(default_factory=dict)  # ticket -> expiry ms
    days: dict[int, int] = field(default_factory=dict)  # UTC day number -> tokens

    def expire(self, now_ms: int) -> None:
        cutoff = now_ms - WINDOW_MS
        # An entry made at t counts while now < t + window, i.e. it goes once t <= cutoff.
        cut = bisect.bisect_right(self.requests, (cutoff, "\U0010ffff"))
        del self.requests[:cut]
        cut = bisect.bisect_right(self.token_times, (cutoff, "\U0010ffff"))
        for _, entry in self.token_times[:cut]:
            self.token_sum -= self.token_amounts.pop(entry, 0)
        del self.token_times[:cut]
        for ticket in [t for t, until in self.leases.items() if until <= now_ms]:
            del self.leases[ticket]

    def usage(self, now_ms: int, day: int) -> Usage:
        return Usage(
            now_ms=now_ms,
            requests=len(self.requests),
            tokens=self.token_sum,
            day_tokens=self.days.get(day, 0),
            in_flight=len(self.leases),
            oldest_request_ms=self.requests[0][0] if self.requests else None,
            oldest_tokens_ms=self.token_times[0][0] if self.token_times else None,
        )

    def tokens_free_at(self, room_needed: int) -> int | None:
        """When enough token entries expire that ``room_needed`` more tokens fit."""
        freed = 0
        for ms, entry in self.token_times:
            freed += self.token_amounts.get(entry, 0)
            if freed >= room_needed:
                return ms
        return None


class MemoryStorage:
    """Limit counters in a dict, per subject."""

    def __init__(self) -> None:
        self._subjects: dict[str, _Subject] = {}

    def _get(self, subject: str, now_ms: int, day: int) -> _Subject:
        state = self._subjects.get(subject)
        if state is None:
            state = self._subjects[subject] = _Subject()
        state.expire(now_ms)
        for old in [d for d in state.days if d < day - 1]:
            del state.days[old]
        return state

    async def admit(
        self, subject: str, limits: Limits, cost: Cost, ticket: str, now_ms: int, lease_until_ms: int, day: int
    ) -> AdmitResult:
        s = self._get(subject, now_ms, day)
        day_used = s.days.get(day, 0)
        refusal: RefusalReason | None = None
        free_at: int | None = None
        if day_used + cost.need > limits.daily_tokens:
            refusal = RefusalReason.DAY
        elif len(s.requests) >= limits.rpm:
            refusal, free_at = RefusalReason.RPM, s.requests[0][0]
        elif s.token_sum + cost.need > limits.tpm:
            refusal = RefusalReason.TPM
            free_at = s.tokens_free_at(s.token_sum + cost.need - limits.tpm)
        elif len(s.leases) >= limits.max_parallel:
            refusal = RefusalReason.PARALLEL
        if refusal is not None:
            return AdmitResult(refusal=refusal, reserved=0, free_at_ms=free_at, usage=s.usage(now_ms, day))
        reserved = min(cost.want, limits.tpm - s.token_sum, limits.daily_tokens - day_used)
        bisect.insort(s.requests, (now_ms, ticket))
        bisect.insort(s.token_times, (now_ms, ticket))
        s.token_amounts[ticket] = reserved
        s.token_sum += reserved
        s.days[day] = day_used + reserved
        s.leases[ticket] = lease_until_ms
        return AdmitResult(refusal=None, reserved=reserved, free_at_ms=None, usage=s.usage(now_ms, day))

    async def settle(self, subject: str, ticket: str, reserved: int, actual: int, now_ms: int, day: int) -> Usage:
        s = self._get(subject, now_ms, day)
        if ticket in s.token_amounts:
            s.token_sum += actual - s.token_amounts[ticket]
            s.token_amounts[ticket] = actual
        elif actual > reserved:
            entry = ticket + ":s"
            bisect.insort(s.token_times, (now_ms, entry))
            s.token_amounts[entry] = actual - reserved
            s.token_sum += actual - reserved
        s.days[day] = max(0, s.days.get(day, 0) + actual - reserved)
        s.leases.pop(ticket, None)
        return s.usage(now_ms, day)

    async def renew(self, subject: str, tickets: Sequence[str], now_ms: int, lease_until_ms: int) -> None:
        state = self._subjects.get(subject)
        if state is None:
            return
        for ticket in tickets:
            if state.leases.get(ticket, now_ms) > now_ms:
                state.leases[ticket] = lease_until_ms

    async def peek(self, subject: str, now_ms: int, day: int) -> Usage:
        return self._get(subject, now_ms, day).usage(now_ms, day)

    async def aclose(self) -> None:
        return None
