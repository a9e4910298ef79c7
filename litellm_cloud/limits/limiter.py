"""The tier limiter: one set of semantics over any storage.

``admit`` reserves a request's estimated tokens (``estimate.py``) or refuses it with a ``LimitError``
carrying ``retry_after``; ``settle`` replaces the reservation with the real count (``release`` gives it
all back) exactly once per ticket; ``renew_leases`` keeps the concurrency leases of running requests
alive (``start_heartbeat``), so a crashed proxy's slots come back after ``lease_ttl_ms``.

When the storage fails, the configured policy applies (``on_storage_error``): ``closed`` refuses with
``503 limiter_unavailable``; ``open`` serves with this process's own counters. Both are logged and
counted (``Metrics.limiter_storage_fallback``). After a failure the storage is left alone for
``retry_storage_after_ms``, so a dead Redis costs one refused connection a second, not one a request.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .._errors import (
    ConcurrencyLimited,
    DailyQuotaExceeded,
    GatewayError,
    LimiterUnavailable,
    RateLimited,
)
from ..observability import Metrics
from ._types import DAY_MS, WINDOW_MS, AdmitResult, Cost, Limits, RefusalReason, Usage, next_day_ms, window_reset_ms
from .storage import Storage, StorageError
from .storage.memory import MemoryStorage

log = logging.getLogger("litellm_cloud.limits")

Clock = Callable[[], float]  # seconds since the epoch (UTC)
# Longest a storage probe may take before the next request probes again: above the Redis storage's
# socket timeout with its retry (2 s), so a hung Redis sees one probe at a time.
PROBE_WINDOW_MS = 10_000


@dataclass(eq=False)
class Ticket:
    """One admitted request: what it reserved, where, and the latest counters seen."""

    id: str
    subject: str
    reserved: int
    day: int
    storage: Storage
    usage: Usage
    settled: bool = False
    created_ms: int = 0


@dataclass(frozen=True)
class Decision:
    """The answer to ``admit``: a ticket, or an error to raise; ``usage`` feeds the response headers."""

    ticket: Ticket | None = None
    error: GatewayError | None = None
    usage: Usage | None = None


def seconds(ms: int) -> float:
    return max(0, ms) / 1000.0


@dataclass
class _Breaker:
    down_until_ms: int = 0
    down: bool = False
    failures: int = field(default=0)


class Limiter:
    """Admits, settles and reports the tier limits of subjects (accounts or keys)."""

    def __init__(
        self,
        storage: Storage,
        metrics: Metrics,
        *,
        on_storage_error: Literal["closed", "open"] = "closed",
        clock: Clock = time.time,
        lease_ttl_ms: int = 30_000,
        retry_storage_after_ms: int = 1_000,
        max_request_ms: int = 1_800_000,
    ) -> None:
        self.storage = storage
        self.fallback: Storage | None = MemoryStorage() if on_storage_error == "open" else None
        self.on_storage_error = on_storage_error
        self._metrics = metrics
        self._clock = clock
        self.lease_ttl_ms = lease_ttl_ms
        self._retry_after_ms = retry_storage_after_ms
        self._max_request_ms = max_request_ms
        self._breaker = _Breaker()
        self._active: dict[str, Ticket] = {}
        self._heartbeat: asyncio.Task[None] | None = None

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    @staticmethod
    def day_of(now_ms: int) -> int:
        return now_ms // DAY_MS

    # --- admission ---------------------------------------------------------------------------------

    async def admit(self, subject: str, tier: str, limits: Limits, cost: Cost) -> Decision:
        """Admit a request of ``cost`` for ``subject`` under ``limits``, or say why not."""
        now = self.now_ms()
        day = self.day_of(now)
        if cost.need > limits.tpm:
            err: GatewayError = RateLimited(
                f"Request too large: it needs about {cost.need} tokens; the {tier} tier allows {limits.tpm} "
                "tokens per minute.",
                retry_after=seconds(WINDOW_MS),
            )
            return Decision(error=err)
        ticket_id = secrets.token_hex(8)
        storage = self._storage(now)
        if storage is None:
            return Decision(error=self._unavailable())
        try:
            result = await storage.admit(subject, limits, cost, ticket_id, now, now + self.lease_ttl_ms, day)
        except StorageError as exc:
            self._storage_failed(exc)
            if self.fallback is None:
                return Decision(error=self._unavailable())
            self._metrics.limiter_storage_fallback("open")
            storage = self.fallback
            result = await storage.admit(subject, limits, cost, ticket_id, now, now + self.lease_ttl_ms, day)
        else:
            if storage is self.storage:
                self._storage_ok()
            else:
                self._metrics.limiter_storage_fallback("open")
        if result.refusal is not None:
            return Decision(error=self._refusal(result, tier, limits, cost, now), usage=result.usage)
        ticket = Ticket(ticket_id, subject, result.reserved, day, storage, result.usage, created_ms=now)
        self._active[ticket_id] = ticket
        return Decision(ticket=ticket, usage=result.usage)

    def _refusal(self, res: AdmitResult, tier: str, limits: Limits, cost: Cost, now: int) -> GatewayError:
        # Without the entry whose expiry makes room (should not happen), promise a whole window.
        wait_ms = WINDOW_MS if res.free_at_ms is None else window_reset_ms(res.free_at_ms, now)
        if res.refusal is RefusalReason.DAY:
            return DailyQuotaExceeded(
                f"Daily quota of {limits.daily_tokens} tokens reached for the {tier} tier (it resets at 00:00 UTC).",
                retry_after=seconds(next_day_ms(now) - now),
            )
        if res.refusal is RefusalReason.RPM:
            return RateLimited(
                f"Rate limit reached: {limits.rpm} requests per minute for the {tier} tier.",
                retry_after=seconds(wait_ms),
            )
        if res.refusal is RefusalReason.TPM:
            return RateLimited(
                f"Rate limit reached: {limits.tpm} tokens per minute for the {tier} tier "
                f"(this request needs about {cost.need}).",
                retry_after=seconds(wait_ms),
            )
        return ConcurrencyLimited(
            f"Too many requests in flight: the {tier} tier allows {limits.max_parallel} at once.",
            retry_after=1.0,
        )

    # --- settlement --------------------------------------------------------------------------------

    async def settle(self, ticket: Ticket, actual_tokens: int) -> Usage | None:
        """Charge ``actual_tokens`` instead of the reservation and free the slot; only the first call counts."""
        if ticket.settled:
            return None
        ticket.settled = True
        self._active.pop(ticket.id, None)
        now = self.now_ms()
        try:
            usage = await ticket.storage.settle(
                ticket.subject, ticket.id, ticket.reserved, max(0, actual_tokens), now, ticket.day
            )
        except StorageError as exc:
            # The reservation stays charged and the lease expires on its own: never worse than the estimate.
            self._storage_failed(exc)
            return None
        ticket.usage = usage
        return usage

    async def release(self, ticket: Ticket) -> Usage | None:
        """Give the whole reservation back (a failed or refused call); the request itself stays counted."""
        return await self.settle(ticket, 0)

    # --- leases ------------------------------------------------------------------------------------

    async def renew_leases(self) -> None:
        """Extend the leases of every running request of this process.

        A ticket older than ``max_request_ms`` was lost by its request (no hook settled it): it is
        settled at its reservation instead of holding a slot for ever.
        """
        now = self.now_ms()
        groups: dict[tuple[int, str], list[Ticket]] = defaultdict(list)
        for ticket in list(self._active.values()):
            if now - ticket.created_ms > self._max_request_ms:
                log.warning(
                    "ticket of %s unsettled after %d s: settled at its reservation",
                    ticket.subject,
                    (now - ticket.created_ms) // 1000,
                )
                await self.settle(ticket, ticket.reserved)
                continue
            groups[(id(ticket.storage), ticket.subject)].append(ticket)
        for tickets in groups.values():
            try:
                await tickets[0].storage.renew(
                    tickets[0].subject, [t.id for t in tickets], now, now + self.lease_ttl_ms
                )
            except StorageError as exc:
                self._storage_failed(exc)

    def start_heartbeat(self) -> None:
        """Renew leases every third of their TTL from the running event loop (idempotent).

        Started with the proxy by ``gateway.Gateway.start``, not by requests.
        """
        if self._heartbeat is not None and not self._heartbeat.done():
            return
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat(), name="limits-lease-heartbeat")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl_ms / 3000)
            try:
                await self.renew_leases()
            except Exception:  # the heartbeat must outlive any one bad round
                log.exception("lease renewal failed")

    # --- reading -----------------------------------------------------------------------------------

    async def usage(self, subject: str) -> Usage:
        """The subject's counters now (from the fallback while the storage is down in ``open`` mode)."""
        now = self.now_ms()
        storage = self._storage(now)
        if storage is None:
            raise self._unavailable()
        try:
            usage = await storage.peek(subject, now, self.day_of(now))
        except StorageError as exc:
            self._storage_failed(exc)
            if self.fallback is None:
                raise self._unavailable() from exc
            return await self.fallback.peek(subject, now, self.day_of(now))
        if storage is self.storage:
            self._storage_ok()
        return usage

    @property
    def in_flight(self) -> int:
        """Requests of this process holding a lease."""
        return len(self._active)

    async def aclose(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            try:
                await self._heartbeat
            except (asyncio.CancelledError, RuntimeError):
                pass
            self._heartbeat = None
        await self.storage.aclose()

    # --- storage health ----------------------------------------------------------------------------

    def _storage(self, now: int) -> Storage | None:
        """The storage to use now: during the pause after a failure, the fallback (open) or none (closed).

        Once the pause is over, the caller that sees it first probes the storage, and the pause is
        extended for everyone else meanwhile: a hung storage answers a probe only after its socket
        timeout, and without this every request arriving during that timeout would wait for it too.
        """
        b = self._breaker
        if not b.down:
            return self.storage
        if now < b.down_until_ms:
            return self.fallback
        # The probe's own outcome ends this (failure: a new pause; success: closed); the bound only
        # matters if the probe never reports (its request was cancelled).
        b.down_until_ms = now + PROBE_WINDOW_MS
        return self.storage

    def _unavailable(self) -> LimiterUnavailable:
        self._metrics.limiter_storage_fallback("closed")
        return LimiterUnavailable(
            "The rate limiter is unavailable; retry shortly.", retry_after=seconds(self._retry_after_ms)
        )

    def _storage_failed(self, exc: StorageError) -> None:
        # The pause counts from the failure, not from the call: a hung storage fails only after its
        # socket timeout (2 s), longer than the pause itself.
        b = self._breaker
        b.failures += 1
        b.down_until_ms = self.now_ms() + self._retry_after_ms
        if not b.down:
            b.down = True
            log.error("limits storage failed (%s); policy on_storage_error=%s", exc, self.on_storage_error)

    def _storage_ok(self) -> None:
        b = self._breaker
        if b.down:
            log.warning("limits storage is back after %d failed calls", b.failures)
            b.down, b.failures = False, 0
