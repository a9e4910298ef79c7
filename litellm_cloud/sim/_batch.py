"""A simulated server saturating like vLLM: a bounded running batch, a waiting queue, a KV cache.

vLLM runs at most ``--max-num-seqs`` sequences at once; the rest wait, in arrival order (``fcfs``) or,
with ``--scheduling-policy priority``, by the request's ``priority`` field (lower first, ties in arrival
order). The running sequences share the GPU's decode throughput, and their KV cache use grows with every
token. ``Batch`` models exactly that, per server:

==========================  =====================================================================
``max_num_seqs``            running sequences at most; 0 = unbounded (no queue: today's simulator)
``batch_tokens_per_s``      decode tokens/s of the whole batch, shared by the running sequences; each
                            still runs at most ``tokens_per_s``; 0 = every sequence at ``tokens_per_s``
``kv_cache_tokens``         KV cache size in tokens; a sequence waits while its prompt does not fit;
                            0 = unbounded (usage reported against ``max_model_len`` per slot)
``scheduling_policy``       ``fcfs`` or ``priority``; a non-zero ``priority`` under ``fcfs`` is a 400,
                            as in vLLM
==========================  =====================================================================

All of these are fault fields: ``POST /sim/control`` changes them at run time. The defaults keep every
server as before (no queue, no sharing), so only a configured server saturates.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

POLICIES = ("fcfs", "priority")
METRICS_MODES = ("ok", "error", "hang")
#: vLLM's buckets for ``vllm:time_to_first_token_seconds`` (v1 engine).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)


class BatchFaults(Protocol):
    """The part of a server's run-time state the batch reads (``Faults`` has it)."""

    tokens_per_s: float
    max_num_seqs: int
    batch_tokens_per_s: float
    kv_cache_tokens: int
    scheduling_policy: str


def check_batch_values(values: Mapping[str, Any]) -> None:
    """ValueError naming a bad batch field of a spec or control body."""
    for name in ("max_num_seqs", "kv_cache_tokens"):
        if name in values:
            v = values[name]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"'{name}' must be an integer >= 0, got {v!r}")
    if "batch_tokens_per_s" in values:
        v = values["batch_tokens_per_s"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ValueError(f"'batch_tokens_per_s' must be a number >= 0, got {v!r}")
    if "scheduling_policy" in values and values["scheduling_policy"] not in POLICIES:
        raise ValueError(f"'scheduling_policy' must be one of {', '.join(POLICIES)}")
    if "metrics" in values and values["metrics"] not in METRICS_MODES:
        raise ValueError(f"'metrics' must be one of {', '.join(METRICS_MODES)}")


class PriorityNotEnabled(ValueError):
    """A request asked for a priority the server does not schedule by (vLLM answers 400)."""


def request_priority(data: Mapping[str, Any], policy: str) -> int:
    """The request's vLLM ``priority`` (0 when absent); raises ``PriorityNotEnabled`` or ValueError."""
    value = data.get("priority", 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("'priority' must be an integer")  # noqa: TRY004 - ValueError means a 400 here
    if value != 0 and policy != "priority":
        raise PriorityNotEnabled(f"Got priority {value} but Priority scheduling is not enabled.")
    return value


@dataclass
class Seq:
    """One sequence: its prompt, the tokens it holds in the KV cache, when it arrived."""

    prompt: int
    arrived: float
    priority: int = 0
    tokens: int = 0
    first_token_seen: bool = False
    admitted: asyncio.Future[None] | None = field(default=None, repr=False)


class Batch:
    """The running batch and waiting queue of one server."""

    def __init__(self, faults: BatchFaults, max_model_len: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._faults = faults
        self._max_model_len = max_model_len
        self._clock = clock
        self.running: dict[str, Seq] = {}
        self._waiting: list[tuple[int, int, str, Seq]] = []
        self._order = itertools.count()
        self.ttft_counts = [0] * (len(TTFT_BUCKETS) + 1)
        self.ttft_sum = 0.0
        self.priorities = Counter[int]()

    # -- queue ------------------------------------------------------------------------------------
    @property
    def waiting(self) -> int:
        """Sequences waiting for a slot (cancelled ones already left)."""
        return sum(1 for *_, s in self._waiting if s.admitted is not None and not s.admitted.done())

    def _fits(self, seq: Seq) -> bool:
        limit = self._faults.max_num_seqs
        if limit and len(self.running) >= limit:
            return False
        kv = self._faults.kv_cache_tokens
        return not kv or not self.running or self.kv_tokens() + seq.prompt <= kv

    def _schedule(self) -> None:
        while self._waiting:
            *_, rid, seq = self._waiting[0]
            if seq.admitted is None or seq.admitted.done():  # cancelled while waiting
                heapq.heappop(self._waiting)
                continue
            if not self._fits(seq):
                return
            heapq.heappop(self._waiting)
            self.running[rid] = seq
            seq.tokens = seq.prompt
            seq.admitted.set_result(None)

    async def run(self, rid: str, prompt: int, priority: int, work: Coroutine[Any, Any, None]) -> None:
        """Wait for a slot, then run ``work`` (the generation) holding it."""
        seq = Seq(prompt, self._clock(), priority)
        self.priorities[priority] += 1
        if not self._waiting and self._fits(seq):
            self.running[rid] = seq
            seq.tokens = prompt
        else:
            seq.admitted = asyncio.get_running_loop().create_future()
            key = priority if self._faults.scheduling_policy == "priority" else 0
            heapq.heappush(self._waiting, (key, next(self._order), rid, seq))
            try:
                await seq.admitted
            except asyncio.CancelledError:
                work.close()
                if rid in self.running:
                    self.release(rid)
                raise
        try:
            await work
        finally:
            self.release(rid)

    def release(self, rid: str) -> None:
        """The sequence ended (or its client left): free its slot and KV cache, admit who fits."""
        self.running.pop(rid, None)
        self._schedule()

    # -- progress ---------------------------------------------------------------------------------
    def rate(self, tokens_per_s: float) -> float:
        """Decode tokens/s of one running sequence now (0 = instant)."""
        total = self._faults.batch_tokens_per_s
        if total <= 0 or not self.running:
            return tokens_per_s
        share = total / len(self.running)
        return min(tokens_per_s, share) if tokens_per_s > 0 else share

    def grow(self, rid: str, tokens: int) -> None:
        """The sequence now holds ``tokens`` (prompt + generated) in the KV cache."""
        seq = self.running.get(rid)
        if seq is not None:
            seq.tokens = tokens

    def first_token(self, rid: str) -> None:
        """Observe the time to first token of ``rid`` (from its arrival, queueing included)."""
        seq = self.running.get(rid)
        if seq is None or seq.first_token_seen:
            return
        seq.first_token_seen = True
        took = self._clock() - seq.arrived
        self.ttft_sum += took
        for i, bound in enumerate(TTFT_BUCKETS):
            if took <= bound:
                self.ttft_counts[i] += 1
                break
        else:
            self.ttft_counts[-1] += 1

    def kv_tokens(self) -> int:
        return sum(s.tokens for s in self.running.values())

    def kv_usage(self) -> float:
        """Fraction of the KV cache in use (0-1), as ``vllm:kv_cache_usage_perc``."""
        size = self._faults.kv_cache_tokens or self._max_model_len * max(1, self._faults.max_num_seqs or 1)
        return min(1.0, self.kv_tokens() / size)

    def state(self) -> dict[str, Any]:
        """The batch part of ``/sim/stats``."""
        return {"running": len(self.running), "waiting": self.waiting, "kv_cache_usage": round(self.kv_usage(), 4),
                "priorities": {str(k): v for k, v in sorted(self.priorities.items())}}

    def reset(self) -> None:
        """Forget statistics (not the sequences in flight)."""
        self.ttft_counts = [0] * (len(TTFT_BUCKETS) + 1)
        self.ttft_sum = 0.0
        self.priorities.clear()
