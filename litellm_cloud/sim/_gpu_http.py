"""A minimal HTTP/1.1 server on asyncio protocols: just enough for the GPU simulator.

Why not Starlette/uvicorn or aiohttp: the simulator must be much faster than the gateway it is compared
with, and its fault modes need the raw socket (reset a connection mid-response, stop listening, hold a
request forever). A protocol object per connection gives both: a small request costs one parse, one
handler call and one ``transport.write`` (bench/bench_sim.py has the numbers).

What it speaks: HTTP/1.1 keep-alive and pipelining (answered in order), ``Content-Length`` and chunked
request bodies, ``Expect: 100-continue``, and chunked streaming responses written straight to the socket
(each SSE event leaves at once; asyncio sets ``TCP_NODELAY``). What it leaves out: TLS, HTTP/2, upgrades.

A handler is called as ``handler(conn, request)``. It answers at once through ``conn.send`` and returns
``None``, or returns a coroutine that the connection runs as a task (slow answers, streams, hangs); the
next pipelined request waits for it. If the client goes away, that task is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable, Coroutine
from typing import Any, cast

log = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
MAX_BODY = 32 * 1024 * 1024

REASONS = {
    100: "Continue", 200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    411: "Length Required", 413: "Payload Too Large", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable",
}
_LINGER_RESET = struct.pack("ii", 1, 0)


class Request:
    """One parsed request: method, path (without query), query string, lower-cased headers, body."""

    __slots__ = ("body", "headers", "keep_alive", "method", "path", "query")

    def __init__(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes,
                 keep_alive: bool) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


Handler = Callable[["Connection", Request], "Coroutine[Any, Any, None] | None"]


class _BadHttp(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Connection(asyncio.Protocol):
    """One client connection. ``extra_headers`` (raw ``name: value\\r\\n`` lines) go on every answer."""

    def __init__(self, handler: Handler, extra_headers: bytes = b"",
                 registry: set[Connection] | None = None) -> None:
        self._handler = handler
        self._extra = extra_headers
        self._registry = registry
        self._buf = b""
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self.keep_alive = True
        self._continue_sent = False
        self._drained: asyncio.Future[None] | None = None
        self.streaming = False
        self.closed = False

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self._registry is not None:
            self._registry.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._registry is not None:
            self._registry.discard(self)
        if self._task is not None:
            self._task.cancel()  # the client gave up: stop generating for it
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buf = self._buf + data if self._buf else data
        if self._task is None:
            self._serve_buffered()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    # -- parsing ----------------------------------------------------------------------------------
    def _serve_buffered(self) -> None:
        """Answer every complete request in the buffer, stopping at one that needs a task."""
        while self._buf and self._task is None and not self.closed:
            try:
                request = self._parse()
            except _BadHttp as exc:
                self.keep_alive = False
                self.send(exc.status, b'{"error":{"message":"%s","type":"BadRequestError","param":null,'
                          b'"code":%d}}' % (str(exc).encode(), exc.status))
                return
            if request is None:
                return
            self.keep_alive = request.keep_alive
            self.streaming = False
            try:
                coro = self._handler(self, request)
            except Exception:  # a bug in a handler must not kill the connection silently
                log.exception("handler failed")
                self._fail()
                return
            if coro is not None:
                self._task = asyncio.get_running_loop().create_task(self._run(coro))

    def _parse(self) -> Request | None:
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                raise _BadHttp(431, "request head too large")
            return None
        lines = buf[:end].decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
        except ValueError:
            raise _BadHttp(400, "malformed request line") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadHttp(400, "malformed header line")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parsed = _dechunk(buf, start)
            if parsed is None:
                self._maybe_continue(headers)
                return None
            body, consumed = parsed
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                raise _BadHttp(400, "bad content-length") from None
            if length < 0 or length > MAX_BODY:
                raise _BadHttp(413 if length > 0 else 400, "bad content-length")
            if len(buf) - start < length:
                self._maybe_continue(headers)
                return None
            body, consumed = buf[start:start + length], start + length
        self._buf = buf[consumed:]
        self._continue_sent = False
        conn_header = headers.get("connection", "").lower()
        keep_alive = ("close" not in conn_header) if version == "HTTP/1.1" else ("keep-alive" in conn_header)
        path, _, query = target.partition("?")
        return Request(method, path, query, headers, body, keep_alive)

    def _maybe_continue(self, headers: dict[str, str]) -> None:
        # curl waits a second for this before sending a body over 1 KB.
        if not self._continue_sent and headers.get("expect", "").lower() == "100-continue":
            self._continue_sent = True
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if len(self._buf) > MAX_BODY + MAX_HEAD:
            raise _BadHttp(413, "request body too large")

    async def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            self.abort(reset=False)
            raise
        except Exception:
            log.exception("handler task failed")
            self._fail()
        finally:
            self._task = None
        if not self.closed:
            self._serve_buffered()

    def _fail(self) -> None:
        if self.streaming:
            self.abort()
        else:
            self.keep_alive = False
            self.send(500, b'{"error":{"message":"simulator bug","type":"InternalServerError",'
                           b'"param":null,"code":500}}')

    # -- answering --------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self.closed:
            self._transport.write(data)

    def send(self, status: int, body: bytes, content_type: bytes = b"application/json",
             headers: bytes = b"") -> None:
        """A complete answer; ``headers`` are extra raw header lines."""
        close = b"" if self.keep_alive else b"connection: close\r\n"
        self._write(b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s%s%s\r\n%s" % (
            status, REASONS.get(status, "Status").encode(), content_type, len(body), self._extra, headers,
            close, body))
        if not self.keep_alive:
            self.close()

    def send_partial(self, status: int, body: bytes, sent: int) -> None:
        """Announce ``body`` in full but write only its first ``sent`` bytes (for crash-mid-response)."""
        self._write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
            status, REASONS.get(status, "Status").encode(), len(body), self._extra, body[:sent]))

    def start_stream(self, status: int = 200, content_type: bytes = b"text/event-stream") -> None:
        """Begin a chunked answer; follow with ``write_events`` calls, the last with ``end=True``."""
        self.streaming = True
        close = b"" if self.keep_alive else b"connection: close\r\n"
        self._write(b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncache-control: no-cache\r\n"
                    b"transfer-encoding: chunked\r\n%s%s\r\n" % (
                        status, REASONS.get(status, "Status").encode(), content_type, self._extra, close))

    def write_events(self, events: list[bytes], end: bool = False) -> None:
        """Each of ``events`` as its own chunk, all in one write; ``end`` finishes the answer."""
        data = b"".join([b"%x\r\n%s\r\n" % (len(e), e) for e in events if e])
        if end:
            data += b"0\r\n\r\n"
        self._write(data)
        if end:
            self.streaming = False
            if not self.keep_alive:
                self.close()

    async def drain(self) -> None:
        """Wait while the client reads slower than we write."""
        if self._drained is not None and not self._drained.done():
            await self._drained

    def close(self) -> None:
        """Close after what was written has been sent."""
        if self._transport is not None and not self.closed:
            self._transport.close()

    def abort(self, reset: bool = True) -> None:
        """Drop the connection now; with ``reset`` the peer sees a TCP RST (a crashed server)."""
        transport = self._transport
        if transport is None or self.closed:
            return
        if reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                except OSError:
                    pass
        transport.abort()
        self.closed = True


def _dechunk(buf: bytes, pos: int) -> tuple[bytes, int] | None:
    """Decode a chunked body starting at ``pos``: ``(body, end)``, or None while incomplete."""
    parts: list[bytes] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(buf[pos:eol].split(b";", 1)[0], 16)
        except ValueError:
            raise _BadHttp(400, "bad chunk size") from None
        if size == 0:
            # Trailers (rare) end with an empty line.
            end = buf.find(b"\r\n\r\n", eol) if buf[eol + 2:eol + 4] != b"\r\n" else eol
            return (b"".join(parts), end + 4) if end >= 0 else None
        if len(buf) < eol + 2 + size + 2:
            return None
        parts.append(buf[eol + 2:eol + 2 + size])
        pos = eol + 2 + size + 2
        if pos - size > MAX_BODY:
            raise _BadHttp(413, "request body too large")
