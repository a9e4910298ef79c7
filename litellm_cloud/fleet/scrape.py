"""Scrape each GPU server's vLLM ``/metrics`` about every second, off the request path.

One background task per proxy process. Each round fetches every known server's ``/metrics`` at once,
each fetch bounded by ``timeout``; a round never starts before the last one ended, so a hung server
costs the scraper one timeout per round and never a request anything. What a scrape finds:

=====================  ======================================================================
answer 200             a ``Sample``: running, waiting, KV cache use, when, our own in-flight count then
connection refused     the server is ``down`` until a scrape answers again (routing skips it)
timeout, 5xx, garbage  no fresh sample: routing falls back to the gateway's own in-flight counts
=====================  ======================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

log = logging.getLogger("litellm_cloud.fleet.scrape")

_SAMPLE = re.compile(r"^(vllm:[a-z_]+)(?:\{[^}]*\})?\s+(\S+)", re.MULTILINE)
_KV_NAMES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")


@dataclass(frozen=True, slots=True)
class Sample:
    """One scrape of one server."""

    running: float
    waiting: float
    kv_usage: float
    at: float
    ours: int
    """The gateway's own in-flight requests on this server when the scrape was taken."""


def parse_metrics(text: str) -> tuple[float, float, float] | None:
    """(running, waiting, KV cache use) from a vLLM ``/metrics`` body, summed over models; ``None`` when
    the body has no ``vllm:num_requests_running``."""
    values: dict[str, float] = {}
    for name, raw in _SAMPLE.findall(text):
        try:
            values[name] = values.get(name, 0.0) + float(raw)
        except ValueError:
            continue
    if "vllm:num_requests_running" not in values:
        return None
    kv = next((values[n] for n in _KV_NAMES if n in values), 0.0)
    return values["vllm:num_requests_running"], values.get("vllm:num_requests_waiting", 0.0), kv


class Scraper:
    """Keeps the latest ``Sample`` (or ``down``) of every server it was told about."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        ours: Callable[[str], int],
        clock: Callable[[], float],
        *,
        interval: float = 1.0,
        timeout: float = 0.5,
    ) -> None:
        self._client = client
        self._ours = ours
        self._clock = clock
        self.interval = interval
        self._timeout = timeout
        self.urls: dict[str, str] = {}
        self.samples: dict[str, Sample] = {}
        self.down: set[str] = set()
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background task on the running loop (idempotent; the gateway's start-up calls it)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="fleet-metrics-scraper")

    def know(self, servers: Mapping[str, str]) -> None:
        """Scrape these servers (id -> ``/metrics`` URL) too, from the next round on."""
        self.urls.update(servers)

    def fresh(self, server: str) -> Sample | None:
        """The server's sample if it is recent enough to trust (three intervals)."""
        sample = self.samples.get(server)
        if sample is None or self._clock() - sample.at > 3 * self.interval:
            return None
        return sample

    async def scrape_once(self) -> None:
        """One round over every known server."""
        await asyncio.gather(*(self._one(name, url) for name, url in list(self.urls.items())))

    async def _one(self, name: str, url: str) -> None:
        ours = self._ours(name)
        try:
            response = await self._client.get(url, timeout=self._timeout)
        except httpx.ConnectError:
            self.down.add(name)
            self.samples.pop(name, None)
            self.failures += 1
            return
        except httpx.HTTPError:
            self.samples.pop(name, None)
            self.failures += 1
            return
        self.down.discard(name)
        parsed = parse_metrics(response.text) if response.status_code == 200 else None
        if parsed is None:
            self.samples.pop(name, None)
            self.failures += 1
            return
        running, waiting, kv = parsed
        self.samples[name] = Sample(running, waiting, kv, self._clock(), ours)

    async def _loop(self) -> None:
        while True:
            started = self._clock()
            try:
                await self.scrape_once()
            except Exception:  # the scraper must outlive any surprise; routing falls back meanwhile
                log.exception("metrics scrape round failed")
            await asyncio.sleep(max(0.0, self.interval - (self._clock() - started)))

    async def stop(self) -> None:
        """Cancel the background task."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
