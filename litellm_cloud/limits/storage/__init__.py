"""Where limit counters live, chosen by URI: ``memory://`` (this process) or ``redis://`` (every replica).

A storage does the window arithmetic of one subject atomically; the strategy (what to reserve, which
error to raise, what to do when the storage fails) is ``limiter.Limiter``'s. Both storages implement the
same algorithm, and one test suite runs against both:

- requests: admission times in the rolling minute (an entry counts for ``now`` in ``[t, t + 60 s)``);
- tokens: one entry per request (its reservation, replaced by the real count when settled) with the
  admission time, plus a running sum; a request settled after its entry left the window adds only what
  it used beyond its reservation, as a new entry at settlement time;
- the UTC day: one counter of reserved and settled tokens;
- in flight: leases with an expiry, renewed while the request runs, so a crashed proxy's slots return.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..._errors import ConfigError
from .._types import AdmitResult, Cost, Limits, Usage


class StorageError(Exception):
    """The storage could not be reached or answered badly (the limiter applies the configured policy)."""


class Storage(Protocol):
    """One atomic operation per call, for one subject (an account or a key)."""

    async def admit(
        self, subject: str, limits: Limits, cost: Cost, ticket: str, now_ms: int, lease_until_ms: int, day: int
    ) -> AdmitResult:
        """Refuse, or count the request, reserve ``min(want, room)`` tokens and take a lease."""
        ...

    async def settle(self, subject: str, ticket: str, reserved: int, actual: int, now_ms: int, day: int) -> Usage:
        """Replace a reservation by ``actual`` tokens and drop the ticket's lease."""
        ...

    async def renew(self, subject: str, tickets: Sequence[str], now_ms: int, lease_until_ms: int) -> None:
        """Extend the leases of ``tickets`` that have not expired by ``now_ms``."""
        ...

    async def peek(self, subject: str, now_ms: int, day: int) -> Usage:
        """The subject's counters, without admitting anything."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def storage_from_uri(uri: str) -> Storage:
    """The storage ``uri`` names; an unknown scheme is a ``ConfigError`` saying what to use."""
    if uri.startswith("memory://"):
        from .memory import MemoryStorage

        return MemoryStorage()
    if uri.startswith(("redis://", "rediss://", "unix://", "redis+sentinel://")):
        from .redis import RedisStorage

        return RedisStorage.from_url(uri)
    raise ConfigError(
        f"limits storage {uri!r}: unknown scheme; use memory:// (one process), redis://host:port/db "
        "or redis+sentinel://host:26379[,host:26379]/<service>[/db] (shared)"
    )


__all__ = ["Storage", "StorageError", "storage_from_uri"]
