"""Event-loop lag: how late a worker's event loop runs a timer, the sign of a saturated worker.

A proxy worker does all its work as callbacks on one asyncio loop: every request, every relayed SSE
chunk, every hook. ``LoopLagSampler`` sleeps ``interval`` seconds, again and again, and measures how much
later than asked it woke. That delay is the time its timer waited behind other ready callbacks (CPU
work: LiteLLM's per-chunk rebuild, JSON, our hooks) or behind code that blocked the loop (a synchronous
call). Every chunk and every new request on that worker waits about as long, so it is the gateway's own
queueing delay, apart from the GPU's. An idle worker wakes within a millisecond or two; a worker whose
core is saturated wakes tens to hundreds of milliseconds late (docs/operations.md, "Seeing saturation").

Each wake-up reports ``(lag, recent_max)``: the lag of this sample, and the largest lag of the last
``window`` seconds (the gateway records them as a histogram and a gauge). A loop blocked for 2 s yields
one sample of ~2 s, not eight: the histogram counts samples, so a long stall shows in its sum and in the
gauge more than in its quantiles. The sampler costs one timer every ``interval`` (0.25 s: four wake-ups a
second, nothing measurable against the loop's own work).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable

log = logging.getLogger("litellm_cloud.observability")

#: Called once per sample with (this sample's lag, the largest lag of the last window), in seconds.
LagRecorder = Callable[[float, float], None]


class LoopLagSampler:
    """Measures how late the running event loop wakes a timer; one per process, started on its loop."""

    def __init__(self, record: LagRecorder, *, interval: float = 0.25, window: float = 10.0) -> None:
        if interval <= 0 or window < interval:
            raise ValueError(f"interval must be > 0 and window >= interval, got {interval} and {window}")
        self.interval = interval
        self._record = record
        self._recent: deque[float] = deque(maxlen=math.ceil(window / interval))
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the sampling task is alive."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start sampling on the running loop (idempotent; the gateway's start-up calls it)."""
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="event-loop-lag")

    async def stop(self) -> None:
        """Cancel the sampling task and wait for it to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval  # the loop's own clock, the one its timers are due by
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - due)  # a timer may fire up to the clock's resolution early
            self._recent.append(lag)
            try:
                self._record(lag, max(self._recent))
            except Exception:  # the sampler must outlive a broken recorder, like every background task
                log.exception("event-loop lag: recording a sample failed")
