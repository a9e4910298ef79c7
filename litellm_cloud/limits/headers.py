"""OpenAI-style rate-limit headers from a usage snapshot.

``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` describe the rolling minute; the reset is the
time until the oldest counted request (token entry) leaves the window, i.e. when ``remaining`` next
grows, which is what a client waiting at ``remaining: 0`` needs. ``x-ratelimit-*-tokens-day`` describe
the UTC day's quota; its reset is the time to 00:00 UTC. Durations are written the way OpenAI writes
them: ``20ms``, ``6s``, ``1m0s``, ``5h3m2s``.

When the counters are unknown (the storage is down and the policy is ``closed``, or a request too large
for the tier was refused without asking the storage), ``limit_headers`` gives what the tier alone says:
the three limits and the time to the daily reset, no ``remaining`` and no minute resets.
"""

from __future__ import annotations

import math

from ._types import Limits, Usage, next_day_ms, window_reset_ms


def duration(ms: int) -> str:
    """``ms`` as an OpenAI-style duration (whole seconds, rounded up, from one second on)."""
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    total = math.ceil(ms / 1000)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rate_limit_headers(limits: Limits, usage: Usage) -> dict[str, str]:
    """The response headers for ``usage`` under ``limits``."""
    now = usage.now_ms
    return {
        **limit_headers(limits, now),
        "x-ratelimit-remaining-requests": str(max(0, limits.rpm - usage.requests)),
        "x-ratelimit-reset-requests": duration(window_reset_ms(usage.oldest_request_ms, now)),
        "x-ratelimit-remaining-tokens": str(max(0, limits.tpm - usage.tokens)),
        "x-ratelimit-reset-tokens": duration(window_reset_ms(usage.oldest_tokens_ms, now)),
        "x-ratelimit-remaining-tokens-day": str(max(0, limits.daily_tokens - usage.day_tokens)),
    }


def limit_headers(limits: Limits, now_ms: int) -> dict[str, str]:
    """The headers known without counters: the limits, and the daily reset (a matter of the clock)."""
    return {
        "x-ratelimit-limit-requests": str(limits.rpm),
        "x-ratelimit-limit-tokens": str(limits.tpm),
        "x-ratelimit-limit-tokens-day": str(limits.daily_tokens),
        "x-ratelimit-reset-tokens-day": duration(next_day_ms(now_ms) - now_ms),
    }
