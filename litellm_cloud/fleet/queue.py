"""Queue-aware routing: send each request to the server with the least queue, and say when a group is full.

A server's load is what the gateway knows exactly plus what only the server knows::

    load = our requests in flight on it now                    (exact, updated before each call)
         + max(0, running + waiting at the last scrape - ours then)   (other replicas' share; 0 when
                                                                        the scrape is stale or failed)
         + KV cache use (0-1) at the last scrape                     (a tie-breaker)

vLLM's ``/metrics`` lags by up to a scrape interval, which is why our own counts carry the weight; the
scrape adds only the load this process cannot see. A server whose scrape was refused is skipped while
another remains (``Scraper.down``). Ties are broken at random, as ``simple-shuffle`` does.

Failure handling stays LiteLLM's: this only narrows the candidates LiteLLM passes to the fleet hook
(after cooldowns and the retry filter), so a busy 429 is retried elsewhere and never cooled down.

A request is counted toward its group at admission (``admit``, in the pre-call hook, right after the
``fleet_busy`` check and with no ``await`` between them), before LiteLLM has picked its server: requests
arriving together each see the ones admitted before them, so a burst cannot overshoot the threshold.
The reservation becomes the request's flight at routing (``start``) or ends with it (``finish``; a
refusal after admission reaches the failure hook too); one never routed lapses after ``PENDING_MAX_AGE_S``.

A group's queue is (the sum of its servers' loads + its admitted requests not yet routed) / its
servers; ``FleetBusy`` refuses a tier whose
``fleet_busy_at`` it reached, with ``Retry-After`` = the requests above that line / the group's
completions per second over the last ``RATE_WINDOW_S``.
"""

from __future__ import annotations

import math
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .manifest import Manifest
from .scrape import Scraper

RATE_WINDOW_S = 10.0
ENTRY_MAX_AGE_S = 900.0  # longer than any call may take; a lost end event cannot pin a count for ever
PENDING_MAX_AGE_S = 60.0  # admission to routing takes milliseconds; a request dropped between them lapses


@dataclass(slots=True)
class _Flight:
    server: str
    group: str
    started: float


class QueueRouter:
    """In-flight counts per server, the scraped samples, the choice and the group's queue."""

    def __init__(self, scraper: Scraper, clock: Callable[[], float], rng: random.Random | None = None) -> None:
        self.scraper = scraper
        self._clock = clock
        self._rng = rng or random.Random()
        self._flights: dict[str, _Flight] = {}  # request id -> where its current try runs
        self.inflight = Counter[str]()
        self.groups: dict[str, set[str]] = {}
        self._done: dict[str, deque[float]] = {}
        self._pending: dict[str, tuple[str, float]] = {}  # request id -> (group, admitted at), not yet routed
        self.reserved = Counter[str]()  # group -> admitted requests not yet routed

    # -- bookkeeping ------------------------------------------------------------------------------
    def ours(self, server: str) -> int:
        return self.inflight[server]

    def admit(self, rid: str, group: str) -> None:
        """Request ``rid`` passed admission to ``group``: count it there until it is routed or ends."""
        self._unreserve(rid)
        self._pending[rid] = (group, self._clock())
        self.reserved[group] += 1
        self._sweep()

    def _unreserve(self, rid: str) -> None:
        pending = self._pending.pop(rid, None)
        if pending is not None:
            self.reserved[pending[0]] -= 1
            if self.reserved[pending[0]] <= 0:
                del self.reserved[pending[0]]

    def start(self, rid: str, group: str, server: str) -> None:
        """A try of request ``rid`` goes to ``server`` (a retry ends the try before it)."""
        self._unreserve(rid)
        self._end(rid)
        self._flights[rid] = _Flight(server, group, self._clock())
        self.inflight[server] += 1
        self._sweep()

    def finish(self, rid: str, server: str | None = None, *, completed: bool) -> None:
        """The try of ``rid`` (on ``server``, when known) ended; ``completed`` counts it as served."""
        self._unreserve(rid)
        flight = self._flights.get(rid)
        if flight is None or (server is not None and flight.server != server):
            return
        self._end(rid)
        if completed:
            self._done.setdefault(flight.group, deque()).append(self._clock())

    def _end(self, rid: str) -> None:
        flight = self._flights.pop(rid, None)
        if flight is not None:
            self.inflight[flight.server] -= 1
            if self.inflight[flight.server] <= 0:
                del self.inflight[flight.server]

    def _sweep(self) -> None:
        now = self._clock()
        while self._pending:
            rid, (_, admitted) = next(iter(self._pending.items()))
            if now - admitted < PENDING_MAX_AGE_S:
                break
            self._unreserve(rid)
        while self._flights:
            rid, flight = next(iter(self._flights.items()))
            if now - flight.started < ENTRY_MAX_AGE_S:
                return
            self._end(rid)

    # -- routing ----------------------------------------------------------------------------------
    def load(self, server: str) -> float:
        """The server's queue as defined above."""
        ours = self.inflight[server]
        sample = self.scraper.fresh(server)
        if sample is None:
            return float(ours)
        return ours + max(0.0, sample.running + sample.waiting - sample.ours) + sample.kv_usage

    def choose(self, group: str, servers: Iterable[str]) -> str | None:
        """The least-loaded live server among ``servers`` (random among equals); ``None`` if none given."""
        names = list(servers)
        self.groups.setdefault(group, set()).update(names)
        live = [n for n in names if n not in self.scraper.down] or names
        if not live:
            return None
        loads = {n: self.load(n) for n in live}
        best = min(loads.values())
        return self._rng.choice([n for n in live if math.isclose(loads[n], best) or loads[n] < best])

    # -- the group's queue ------------------------------------------------------------------------
    def group_load(self, group: str) -> float | None:
        """Load per live server of the group, admitted requests not yet routed included; ``None`` for a
        group whose servers are unknown (neither routed yet nor ``know_group``)."""
        servers = [s for s in self.groups.get(group, ()) if s not in self.scraper.down]
        if not servers:
            return None
        return (sum(self.load(s) for s in servers) + self.reserved[group]) / len(servers)

    def know_group(self, group: str, servers: Iterable[str]) -> None:
        """The group's servers (from the manifest), so its queue is known before its first routing."""
        self.groups.setdefault(group, set()).update(servers)

    def completion_rate(self, group: str) -> float:
        """The group's completed requests per second over the last ``RATE_WINDOW_S``."""
        done = self._done.get(group)
        if not done:
            return 0.0
        now = self._clock()
        while done and now - done[0] > RATE_WINDOW_S:
            done.popleft()
        return len(done) / RATE_WINDOW_S

    def retry_after(self, group: str, threshold: float) -> float:
        """Seconds until the group's queue should be back under ``threshold`` at its current pace."""
        mean = self.group_load(group) or 0.0
        excess = (mean - threshold + 1) * max(1, len(self.groups.get(group, ())))
        rate = self.completion_rate(group)
        if rate <= 0:
            return 5.0
        return min(60.0, max(1.0, excess / rate))


def build_queue_router(manifest: Manifest) -> QueueRouter:
    """The router of one proxy process, scraping at the manifest's interval."""
    import time

    import httpx

    holder: list[QueueRouter] = []
    scraper = Scraper(httpx.AsyncClient(), lambda server: holder[0].ours(server), time.monotonic,
                      interval=manifest.router.metrics_interval, timeout=manifest.router.metrics_timeout)  # fmt: skip
    holder.append(QueueRouter(scraper, time.monotonic))
    return holder[0]
