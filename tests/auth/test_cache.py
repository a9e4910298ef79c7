"""The verdict cache with a hand-moved clock: TTLs, bounds, single flight, stale-if-error, revocation."""

from __future__ import annotations

import asyncio

import pytest

from litellm_cloud.auth.cache import AuthCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Down(Exception):
    """A transient backend failure."""


class Loader:
    """Counts loads; answers ``(value, positive)`` or raises what it is told to."""

    def __init__(self, value: str = "v", positive: bool = True) -> None:
        self.value, self.positive = value, positive
        self.calls = 0
        self.error: BaseException | None = None
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> tuple[str, bool]:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.value, self.positive


def make(clock: Clock, **kw: float) -> AuthCache[str]:
    opts = {"ttl": 60.0, "negative_ttl": 10.0, "grace": 300.0, "max_size": 100, "retry_interval": 1.0, **kw}
    return AuthCache(transient=(Down,), clock=clock, **opts)  # type: ignore[arg-type]


async def test_positive_entries_live_for_the_ttl() -> None:
    clock, load = Clock(), Loader()
    cache = make(clock)
    assert await cache.get("k", load) == ("v", "miss")
    clock.now += 59.9
    assert await cache.get("k", load) == ("v", "hit")
    clock.now += 0.2
    assert await cache.get("k", load) == ("v", "miss")
    assert load.calls == 2


async def test_negative_entries_live_for_the_negative_ttl() -> None:
    clock, load = Clock(), Loader("no", positive=False)
    cache = make(clock)
    assert await cache.get("k", load) == ("no", "miss")
    clock.now += 9.9
    assert await cache.get("k", load) == ("no", "negative_hit")
    clock.now += 0.2
    assert await cache.get("k", load) == ("no", "miss")


async def test_concurrent_first_requests_share_one_load() -> None:
    clock, load = Clock(), Loader()
    load.gate = asyncio.Event()
    cache = make(clock)
    tasks = [asyncio.create_task(cache.get("k", load)) for _ in range(100)]
    await asyncio.sleep(0)
    load.gate.set()
    results = await asyncio.gather(*tasks)
    assert load.calls == 1
    assert sorted(r for _, r in results) == ["coalesced"] * 99 + ["miss"]


async def test_a_failed_load_fails_every_waiter_and_is_not_cached() -> None:
    clock, load = Clock(), Loader()
    load.gate, load.error = asyncio.Event(), Down()
    cache = make(clock)
    tasks = [asyncio.create_task(cache.get("k", load)) for _ in range(5)]
    await asyncio.sleep(0)
    load.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, Down) for r in results) and load.calls == 1
    load.error = None
    assert await cache.get("k", load) == ("v", "miss")


async def test_a_caller_that_leaves_does_not_cancel_the_shared_load() -> None:
    clock, load = Clock(), Loader()
    load.gate = asyncio.Event()
    cache = make(clock)
    first = asyncio.create_task(cache.get("k", load))
    second = asyncio.create_task(cache.get("k", load))
    await asyncio.sleep(0)
    first.cancel()
    load.gate.set()
    assert await second == ("v", "coalesced")
    assert await cache.get("k", load) == ("v", "hit")


async def test_stale_if_error_inside_the_grace_period_then_refusal() -> None:
    clock, load = Clock(), Loader()
    cache = make(clock, ttl=60, grace=300, retry_interval=1)
    await cache.get("k", load)
    load.error = Down()
    clock.now += 61
    assert await cache.get("k", load) == ("v", "stale")
    assert load.calls == 2
    # During the retry interval the stale entry answers without asking the backend again.
    clock.now += 0.5
    assert await cache.get("k", load) == ("v", "stale")
    assert load.calls == 2
    clock.now += 0.6
    assert await cache.get("k", load) == ("v", "stale")
    assert load.calls == 3
    clock.now = 1000 + 60 + 300 + 0.1
    with pytest.raises(Down):
        await cache.get("k", load)


async def test_the_backend_coming_back_refreshes_a_stale_entry() -> None:
    clock, load = Clock(), Loader()
    cache = make(clock)
    await cache.get("k", load)
    load.error = Down()
    clock.now += 61
    assert (await cache.get("k", load))[1] == "stale"
    load.error, load.value = None, "v2"
    clock.now += 2
    assert await cache.get("k", load) == ("v2", "miss")
    assert await cache.get("k", load) == ("v2", "hit")


async def test_negative_entries_are_never_served_stale() -> None:
    clock, load = Clock(), Loader("no", positive=False)
    cache = make(clock)
    await cache.get("k", load)
    load.error = Down()
    clock.now += 11
    with pytest.raises(Down):
        await cache.get("k", load)


async def test_non_transient_errors_are_never_answered_from_cache() -> None:
    clock, load = Clock(), Loader()
    cache = make(clock)
    await cache.get("k", load)
    load.error = ValueError("a bug")
    clock.now += 61
    with pytest.raises(ValueError):
        await cache.get("k", load)


async def test_the_cache_is_bounded_least_recently_used_first() -> None:
    clock = Clock()
    cache = make(clock, max_size=3)
    for k in "abc":
        await cache.get(k, Loader(k))
    await cache.get("a", Loader())  # a is now the most recent
    await cache.get("d", Loader("d"))
    assert len(cache) == 3 and "b" not in cache and "a" in cache and "d" in cache


async def test_drop_forgets_a_key_and_a_load_in_flight_stores_nothing() -> None:
    clock, load = Clock(), Loader()
    cache = make(clock)
    await cache.get("k", load)
    assert cache.drop("k") == 1 and cache.drop("k") == 0
    load.gate = asyncio.Event()
    in_flight = asyncio.create_task(cache.get("k", load))
    await asyncio.sleep(0)
    cache.drop("k")  # revoked while the backend was answering
    load.gate.set()
    assert await in_flight == ("v", "miss")  # that caller asked before the revocation
    assert "k" not in cache
    assert await cache.get("k", load) == ("v", "miss")


async def test_drop_where_and_clear() -> None:
    clock = Clock()
    cache = make(clock)
    for k in ("a1", "a2", "b1"):
        await cache.get(k, Loader(k))
    assert cache.drop_where(lambda v: v.startswith("a")) == 2
    assert len(cache) == 1
    assert cache.clear() == 1 and len(cache) == 0


async def test_a_revoked_key_gets_no_stale_answer() -> None:
    clock, load = Clock(), Loader()
    cache = make(clock)
    await cache.get("k", load)
    cache.drop("k")
    load.error = Down()
    with pytest.raises(Down):
        await cache.get("k", load)


async def test_a_flood_of_refused_keys_never_evicts_valid_ones() -> None:
    clock = Clock()
    cache = make(clock, max_size=8)
    for k in "abcdefgh":
        await cache.get(k, Loader(k))
    for i in range(100):
        await cache.get(f"junk-{i}", Loader("no", positive=False))
    assert all(k in cache for k in "abcdefgh")
    assert len(cache) == 8 + cache.max_negative == 10
    assert await cache.get("junk-99", Loader()) == ("no", "negative_hit")
    assert "junk-0" not in cache


async def test_a_key_refused_after_being_valid_loses_its_stale_fallback() -> None:
    clock, load = Clock(), Loader()
    cache = make(clock, negative_ttl=10)
    await cache.get("k", load)
    clock.now += 61
    load.value, load.positive = "no", False
    assert await cache.get("k", load) == ("no", "miss")
    load.error = Down()
    clock.now += 11
    with pytest.raises(Down):
        await cache.get("k", load)
