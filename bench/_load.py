"""A cheap load generator for streams: one thread, non-blocking sockets, one read round per tick.

The asyncio client in ``bench_stream`` wakes once per SSE chunk (the proxy writes each as it comes), which
costs it ~30 us of CPU per chunk: a fifth of a core at 6,000 chunks/s. When the load generator shares the
measured cores (the 1-vs-2-workers case) that fifth is taken from the proxy. This one sleeps ``tick``
between rounds, so the chunks of several ticks wait in the kernel's receive buffer and one ``recv`` takes
them all. A stream's end is seen up to ``tick`` late: with streams of seconds under load, noise.

Counts only: no per-chunk timing (the latency cases keep the asyncio client).
"""

from __future__ import annotations

import selectors
import socket
import time

END = b"\r\n0\r\n\r\n"  # the zero-size chunk that ends a chunked answer (JSON escapes line breaks)
_EVENT = b"data: "


class _Conn:
    """One keep-alive connection with one request in flight."""

    __slots__ = ("head", "request", "sock", "tail")

    def __init__(self, port: int, request: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.request = request
        self.head: bytes | None = b""  # bytes of the answer's head so far; None once it was read
        self.tail = b""

    def send(self) -> None:
        self.sock.setblocking(True)
        self.sock.sendall(self.request)
        self.sock.setblocking(False)
        self.head, self.tail = b"", b""

    def feed(self, block: bytes) -> tuple[int, bool]:
        """(``data:`` events in ``block``, whether the answer ended with it)."""
        if self.head is not None:
            self.head += block
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return 0, False
            if not self.head.startswith(b"HTTP/1.1 200") or b"chunked" not in self.head[:end].lower():
                raise RuntimeError(self.head[:end].decode(errors="replace"))
            block, self.head = self.head[end + 4 :], None
        data = self.tail + block
        events = data.count(_EVENT) - self.tail.count(_EVENT)
        self.tail = data[-8:]
        return events, data.endswith(END)


def stream_blast(port: int, request: bytes, concurrency: int, seconds: float, tick: float = 0.005) -> tuple[int, int]:
    """(streams completed, ``data:`` events received) within ``seconds`` over ``concurrency`` connections.

    ``request`` is a whole HTTP/1.1 request for a chunked SSE answer. Connections still streaming at the
    end are closed, not drained, so the window is the measurement (the proxy sees clients leaving).
    """
    sel = selectors.DefaultSelector()
    conns = [_Conn(port, request) for _ in range(concurrency)]
    for conn in conns:
        sel.register(conn.sock, selectors.EVENT_READ, conn)
        conn.send()
    done = events = 0
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline:
            time.sleep(tick)
            for key, _ in sel.select(0):
                conn = key.data
                block = conn.sock.recv(1 << 20)
                if not block:
                    raise RuntimeError("the proxy closed a connection mid-stream")
                n, ended = conn.feed(block)
                events += n
                if ended:
                    done += 1
                    conn.send()
    finally:
        for conn in conns:
            sel.unregister(conn.sock)
            conn.sock.close()
        sel.close()
    return done, events
