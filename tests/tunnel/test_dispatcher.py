"""The dispatcher without sshd: pumps work with fd numbers past select()'s 1024 limit, and a pump that
cannot start costs only its own connection (never an exception into paramiko's reader thread)."""

from __future__ import annotations

import os
import resource
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from litellm_cloud.tunnel import Forward, TunnelStatus
from litellm_cloud.tunnel.dispatcher import Dispatcher
from tests.support import wait_until

from .harness import IdentEcho


class SocketChannel:
    """The part of ``paramiko.Channel`` a pump uses, over one end of a socketpair."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.closed = False

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv_ready(self) -> bool:
        return False

    def recv(self, n: int) -> bytes:
        return self._sock.recv(n)

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def shutdown_write(self) -> None:
        self._sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.closed = True
        self._sock.close()


@pytest.fixture
def high_fds() -> Iterator[None]:
    """Fill fds 0..1100 so every socket opened meanwhile gets a number select() cannot take."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < 2048")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096) if hard == resource.RLIM_INFINITY
                                                else min(max(soft, 4096), hard), hard))
    fillers: list[int] = []
    try:
        while (fd := os.open("/dev/null", os.O_RDONLY)) < 1100:
            fillers.append(fd)
        fillers.append(fd)
        yield
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _forward(target: IdentEcho) -> tuple[Forward, TunnelStatus]:
    fwd = Forward("gpu", 9001, "127.0.0.1", target.port)
    return fwd, TunnelStatus([fwd])


def test_pump_copies_both_ways_with_fds_above_1024(high_fds: None) -> None:
    target = IdentEcho("gpu")
    fwd, status = _forward(target)
    dispatcher = Dispatcher([fwd], status, connect_timeout=5)
    remote, ours = socket.socketpair()
    try:
        assert ours.fileno() > 1024
        dispatcher.handle(SocketChannel(ours), ("10.0.0.9", 40000), ("127.0.0.1", 9001))  # type: ignore[arg-type]
        remote.settimeout(5)
        reader = remote.makefile("rb")
        assert reader.readline() == b"gpu\n"
        remote.sendall(b"x" * 100_000)
        remote.shutdown(socket.SHUT_WR)  # half-close: the echo target sees EOF and ends its side
        assert reader.read() == b"x" * 100_000
        wait_until(lambda: dispatcher.active() == 0, 5, "pump finished")
        snap = status.snapshot()["forwards"][0]
        assert snap["bytes_to_target"] == 100_000 and snap["bytes_from_target"] == 100_004
        assert snap["connections"] == 1 and snap["active"] == 0
    finally:
        remote.close()
        target.close()


class _NoThreads(threading.Thread):
    def start(self) -> None:
        raise RuntimeError("can't start new thread")


def test_a_pump_that_cannot_start_refuses_only_its_channel() -> None:
    target = IdentEcho("gpu")
    fwd, status = _forward(target)
    failing = Dispatcher([fwd], status, connect_timeout=5, thread_factory=_NoThreads)
    remote, ours = socket.socketpair()
    chan = SocketChannel(ours)
    try:
        failing.handle(chan, ("10.0.0.9", 40001), ("127.0.0.1", 9001))  # type: ignore[arg-type]  # no raise
        assert chan.closed and failing.active() == 0
        remote.settimeout(5)
        assert remote.recv(10) == b""  # the remote client sees this one connection closed
        assert status.snapshot()["forwards"][0]["failed_connections"] == 1

        def factory(**kwargs: Any) -> threading.Thread:
            raise MemoryError

        other_remote, other_ours = socket.socketpair()
        with other_remote:
            Dispatcher([fwd], status, connect_timeout=5, thread_factory=factory).handle(
                SocketChannel(other_ours), ("10.0.0.9", 40002), ("127.0.0.1", 9001))  # type: ignore[arg-type]
        assert status.snapshot()["forwards"][0]["failed_connections"] == 2
    finally:
        remote.close()
        target.close()
