"""The supervisor loop of one cloud host: connect, request the forwards, watch the link, reconnect
with backoff.

One SSH connection carries every forward to its host. While it is up, the loop (one thread per host,
run by ``runner.Runner``) checks that the transport is alive, that a keepalive reply came within
``interval * count``, and in strict mode that no forward was refused, and stamps ``heartbeat`` so the
runner pings systemd's watchdog only while every host's loop is turning. Anything wrong raises a
``TunnelError``; the connection is closed (so the cloud side frees the ports) and the loop waits as
``Backoff`` says before the next try. Hosts share nothing but ``stop``: one down disturbs no other.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import paramiko

from .backoff import Backoff
from .config import TunnelConfig
from .connection import connect_tcp, open_connection
from .dispatcher import Dispatcher
from .errors import ForwardRefused, SessionLost, TunnelError
from .forwards import ForwardRequester
from .keepalive import KeepaliveProbe
from .status import TunnelStatus

log = logging.getLogger(__name__)

REPEAT_LOG_INTERVAL = 60.0


class Supervisor:
    """Keeps the tunnel to one cloud host up until ``stop`` is set; ``run()`` returns 0."""

    def __init__(
        self,
        config: TunnelConfig,
        identity: paramiko.PKey,
        *,
        stop: threading.Event,
        status: TunnelStatus | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.identity = identity
        self.stop = stop
        self.status = status or TunnelStatus(config.forwards, host=config.label, clock=wall)
        self._clock = clock
        self._wall = wall
        self._rand = rand
        self._backoff = Backoff(config.reconnect, rand)
        self._tick_interval = min(0.25, config.keepalive.interval / 4)
        self._last_logged: tuple[str, float] = ("", 0.0)
        self.heartbeat = clock()  # last turn of the loop: the runner's watchdog looks at it

    def run(self) -> int:
        """Loop until stopped; returns 0."""
        log.info("tunnel to %s@%s (%s): %d forwards", self.config.user, self.config.host_label, self.config.label,
                 len(self.config.forwards))
        if self.config.command() is None:
            log.warning('session_command is empty: sshd will not set TCP_NODELAY on its side, so new '
                        'connections may stall ~40 ms (Nagle); use "true" on a cloud host without the helper')
        while not self.stop.is_set():
            self.status.set_state("connecting")
            try:
                self._session()
            except TunnelError as exc:
                self._failed(exc)
            except Exception as exc:
                log.exception("unexpected error in the tunnel session")
                self._failed(SessionLost(f"unexpected error: {type(exc).__name__}: {exc}"))
        self.status.set_state("stopped")
        log.info("tunnel to %s stopped", self.config.label)
        return 0

    def _failed(self, exc: TunnelError) -> None:
        delay = self._backoff.failed(exc.kind, self._clock())
        self.status.set_state("backoff", error=str(exc), next_attempt=self._wall() + delay)
        self._log_failure(exc, delay)
        self._wait(delay)

    def _log_failure(self, exc: TunnelError, delay: float) -> None:
        text = f"{exc}; retrying in {delay:.1f}s"
        if exc.kind == "operator":
            text += " (this will not fix itself: see the message)"
        last, when = self._last_logged
        now = self._clock()
        # An outage retried every second must not flood the journal: repeat a message once a minute.
        if str(exc) != last or now - when >= REPEAT_LOG_INTERVAL:
            (log.error if exc.kind == "operator" else log.warning)("%s", text)
            self._last_logged = (str(exc), now)
        else:
            log.debug("%s", text)

    def _session(self) -> None:
        sock = connect_tcp(self.config)
        self._backoff.tcp_connected()
        conn = open_connection(self.config, self.identity, sock)
        self._backoff.connected(self._clock())
        self.status.set_state("up")
        self._last_logged = ("", 0.0)
        self.heartbeat = self._clock()
        log.info("connected to %s (reconnects so far: %d)", self.config.host_label,
                 self.status.snapshot()["reconnects"])
        dispatcher = Dispatcher(self.config.forwards, self.status,
                                connect_timeout=self.config.target_connect_timeout)
        requester = ForwardRequester(
            conn.requests, self.config.forwards, dispatcher.handle, self.status,
            bind_address=self.config.bind_address, policy=self.config.reconnect,
            strict=self.config.strict, connect_command=conn.run_command, rand=self._rand,
        ).start()
        keepalive = KeepaliveProbe(conn.requests, interval=self.config.keepalive.interval,
                                   count=self.config.keepalive.count, clock=self._clock).start()
        try:
            while not self.stop.is_set():
                if not conn.transport.is_active():
                    raise SessionLost(f"connection to {self.config.host_label} lost")
                if keepalive.overdue():
                    raise SessionLost(
                        f"no keepalive reply from {self.config.host_label} for {keepalive.silence():.1f}s "
                        f"(interval {self.config.keepalive.interval:g}s x {self.config.keepalive.count})"
                    )
                if requester.failure:
                    raise ForwardRefused(requester.failure)
                self.heartbeat = self._clock()
                self.stop.wait(self._tick_interval)
        finally:
            requester.stop()
            keepalive.stop()
            conn.close()

    def _wait(self, delay: float) -> None:
        deadline = self._clock() + delay
        while not self.stop.is_set():
            self.heartbeat = now = self._clock()
            if now >= deadline:
                return
            self.stop.wait(min(deadline - now, self._tick_interval))
