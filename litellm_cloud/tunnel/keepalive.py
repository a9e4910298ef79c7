"""Liveness: a keepalive that wants a reply, and the lock every global request goes through.

paramiko's ``Transport.set_keepalive`` sends ``keepalive@openssh.com`` without asking for a reply, so it
never notices a dead peer. ``KeepaliveProbe`` asks for one (OpenSSH answers with success or failure; either
proves the link) on its own thread, because paramiko's ``global_request(wait=True)`` has no timeout: on a
dead link it waits until the transport is closed. Misses are counted off that thread: the supervisor's
loop calls ``overdue()`` and tears the connection down once no reply came for ``interval * count``.

paramiko keeps one completion event per transport for global requests, so two in flight at once (a
keepalive and a ``tcpip-forward``) would mix up their replies: ``GlobalRequests`` serialises them.
A finished key exchange (a re-key, every 512 MB or when the server asks) sets that same event, and
paramiko does not clear the previous reply first, so its ``global_request`` can return the *last*
request's answer: a denied forward reported as granted or the reverse (reproduced against sshd with
``RekeyLimit 1K 1s``). ``GlobalRequests`` marks "no reply yet" itself and keeps waiting through such a
wake-up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import paramiko

log = logging.getLogger(__name__)

KEEPALIVE_REQUEST = "keepalive@openssh.com"
_NO_REPLY = object()  # in transport.global_response until the server's reply to our request arrives


class GlobalRequests:
    """Global requests on one transport, one at a time."""

    def __init__(self, transport: paramiko.Transport) -> None:
        if not hasattr(transport, "_tcp_handler"):
            # Where request_port_forward keeps its handler (paramiko 5.1), which ``forward`` sets too;
            # checked once per connection, so a release that moves it fails loudly at connect.
            raise RuntimeError("this paramiko has no Transport._tcp_handler: pin paramiko==5.1.0")
        self.transport = transport
        self._lock = threading.Lock()

    def request(self, kind: str, data: tuple[object, ...] | None = None) -> paramiko.Message | None:
        """Send a global request and wait for its reply; ``None`` if denied (or the transport died)."""
        with self._lock:
            return self._request(kind, data)

    def _request(self, kind: str, data: tuple[object, ...] | None) -> paramiko.Message | None:
        t = self.transport
        t.global_response = _NO_REPLY
        reply = t.global_request(kind, data, wait=True)
        while reply is _NO_REPLY and t.is_active():
            # Woken by a key exchange finishing, not by our reply: wait for the reply itself. Our reply
            # sets global_response before the event, so checking after clear() cannot miss it.
            event = t.completion_event
            event.clear()
            if t.global_response is _NO_REPLY:
                event.wait(0.1)
            reply = t.global_response
        return None if reply is _NO_REPLY else reply

    def forward(self, address: str, port: int, handler: Callable[..., None]) -> int:
        """``tcpip-forward``; raises ``paramiko.SSHException`` when the server denies it.

        ``Transport.request_port_forward`` without its re-key race: the same request, then the same
        handler registration on success.
        """
        with self._lock:
            if not self.transport.is_active():
                raise paramiko.SSHException("SSH session not active")
            if self._request("tcpip-forward", (address, int(port))) is None:
                raise paramiko.SSHException("TCP forwarding request denied")
            self.transport._tcp_handler = handler
            return int(port)


class KeepaliveProbe:
    """Sends a keepalive every ``interval`` seconds and remembers when the last reply came."""

    def __init__(
        self,
        requests: GlobalRequests,
        *,
        interval: float,
        count: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._requests = requests
        self.interval = interval
        self.deadline = interval * count
        self._clock = clock
        self._stop = threading.Event()
        self._last_reply = clock()
        self._sent = 0
        self._thread = threading.Thread(target=self._run, name="keepalive", daemon=True)

    def start(self) -> KeepaliveProbe:
        """Start probing; the deadline counts from now."""
        self._last_reply = self._clock()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop probing (a probe in flight ends when the transport closes)."""
        self._stop.set()

    @property
    def last_reply(self) -> float:
        """When the last reply (or the start) was seen, on the injected clock."""
        return self._last_reply

    def silence(self) -> float:
        """Seconds since the last reply."""
        return self._clock() - self._last_reply

    def overdue(self) -> bool:
        """No reply for ``interval * count`` seconds: the link is dead."""
        return self.silence() >= self.deadline

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if not self._requests.transport.is_active():
                return
            self._sent += 1
            # Blocks until the reply or until the transport closes; the supervisor does the counting.
            self._requests.request(KEEPALIVE_REQUEST)
            if self._requests.transport.is_active():
                self._last_reply = self._clock()
