"""A bounded TTL cache for key verdicts: negative entries, single-flight loads, stale-if-error.

``AuthCache.get(key, load)`` returns ``(value, result)`` where ``result`` is the metric label::

    hit           a fresh positive entry
    negative_hit  a fresh negative entry (a key the backend refused a moment ago)
    miss          this caller loaded the value
    coalesced     another caller was already loading it: one load for any number of callers
    stale         the load failed with a transient error and a positive entry inside its grace period
                  answered instead (the entry then serves for ``retry_interval`` before the next try, so a
                  slow backend does not make every request wait for its timeout)

``load()`` returns ``(value, positive)``: positive values live ``ttl`` seconds (and may serve ``grace``
seconds more while loads fail), negative ones ``negative_ttl``. Positive entries are bounded by
``max_size``, negative ones apart by a quarter of it (least recently used go first in each), so junk
keys cannot push out real ones. Loads run as their own task, so a caller
that goes away does not cancel the load the others wait for. ``drop``/``drop_where``/``clear`` forget
entries (revocation) and detach loads already in flight, so nothing loaded before a revocation is stored
after it. The clock is injected: tests move time by hand.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")
Loader = Callable[[], Awaitable[tuple[V, bool]]]


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    positive: bool
    expires: float  # fresh until then
    stale_until: float  # a positive entry may answer until then while loads fail
    stale: bool = False  # answering from grace right now


class AuthCache(Generic[V]):
    """Key digest -> verdict, at most ``max_size`` entries (least recently used go first)."""

    def __init__(
        self,
        *,
        ttl: float,
        negative_ttl: float,
        grace: float,
        max_size: int,
        transient: tuple[type[BaseException], ...],
        retry_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl, self.negative_ttl, self.grace = ttl, negative_ttl, grace
        self.max_size = max_size
        self.retry_interval = retry_interval
        self._transient = transient
        self._clock = clock
        self._entries: OrderedDict[str, _Entry[V]] = OrderedDict()  # positive
        # Refusals live apart, in a quarter of the room: a flood of made-up keys evicts other made-up keys,
        # never the valid keys of real customers (which would send their traffic to the backend).
        self._negative: OrderedDict[str, _Entry[V]] = OrderedDict()
        self.max_negative = max(1, max_size // 4)
        self._inflight: dict[str, asyncio.Task[tuple[V, str]]] = {}
        self._epoch = 0  # bumped by every drop: a load that started before it stores nothing

    def __len__(self) -> int:
        return len(self._entries) + len(self._negative)

    def __contains__(self, key: str) -> bool:
        return key in self._entries or key in self._negative

    async def get(self, key: str, load: Loader[V]) -> tuple[V, str]:
        """The value for ``key`` and how it was found (see the module docstring for the labels)."""
        entry = self._entries.get(key)
        if entry is not None and self._clock() < entry.expires:
            self._entries.move_to_end(key)
            return entry.value, "stale" if entry.stale else "hit"
        negative = self._negative.get(key)
        if negative is not None and self._clock() < negative.expires:
            return negative.value, "negative_hit"
        task = self._inflight.get(key)
        if task is not None:
            value, result = await asyncio.shield(task)
            return value, "coalesced" if result == "miss" else result
        task = asyncio.ensure_future(self._load(key, load, self._epoch))
        self._inflight[key] = task
        task.add_done_callback(lambda t: self._finished(key, t))
        return await asyncio.shield(task)

    def _finished(self, key: str, task: asyncio.Task[tuple[V, str]]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning when every caller left

    async def _load(self, key: str, load: Loader[V], epoch: int) -> tuple[V, str]:
        try:
            value, positive = await load()
        except self._transient:
            entry = self._entries.get(key)
            now = self._clock()
            if epoch != self._epoch or entry is None or not entry.positive or now >= entry.stale_until:
                raise
            entry.stale = True
            entry.expires = min(now + self.retry_interval, entry.stale_until)
            return entry.value, "stale"
        if epoch == self._epoch:
            self._store(key, value, positive)
        return value, "miss"

    def _store(self, key: str, value: V, positive: bool) -> None:
        now = self._clock()
        if positive:
            expires = now + self.ttl
            self._negative.pop(key, None)
            self._entries[key] = _Entry(value, True, expires, expires + self.grace)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_size:
                self._entries.popitem(last=False)
        else:
            expires = now + self.negative_ttl
            self._entries.pop(key, None)  # the backend said no: no stale answer for this key either
            self._negative[key] = _Entry(value, False, expires, expires)
            self._negative.move_to_end(key)
            while len(self._negative) > self.max_negative:
                self._negative.popitem(last=False)

    def drop(self, key: str) -> int:
        """Forget ``key``; returns how many entries went (0 or 1)."""
        self._detach()
        found = (self._entries.pop(key, None), self._negative.pop(key, None))
        return 1 if any(e is not None for e in found) else 0

    def drop_where(self, predicate: Callable[[V], bool]) -> int:
        """Forget every entry whose value matches; returns how many went."""
        self._detach()
        count = 0
        for entries in (self._entries, self._negative):
            doomed = [k for k, e in entries.items() if predicate(e.value)]
            for k in doomed:
                del entries[k]
            count += len(doomed)
        return count

    def clear(self) -> int:
        """Forget everything (revocations may have been missed); returns how many entries went."""
        self._detach()
        count = len(self)
        self._entries.clear()
        self._negative.clear()
        return count

    def _detach(self) -> None:
        # Loads in flight answer their callers but store nothing, and new callers start afresh.
        self._epoch += 1
        self._inflight.clear()
