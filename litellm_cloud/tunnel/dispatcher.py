"""One handler for every forward, keyed on the server port, and the pumps that move the bytes.

paramiko keeps a single forwarding handler per transport (paramiko issue 1710): a handler per port would
silently route every port to the last handler's target. So all forwards share ``Dispatcher.handle``,
which looks the target up from the port the server says it accepted on.

``handle`` runs inside paramiko's only reader thread, so it must not block: it starts a pump thread and
returns. A pump connects to the target, then copies both ways with ``sendall`` (``send`` may send part),
passes half-closes through (EOF one way does not end the other), and closes both ends explicitly.

Pumps wait with ``poll`` (through ``selectors.PollSelector``), not ``select.select``: select raises
``ValueError`` for any fd number above 1023, which a busy tunnel passes at ~330 connections (each holds
a target socket and the channel's pipe pair). poll has no such limit and, unlike epoll, costs no fd.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
from collections.abc import Callable, Iterable

import paramiko

from .config import Forward
from .status import TunnelStatus

log = logging.getLogger(__name__)

CHUNK = 256 * 1024  # larger reads: fewer trips through paramiko per MB (~+25% throughput here)
# PollSelector where the platform has poll (Linux does): no fd limit and no fd of its own.
_Selector: Callable[[], selectors.BaseSelector] = getattr(selectors, "PollSelector", selectors.DefaultSelector)


def tune_socket(sock: socket.socket) -> None:
    """No Nagle delay: small writes (HTTP headers, SSE events) leave at once."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Dispatcher:
    """Routes each forwarded channel to its forward's target, by the server port it arrived on."""

    def __init__(
        self,
        forwards: Iterable[Forward],
        status: TunnelStatus,
        *,
        connect_timeout: float,
        thread_factory: Callable[..., threading.Thread] = threading.Thread,
    ) -> None:
        self._by_port = {f.remote_port: f for f in forwards}
        self._status = status
        self._connect_timeout = connect_timeout
        self._thread_factory = thread_factory
        self._pumps: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def handle(self, channel: paramiko.Channel, origin: tuple[str, int], server: tuple[str, int]) -> None:
        """paramiko's forwarded-tcpip handler; called on the transport thread, so never blocks.

        Never raises: an exception here ends paramiko's reader thread, and with it the whole connection
        and every forward. A pump that cannot start (thread limit, memory) costs only its own channel.
        """
        fwd = self._by_port.get(server[1])
        if fwd is None:
            log.warning("connection for unknown remote port %s from %s:%s; closing", server[1], *origin)
            _close_quietly(channel)
            return
        thread: threading.Thread | None = None
        try:
            thread = self._thread_factory(
                target=self._pump, args=(channel, fwd), name=f"pump-{fwd.name}-{origin[1]}", daemon=True
            )
            with self._lock:
                self._pumps.add(thread)
            thread.start()
        except Exception:  # RuntimeError "can't start new thread" in practice; nothing may escape
            log.exception("forward %s: cannot start a pump for %s:%s; refusing this connection only",
                          fwd.name, origin[0], origin[1])
            if thread is not None:
                with self._lock:
                    self._pumps.discard(thread)
            self._status.connection(fwd.name, failed=True)
            _close_quietly(channel)

    def active(self) -> int:
        """Pumps still running."""
        with self._lock:
            return len(self._pumps)

    def _pump(self, channel: paramiko.Channel, fwd: Forward) -> None:
        try:
            try:
                sock = socket.create_connection((fwd.target_host, fwd.target_port), timeout=self._connect_timeout)
            except OSError as exc:
                log.warning("forward %s: cannot reach %s:%s: %s", fwd.name, fwd.target_host, fwd.target_port, exc)
                self._status.connection(fwd.name, failed=True)
                channel.close()
                return
            self._status.connection(fwd.name, opened=True)
            try:
                sock.settimeout(None)
                tune_socket(sock)
                self._copy(channel, sock, fwd.name)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                log.debug("forward %s: connection ended: %s", fwd.name, exc)
            finally:
                sock.close()
                channel.close()
                self._status.connection(fwd.name, closed=True)
        finally:
            with self._lock:
                self._pumps.discard(threading.current_thread())

    def _copy(self, channel: paramiko.Channel, sock: socket.socket, name: str) -> None:
        """Copy both ways until both sides have sent EOF, or the channel closes."""
        with _Selector() as selector:
            selector.register(channel, selectors.EVENT_READ)
            selector.register(sock, selectors.EVENT_READ)
            self._copy_with(selector, channel, sock, name)

    def _copy_with(self, selector: selectors.BaseSelector, channel: paramiko.Channel, sock: socket.socket,
                   name: str) -> None:
        chan_open, sock_open = True, True  # whether each side may still send us data
        while chan_open or sock_open:
            ready = {key.fileobj for key, _ in selector.select(1.0)}
            if channel.closed and not channel.recv_ready():
                # The session died or the far end closed entirely: nothing more can go either way.
                return
            if channel in ready:
                # At EOF the remote client half-closed: pass it on.
                chan_open = self._pass_chunk(selector, channel, sock, lambda: sock.shutdown(socket.SHUT_WR),
                                             lambda n: self._status.add_bytes(name, to_target=n))
            if sock in ready:
                # At EOF the target half-closed: send EOF, keep reading.
                sock_open = self._pass_chunk(selector, sock, channel, channel.shutdown_write,
                                             lambda n: self._status.add_bytes(name, from_target=n))

    @staticmethod
    def _pass_chunk(selector: selectors.BaseSelector, src: paramiko.Channel | socket.socket,
                    dst: paramiko.Channel | socket.socket, end: Callable[[], None],
                    count: Callable[[int], None]) -> bool:
        """Pass what ``src`` has to ``dst``; at EOF stop watching ``src``, call ``end``, return False."""
        data = src.recv(CHUNK)
        if data:
            dst.sendall(data)
            count(len(data))
            return True
        selector.unregister(src)
        end()
        return False


def _close_quietly(channel: paramiko.Channel) -> None:
    try:
        channel.close()
    except (OSError, EOFError, paramiko.SSHException) as exc:  # on the transport thread (see handle)
        log.debug("closing a refused channel: %s", exc)
