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
seconds more while loads fail), negative ones ``negative_ttl``. Loads run as their own task, so a caller
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
        self._entries: OrderedDict[str, _Entry[V]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[tuple[V, str]]] = {}
        self._epoch = 0  # bumped by every drop: a load that started before it stores nothing

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    async def get(self, key: str, load: Loader[V]) -> tuple[V, str]:
        """The value for ``key`` and how it was found (see the module docstring for the labels)."""
        entry = self._entries.get(key)
        if entry is not None and self._clock() < entry.expires:
            self._entries.move_to_end(key)
            if entry.stale:
                return entry.value, "stale"
            return entry.value, "hit" if entry.positive else "negative_hit"
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
        ttl = self.ttl if positive else self.negative_ttl
        expires = now + ttl
        self._entries[key] = _Entry(value, positive, expires, expires + self.grace if positive else expires)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def drop(self, key: str) -> int:
        """Forget ``key``; returns how many entries went (0 or 1)."""
        self._detach()
        return 1 if self._entries.pop(key, None) is not None else 0

    def drop_where(self, predicate: Callable[[V], bool]) -> int:
        """Forget every entry whose value matches; returns how many went."""
        self._detach()
        doomed = [k for k, e in self._entries.items() if predicate(e.value)]
        for k in doomed:
            del self._entries[k]
        return len(doomed)

    def clear(self) -> int:
        """Forget everything (revocations may have been missed); returns how many entries went."""
        self._detach()
        count = len(self._entries)
        self._entries.clear()
        return count

    def _detach(self) -> None:
        # Loads in flight answer their callers but store nothing, and new callers start afresh.
        self._epoch += 1
        self._inflight.clear()
