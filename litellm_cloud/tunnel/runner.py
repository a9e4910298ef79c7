"""Every cloud host's supervisor, and what the process tells systemd and the status file about them.

::

    Runner.run()              main thread (so SIGTERM is seen at once): READY, STATUS, WATCHDOG,
      │                       STOPPING; the combined status file; waits for the hosts on stop
      ├─ Supervisor(host a)   thread "tunnel-a": its own connection, backoff, TunnelStatus
      └─ Supervisor(host b)   thread "tunnel-b": shares nothing with a but the stop event

READY is sent once every host has had all its forwards up (each at its own moment), or after
``ready_timeout`` anyway, so a cloud host that is down at boot does not fail the unit's start; STATUS
then names each host's state. WATCHDOG is pinged only while every host's loop is turning (its
``heartbeat`` is younger than the watchdog period), so systemd restarts a process with a stuck host.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import paramiko

from .config import TunnelSet
from .sdnotify import Notifier
from .status import TunnelStatus, combine, write_status
from .supervisor import Supervisor

log = logging.getLogger(__name__)

STATUS_WRITE_INTERVAL = 1.0


class Runner:
    """Runs one ``Supervisor`` per cloud host until ``stop`` is set; ``run()`` returns the exit code."""

    def __init__(
        self,
        tunnels: TunnelSet,
        identities: Mapping[Path, paramiko.PKey],
        *,
        stop: threading.Event,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.tunnels = tunnels
        self.stop = stop
        self.notifier = notifier or Notifier(None)
        # Unlabelled with one host: the single-host status and metrics keep their old shape.
        several = len(tunnels.hosts) > 1
        self.supervisors = [
            Supervisor(host, identities[host.identity_file], stop=stop, clock=clock, wall=wall, rand=rand,
                       status=TunnelStatus(host.forwards, host=host.label if several else None, clock=wall))
            for host in tunnels.hosts
        ]
        self._clock = clock
        self._wall = wall
        self._tick_interval = min(0.25, *(h.keepalive.interval / 4 for h in tunnels.hosts))
        self._started = clock()
        self._been_up: set[int] = set()
        self._ready_sent = False
        self._last_watchdog = 0.0
        self._last_write = 0.0
        self._written_version = -1
        self._last_summary = ""

    def snapshot(self) -> dict[str, Any]:
        """Every host's status in one (``status.combine``): what the status file and /metrics show."""
        return combine([s.status.snapshot() for s in self.supervisors], self._wall())

    def summary(self) -> str:
        """One line for STATUS= and the log: the host's summary, or each host's, named."""
        if len(self.supervisors) == 1:
            return self.supervisors[0].status.summary()
        return "; ".join(f"{s.config.label} {s.status.summary()}" for s in self.supervisors)

    def run(self) -> int:
        """Start a thread per host, keep house on this one until stopped; returns 0."""
        threads = [threading.Thread(target=s.run, name=f"tunnel-{s.config.label}", daemon=True)
                   for s in self.supervisors]
        for thread in threads:
            thread.start()
        while not self.stop.is_set():
            self._tick(threads)
            self.stop.wait(self._tick_interval)
        for thread, sup in zip(threads, self.supervisors, strict=True):
            # A host in the middle of a handshake returns within its connect timeouts.
            thread.join(timeout=4 * sup.config.connect_timeout + 1)
            if thread.is_alive():
                log.warning("tunnel to %s did not stop in time", sup.config.label)
        self._write_status(force=True)
        self.notifier.stopping()
        log.info("tunnel stopped")
        return 0

    def _tick(self, threads: list[threading.Thread]) -> None:
        """READY, STATUS, WATCHDOG and the status file."""
        now = self._clock()
        summary = self.summary()
        for i, sup in enumerate(self.supervisors):
            up, total = sup.status.forwards_up()
            if up == total:
                self._been_up.add(i)
        if not self._ready_sent:
            if len(self._been_up) == len(self.supervisors) or now - self._started >= self.tunnels.ready_timeout:
                self.notifier.ready(summary)
                self._ready_sent = True
                log.info("ready: %s", summary)
        elif summary != self._last_summary:
            self.notifier.status(summary)
        if summary != self._last_summary:
            log.info("status: %s", summary)
            self._last_summary = summary
        interval = self.notifier.watchdog_interval
        if interval and now - self._last_watchdog >= interval:
            stuck = [s.config.label for s, t in zip(self.supervisors, threads, strict=True)
                     if not t.is_alive() or now - s.heartbeat > 2 * interval]
            if stuck:
                log.error("tunnel loop of %s is not turning: no watchdog ping", ", ".join(stuck))
            else:
                self.notifier.watchdog()
            self._last_watchdog = now
        self._write_status()

    def _write_status(self, force: bool = False) -> None:
        path = self.tunnels.status_file
        if path is None:
            return
        version, now = sum(s.status.version for s in self.supervisors), self._clock()
        if force or version != self._written_version or now - self._last_write >= STATUS_WRITE_INTERVAL:
            try:
                write_status(path, self.snapshot())
            except OSError as exc:
                log.warning("cannot write status file %s: %s", path, exc)
            self._written_version, self._last_write = version, now
