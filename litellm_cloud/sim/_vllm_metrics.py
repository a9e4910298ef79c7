"""``GET /metrics`` of a simulated server, in vLLM's Prometheus names.

The names follow vLLM's documented production metrics (https://docs.vllm.ai/en/stable/usage/metrics/):
``vllm:num_requests_running`` and ``vllm:num_requests_waiting`` (gauges), ``vllm:kv_cache_usage_perc``
(gauge, 0-1; older vLLM releases call it ``vllm:gpu_cache_usage_perc``, served too) and
``vllm:time_to_first_token_seconds`` (histogram), each labelled ``model_name``, plus the token counters.

The ``metrics`` fault field breaks the endpoint alone: ``error`` answers 500, ``hang`` never answers,
so a scraper's failure handling can be tested while inference still works.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from . import _gpu_openai as oa
from ._batch import TTFT_BUCKETS, Batch

if TYPE_CHECKING:
    from ._gpu_http import Connection


def render(batch: Batch, model: str, prompt_tokens: int, generation_tokens: int) -> bytes:
    """The Prometheus text exposition of one server's state."""
    label = f'model_name="{model}"'
    lines = [
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
        f"vllm:num_requests_running{{{label}}} {float(len(batch.running))}",
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
        "# TYPE vllm:num_requests_waiting gauge",
        f"vllm:num_requests_waiting{{{label}}} {float(batch.waiting)}",
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
        "# TYPE vllm:kv_cache_usage_perc gauge",
        f"vllm:kv_cache_usage_perc{{{label}}} {batch.kv_usage()}",
        "# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage (name before vLLM v1).",
        "# TYPE vllm:gpu_cache_usage_perc gauge",
        f"vllm:gpu_cache_usage_perc{{{label}}} {batch.kv_usage()}",
        "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
        "# TYPE vllm:prompt_tokens_total counter",
        f"vllm:prompt_tokens_total{{{label}}} {float(prompt_tokens)}",
        "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
        "# TYPE vllm:generation_tokens_total counter",
        f"vllm:generation_tokens_total{{{label}}} {float(generation_tokens)}",
        "# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.",
        "# TYPE vllm:time_to_first_token_seconds histogram",
    ]
    cumulative = 0
    for bound, count in zip(TTFT_BUCKETS, batch.ttft_counts, strict=False):
        cumulative += count
        lines.append(f'vllm:time_to_first_token_seconds_bucket{{le="{bound}",{label}}} {float(cumulative)}')
    cumulative += batch.ttft_counts[-1]
    lines.append(f'vllm:time_to_first_token_seconds_bucket{{le="+Inf",{label}}} {float(cumulative)}')
    lines.append(f"vllm:time_to_first_token_seconds_count{{{label}}} {float(cumulative)}")
    lines.append(f"vllm:time_to_first_token_seconds_sum{{{label}}} {batch.ttft_sum}")
    return ("\n".join(lines) + "\n").encode()


async def hang_forever() -> None:
    """A ``/metrics`` that never answers (the client gives up and the task is cancelled)."""
    await asyncio.Event().wait()


def serve(conn: Connection, mode: str, server_name: str, body: Callable[[], bytes]) -> Coroutine[Any, Any, None] | None:
    """Answer ``GET /metrics`` in ``mode`` (ok, error, hang) with ``body()`` (or return the coroutine that never
    will)."""
    if mode == "hang":
        return hang_forever()
    if mode == "error":
        conn.send(500, oa.error_body(500, f"{server_name}: simulated metrics failure"))
        return None
    conn.send(200, body(), b"text/plain; version=0.0.4")
    return None
