"""Garbage-collection pauses as metrics, and the start-up heap frozen out of the collector's reach."""

from __future__ import annotations

import asyncio
import gc
import itertools
from collections.abc import Iterator

import pytest

from litellm_cloud._serve import freeze_heap
from litellm_cloud.observability import GcWatch, watch_gc
from litellm_cloud.observability.metrics import Metrics
from tests.observability.harness import Samples


def _samples(metrics: Metrics) -> Samples:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }


@pytest.fixture
def recorded() -> Iterator[tuple[GcWatch, list[tuple[int, float]]]]:
    seen: list[tuple[int, float]] = []
    ticks = itertools.count()
    watch = GcWatch(lambda gen, secs: seen.append((gen, secs)), clock=lambda: float(next(ticks)))
    yield watch, seen
    watch.remove()


def test_each_collection_is_timed_from_its_start_to_its_stop(recorded: tuple[GcWatch, list[tuple[int, float]]]) -> None:
    watch, seen = recorded
    watch("start", {"generation": 2})
    watch("stop", {"generation": 2, "collected": 0, "uncollectable": 0})
    assert seen == []  # nothing is reported from inside a collection
    assert watch.drain() == 1
    assert seen == [(2, 1.0)]


def test_a_real_full_collection_is_reported_once_installed(recorded: tuple[GcWatch, list[tuple[int, float]]]) -> None:
    watch, seen = recorded
    gc.collect()
    assert watch.drain() == 0  # not installed yet
    watch.install()
    watch.install()  # idempotent: one callback, one sample a collection
    gc.collect()
    watch.drain()
    assert [gen for gen, _ in seen].count(2) == 1


def test_the_background_task_moves_pauses_into_the_histogram() -> None:
    metrics = Metrics()
    watch = watch_gc(metrics)

    async def scenario() -> None:
        watch.start()
        watch.start()
        gc.collect()
        await asyncio.sleep(1.3)  # one drain (every second)

    try:
        asyncio.run(scenario())
    finally:
        watch.remove()
    samples = _samples(metrics)
    assert samples[("litellm_cloud_gc_pause_seconds_count", frozenset({("generation", "2")}))] >= 1
    assert ("litellm_cloud_gc_pause_seconds_count", frozenset({("generation", "0")})) in samples


def test_stop_reports_what_was_gathered_then_times_no_more(recorded: tuple[GcWatch, list[tuple[int, float]]]) -> None:
    watch, seen = recorded

    async def scenario() -> None:
        watch.start()
        gc.collect()  # gathered; the next drain would be a second away
        await watch.stop()
        gc.collect()

    asyncio.run(scenario())
    assert [gen for gen, _ in seen].count(2) == 1 and watch not in gc.callbacks
    assert watch.drain() == 0


def test_freeze_heap_freezes_what_survived_and_reports_the_count() -> None:
    metrics = Metrics()
    try:
        frozen = freeze_heap()
        assert frozen == gc.get_freeze_count() > 0
        assert gc.get_count()[0] < 100  # the collection ran first: start-up's garbage is not kept for good
        metrics.gc_frozen(frozen)
    finally:
        gc.unfreeze()
    assert _samples(metrics)[("litellm_cloud_gc_frozen_objects", frozenset())] == frozen
