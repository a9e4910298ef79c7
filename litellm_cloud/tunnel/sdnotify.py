"""Tell systemd how the service is doing (``Type=notify``): READY, STATUS, WATCHDOG, STOPPING.

A datagram to ``$NOTIFY_SOCKET``; without it (not under systemd) every call does nothing. The address
and watchdog period are read from an injected mapping by ``Notifier.from_env``, never deep in the code.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends ``KEY=value`` lines to systemd's notify socket."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        # Ping at half the period systemd allows, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval = watchdog_usec / 2e6 if watchdog_usec else None
        self._sock: socket.socket | None = None
        self._last_status: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Notifier:
        """From ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` (honouring ``WATCHDOG_PID``)."""
        usec: int | None = None
        if env.get("WATCHDOG_USEC") and env.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid()):
            usec = int(env["WATCHDOG_USEC"])
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        """Whether a notify socket was given."""
        return bool(self.address)

    def send(self, **fields: str) -> bool:
        """Send one message; failures are logged, never raised (systemd going away must not kill us)."""
        if not self.address:
            return False
        address = self.address
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace socket
        payload = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            if self._sock is None:
                # Non-blocking: a reader that stopped reading (full queue) must not stall the main loop,
                # which keeps every host's status and the watchdog going; the message is dropped instead.
                self._sock = socket.socket(socket.AF_UNIX,
                                           socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            self._sock.sendto(payload, address)
            return True
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self.address, exc)
            return False

    def ready(self, status: str) -> bool:
        """READY=1 with a STATUS line."""
        self._last_status = status
        return self.send(READY="1", STATUS=status)

    def status(self, status: str) -> bool:
        """STATUS=..., only when it changed."""
        if status == self._last_status:
            return False
        self._last_status = status
        return self.send(STATUS=status)

    def watchdog(self) -> bool:
        """WATCHDOG=1: the main loop is alive."""
        return self.send(WATCHDOG="1")

    def stopping(self, status: str = "stopping") -> bool:
        """STOPPING=1."""
        return self.send(STOPPING="1", STATUS=status)

    def close(self) -> None:
        """Close the datagram socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
