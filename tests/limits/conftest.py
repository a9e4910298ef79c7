"""Fixtures for the limits tests: a real redis-server, a real Sentinel set, and one limiter per storage
(memory, redis, redis+sentinel)."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before anything imports litellm
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from litellm_cloud._procs import ManagedProcess
from litellm_cloud.limits import Limiter, Storage
from litellm_cloud.limits.storage.memory import MemoryStorage
from litellm_cloud.limits.storage.redis import RedisStorage
from litellm_cloud.observability import Metrics
from tests.support import free_port, port_open

from ._sentinel import SentinelSet


def dead_redis_storage() -> RedisStorage:
    """A Redis storage pointed at a free port where nothing listens: every call fails to connect."""
    return RedisStorage.from_url(f"redis://127.0.0.1:{free_port()}/0")


class RedisServer:
    """A throwaway ``redis-server`` on a free loopback port (no persistence)."""

    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_dir = log_dir
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = ManagedProcess("redis", argv, log_dir=self.log_dir, ready=lambda: port_open(self.port))
        self.process.start()
        return self

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


class FakeClock:
    """Seconds since the epoch, moved by hand."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingMetrics(Metrics):
    """Metrics that remember the limiter's calls (the real ones are another module's)."""

    def __init__(self) -> None:
        self.refusals: list[tuple[str, str]] = []
        self.fallbacks: list[str] = []

    def limiter_refusal(self, kind: str, tier: str) -> None:
        self.refusals.append((kind, tier))

    def limiter_storage_fallback(self, mode: str) -> None:
        self.fallbacks.append(mode)


@pytest.fixture(scope="module")
def sentinel_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    """A master, a replica and three sentinels (``_sentinel.py``), for the module."""
    group = SentinelSet(tmp_path_factory.mktemp("sentinel")).start()
    yield group
    group.stop()


@pytest.fixture(params=["memory", "redis", "sentinel"])
def storage_factory(request: pytest.FixtureRequest) -> Iterator[Callable[[], Storage]]:
    """Makes fresh storages of one kind; redis ones share the module's server (or Sentinel-managed master),
    flushed first."""
    if request.param == "memory":
        yield MemoryStorage
        return
    import redis

    if request.param == "sentinel":
        group: SentinelSet = request.getfixturevalue("sentinel_set")
        redis.Redis(port=group.master_port).flushall()
        yield lambda: RedisStorage.from_url(group.url())
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    redis.Redis.from_url(server.url).flushall()
    yield lambda: RedisStorage.from_url(server.url)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def limiter(storage_factory: Callable[[], Storage], clock: FakeClock) -> AsyncIterator[Limiter]:
    lim = Limiter(storage_factory(), RecordingMetrics(), clock=clock)
    yield lim
    await lim.aclose()
