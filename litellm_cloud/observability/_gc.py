"""The garbage collector's pauses, as metrics: how long each collection stopped the process.

A collection runs in whichever thread allocated past the threshold and holds the GIL throughout, so a
full (generation 2) collection stops the event loop and every request in flight with it: the
``litellm_cloud_gc_pause_seconds`` histogram (by generation) is where an operator sees such a tail.

``gc.callbacks`` run inside the collection, where taking prometheus_client's locks could deadlock (a
collection can start while a thread holds one, creating a metric child), so the callback only appends
to a bounded deque and a background task moves the samples into the histogram every ``interval``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import time
from collections.abc import Callable
from typing import Any

#: Pause samples kept between two drains; beyond it the oldest are lost.
BUFFER = 10_000


class GcWatch:
    """Times every collection of this process and reports ``(generation, seconds)`` through ``record``."""

    def __init__(
        self, record: Callable[[int, float], None], *, clock: Callable[[], float] = time.perf_counter,
        interval: float = 1.0,
    ) -> None:  # fmt: skip
        self._record, self._clock, self._interval = record, clock, interval
        self._started = 0.0
        self._samples: collections.deque[tuple[int, float]] = collections.deque(maxlen=BUFFER)
        self._task: asyncio.Task[None] | None = None

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        # Inside the collection: no locks, no metric calls; deque.append is atomic.
        if phase == "start":
            self._started = self._clock()
        else:
            self._samples.append((int(info.get("generation", 0)), self._clock() - self._started))

    def install(self) -> None:
        """Start timing collections (idempotent)."""
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def remove(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self)

    def drain(self) -> int:
        """Report the samples gathered so far; returns how many."""
        count = 0
        while self._samples:
            generation, seconds = self._samples.popleft()
            self._record(generation, seconds)
            count += 1
        return count

    def start(self) -> None:
        """Install and drain every ``interval`` on the running event loop (idempotent)."""
        self.install()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="litellm-cloud-gc-watch")

    async def stop(self) -> None:
        """Stop timing and draining, after reporting what was gathered (the gateway's shutdown calls it)."""
        self.remove()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.drain()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.drain()
