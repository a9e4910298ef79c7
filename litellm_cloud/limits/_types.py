"""The values the limiter and its storages exchange: limits, a request's cost, a usage snapshot.

Times are integer **milliseconds** since the epoch everywhere below the limiter: Redis sorted-set scores
and Lua numbers are doubles, and integers keep both storages bit-for-bit identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..tiers import Tier

WINDOW_MS = 60_000
DAY_MS = 86_400_000


def window_reset_ms(oldest_ms: int | None, now_ms: int) -> int:
    """Milliseconds until the entry made at ``oldest_ms`` leaves the rolling minute (0: nothing counted).

    Replicas stamp entries with their own clocks, so an entry can be a few ms "newer" than ``now_ms``:
    never more than a window, never negative.
    """
    return 0 if oldest_ms is None else min(WINDOW_MS, max(0, oldest_ms + WINDOW_MS - now_ms))


def next_day_ms(now_ms: int) -> int:
    """When the UTC day of ``now_ms`` ends (the daily quota resets), in ms since the epoch."""
    return (now_ms // DAY_MS + 1) * DAY_MS


@dataclass(frozen=True, slots=True)
class Limits:
    """What one subject may use: requests and tokens per rolling minute, tokens per UTC day, in flight."""

    rpm: int
    tpm: int
    daily_tokens: int
    max_parallel: int

    @classmethod
    def of(cls, tier: Tier) -> Limits:
        return cls(rpm=tier.rpm, tpm=tier.tpm, daily_tokens=tier.daily_tokens, max_parallel=tier.max_parallel)


@dataclass(frozen=True, slots=True)
class Cost:
    """The tokens a request asks to reserve: at least ``need`` (prompt + 1), ideally ``want``."""

    need: int
    want: int

    def __post_init__(self) -> None:
        if not 0 < self.need <= self.want:
            raise ValueError(f"cost needs 0 < need <= want, got need={self.need} want={self.want}")


class RefusalReason(str, Enum):
    """Why a storage refused an admission (the limiter turns it into a ``LimitError``)."""

    DAY = "day"
    RPM = "rpm"
    TPM = "tpm"
    PARALLEL = "parallel"


@dataclass(frozen=True, slots=True)
class Usage:
    """One subject's counters at ``now_ms`` (after the operation that produced it)."""

    now_ms: int
    requests: int  # admitted in the rolling minute
    tokens: int  # reserved or settled in the rolling minute
    day_tokens: int  # reserved or settled this UTC day
    in_flight: int  # unexpired leases
    oldest_request_ms: int | None  # when the oldest counted request was admitted
    oldest_tokens_ms: int | None  # when the oldest counted token entry was made


@dataclass(frozen=True, slots=True)
class AdmitResult:
    """A storage's answer to one admission: ``refusal is None`` means admitted with ``reserved`` tokens.

    ``free_at_ms`` (refusals only) is when the blocking counter frees enough room: the admission time of
    the entry whose expiry makes room (RPM, TPM); ``None`` for the day and concurrency.
    """

    refusal: RefusalReason | None
    reserved: int
    free_at_ms: int | None
    usage: Usage
