"""Event-loop lag: the sampler on a loop of its own (blocked on purpose), then the metric through the real proxy.

The sampler tests run ``LoopLagSampler`` on a fresh loop with a short interval and block that loop with a
``time.sleep`` inside a callback: the one sample that straddles the block must report it, the window's
maximum must hold it and then let it go. The proxy test checks only what a scrape can promise on any
machine: both series exist with their buckets, and the sample count grows with time (four a second).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from litellm_cloud.observability import LoopLagSampler, Metrics
from tests.observability.harness import Samples, scrape, value
from tests.support import MASTER_KEY, simulated_gateway, wait_until

BLOCK = 0.3  # seconds the test blocks the loop for
INTERVAL = 0.02


def _run_sampler(
    body: Callable[[LoopLagSampler], Awaitable[None]], seen: list[tuple[float, float]], *, window: float = 0.2
) -> list[tuple[float, float]]:
    """``seen``, filled with the samples recorded while ``body(sampler)`` runs on a fresh loop."""

    async def main() -> None:
        sampler = LoopLagSampler(lambda lag, top: seen.append((lag, top)), interval=INTERVAL, window=window)
        sampler.start()
        try:
            await body(sampler)
        finally:
            await sampler.stop()

    asyncio.run(main())
    return seen


def test_a_blocked_loop_shows_as_one_late_sample_and_the_window_max_holds_it() -> None:
    marks: dict[str, int] = {}
    seen: list[tuple[float, float]] = []

    async def body(sampler: LoopLagSampler) -> None:
        await asyncio.sleep(10 * INTERVAL)
        marks["before"] = len(seen)
        asyncio.get_running_loop().call_soon(time.sleep, BLOCK)  # blocks the whole loop, as sync code would
        await asyncio.sleep(0)
        await asyncio.sleep(30 * INTERVAL)  # > the 0.2 s window after the block: the maximum must let go

    _run_sampler(body, seen)
    late = [i for i, (lag, _top) in enumerate(seen) if lag >= BLOCK - 2 * INTERVAL]
    assert len(late) == 1 and late[0] >= marks["before"], seen  # the straddling sample, once
    after = seen[late[0] :]
    window = 10  # samples: 0.2 s / 0.02 s
    assert all(top >= seen[late[0]][0] for _lag, top in after[:window]), after  # held for the window
    assert after[-1][1] < BLOCK - 2 * INTERVAL, after  # and then gone
    assert len(seen) >= 15  # kept sampling after the block


def test_an_unblocked_loop_is_never_as_late_as_a_blocked_one() -> None:
    async def body(sampler: LoopLagSampler) -> None:
        await asyncio.sleep(20 * INTERVAL)

    seen = _run_sampler(body, [])
    assert len(seen) >= 5
    assert max(lag for lag, _top in seen) < BLOCK - 2 * INTERVAL, seen
    assert all(lag >= 0 for lag, _top in seen)


def test_start_is_idempotent_stop_ends_sampling_and_a_failing_recorder_is_survived() -> None:
    calls: list[float] = []

    def record(lag: float, top: float) -> None:
        calls.append(lag)
        raise RuntimeError("broken recorder")

    async def main() -> None:
        sampler = LoopLagSampler(record, interval=INTERVAL)
        await sampler.stop()  # before start: nothing to do
        sampler.start()
        sampler.start()
        assert sampler.running
        await asyncio.sleep(8 * INTERVAL)
        await sampler.stop()
        assert not sampler.running
        stopped_at = len(calls)
        await asyncio.sleep(4 * INTERVAL)
        assert len(calls) == stopped_at

    asyncio.run(main())
    assert 3 <= len(calls) <= 9  # one task, not two, kept going past the errors


def test_interval_and_window_are_checked() -> None:
    with pytest.raises(ValueError):
        LoopLagSampler(lambda lag, top: None, interval=0)
    with pytest.raises(ValueError):
        LoopLagSampler(lambda lag, top: None, interval=1.0, window=0.5)


def test_metrics_record_the_histogram_and_the_gauge() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    metrics = Metrics()
    metrics.event_loop_lag(0.0004, 0.0004)
    metrics.event_loop_lag(0.07, 0.07)
    metrics.event_loop_lag(-1e-9, 0.07)  # clamped
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(metrics.render().decode())
        for s in f.samples
    }
    assert value(samples, "litellm_cloud_event_loop_lag_seconds_count") == 3
    assert value(samples, "litellm_cloud_event_loop_lag_seconds_bucket", le="0.001") == 2
    assert value(samples, "litellm_cloud_event_loop_lag_seconds_bucket", le="0.05") == 2
    assert value(samples, "litellm_cloud_event_loop_lag_seconds_bucket", le="0.1") == 3
    assert value(samples, "litellm_cloud_event_loop_lag_max_seconds") == pytest.approx(0.07)


# --- through the real proxy ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with simulated_gateway(tmp_path_factory.mktemp("loop-lag"), []) as (_sim, url, _proxy):
        yield url


def _lag(base: str) -> Samples:
    return scrape(base, MASTER_KEY)


def test_proxy_exports_the_lag_histogram_and_gauge_and_samples_keep_coming(base: str) -> None:
    first = _lag(base)
    buckets = {dict(labels)["le"] for (name, labels) in first if name == "litellm_cloud_event_loop_lag_seconds_bucket"}
    assert {"0.001", "0.05", "0.1", "1.0", "10.0", "+Inf"} <= buckets, buckets
    assert ("litellm_cloud_event_loop_lag_max_seconds", frozenset()) in first
    count = value(first, "litellm_cloud_event_loop_lag_seconds_count")
    # Four samples a second once the gateway started: two seconds bring several more.
    wait_until(lambda: value(_lag(base), "litellm_cloud_event_loop_lag_seconds_count") >= count + 4, 10,
               "the event-loop lag sampler to record more samples")  # fmt: skip
    later = _lag(base)
    assert value(later, "litellm_cloud_event_loop_lag_seconds_sum") >= 0
    assert value(later, "litellm_cloud_event_loop_lag_seconds_bucket", le="+Inf") == value(
        later, "litellm_cloud_event_loop_lag_seconds_count"
    )
