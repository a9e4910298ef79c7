"""The storage interface: one atomic operation per call, for one subject (an account or a key).

Apart from ``storage/__init__.py`` (which chooses a storage by URI) so that the storages can import it
without importing the chooser that imports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

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
