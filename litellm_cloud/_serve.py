"""The proxy process: LiteLLM's own CLI, with uvicorn told how long a shutdown may wait.

On SIGTERM uvicorn stops accepting connections, lets the requests and streams in flight finish, and
only after ``timeout_graceful_shutdown`` seconds cancels what is left; then the app's shutdown runs
(limits settle as each request ends; the gateway's shutdown flushes traces). Without a timeout uvicorn would wait forever and
the container runtime's SIGKILL would cut everything at once, so the grace is a setting
(``HEARTCODE_SHUTDOWN_GRACE``) and compose's ``stop_grace_period`` is that plus ``SHUTDOWN_MARGIN_S``.
LiteLLM's CLI has no flag for the timeout: this module gives it to every ``uvicorn.run`` call the CLI
makes (workers included: they get the same ``Config``), then hands over to the CLI unchanged.

Before uvicorn's own shutdown closes idle keep-alive connections, a drain (``DRAIN_S``) lets nginx retire
them: ``install_drain`` wraps ``uvicorn.Server.shutdown``. The gateway installs it from inside each serving
process (worker processes are spawned: nothing patched in this launcher reaches them).

Several workers (``--num_workers``): uvicorn binds one socket in its supervisor and every worker accepts
from it, so the worker whose event loop wakes first takes every connection waiting (asyncio accepts up
to a backlog's worth per wake-up). Clients and nginx keep connections open, so one worker ended up
carrying most of the streams while the other idled (bench/bench_stream.py: 2 workers gave 1.38x one).
``reuse_port_per_worker`` gives each worker a listening socket of its own on the same address
(``SO_REUSEPORT``), and the kernel spreads new connections over them by address hash.

``freeze_heap`` takes what start-up built out of the garbage collector's reach. LiteLLM's import leaves
about a million objects that live as long as the process; every full (generation 2) collection walked
them all again, 0.4-1.0 s with the event loop stopped on a shared 2-core machine, and every request in
flight waited that long (bench/README.md: the Premium tail of ``bench_fleet.py`` phase 2). After
``gc.freeze()`` a full collection walks only what was allocated since (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import socket
import sys
import time
from typing import Any

from ._config import shutdown_grace

#: Seconds the container runtime should allow beyond the grace: app shutdown and process exit.
SHUTDOWN_MARGIN_S = 5
#: Seconds a stopping proxy keeps serving its open keep-alive connections after it stops accepting:
#: above nginx's upstream ``keepalive_timeout`` (4 s), so nginx, refused on connect, marks this proxy
#: down and closes its idle connections itself. Closing them from here instead races with nginx
#: sending a POST on one, which nginx then may not resend (a 502, seen in tests/deploy/test_restart.py).
DRAIN_S = 6.0


def main() -> None:
    """Run ``litellm.proxy.proxy_cli`` (its arguments are this process's) with the shutdown grace."""
    import uvicorn

    grace = shutdown_grace(os.environ)
    run = uvicorn.run

    @functools.wraps(run)
    def graceful_run(*args: Any, **kwargs: Any) -> None:
        # The drain comes out of the grace: drain + wait for requests in flight <= grace, so the process
        # is gone (traces flushed) within grace + SHUTDOWN_MARGIN_S, compose's stop_grace_period.
        kwargs.setdefault("timeout_graceful_shutdown", max(1.0, grace - min(DRAIN_S, grace)))
        if int(kwargs.get("workers") or 1) > 1:
            reuse_port_per_worker()
        run(*args, **kwargs)

    uvicorn.run = graceful_run  # type: ignore[assignment]
    from litellm.proxy.proxy_cli import run_server

    run_server()


def freeze_heap() -> int:
    """Collect once, then move every object that survived into the permanent generation, which
    collections never walk (CPython's ``gc.freeze``); returns how many objects are frozen.

    Call it when start-up has built what the process keeps (the gateway does, from each serving
    process); calling it again freezes what was built since. Frozen objects are never freed, so the
    collection first clears start-up's garbage instead of keeping it for good.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def collect_less_often(threshold: tuple[int, int, int] | None) -> tuple[int, ...]:
    """Set the collector's thresholds (``gc.set_threshold``) for a process that relays streams, unless
    ``threshold`` is None (the interpreter's stay); returns the thresholds in force.

    CPython counts a young collection due when allocations outnumber deallocations by the first threshold
    (700 by default), an older one every tenth of those, a full one every tenth again. A relayed stream
    keeps every chunk until it ends (LiteLLM rebuilds the whole answer for usage and traces), about a
    dozen tracked objects per chunk, so the live chunks survive the young collections, pile into the old
    generation, and a full collection ran about once a second under stream load, ~90 ms each with the
    event loop stopped (bench/README.md, 3 Dec 2026). The gateway's default (2000,10,100) keeps young
    collections short (~1 ms) and makes full ones a hundred times rarer; chunks that reach the old
    generation are still freed by reference count when their stream ends. Garbage in reference cycles
    that survives into the old generation waits longer for a full collection.
    """
    if threshold is not None:
        gc.set_threshold(*threshold)
    return gc.get_threshold()


class _PortHolder(socket.socket):
    """The supervisor's socket when each worker listens on its own: bound, so the port is this process
    group's, but never listening, so the kernel gives connections only to workers that are serving.

    A worker process receives it pickled (uvicorn spawns workers with their sockets as arguments) and
    unpickles, instead of a copy of this socket, a new one bound to the same address (``_listener``).
    """

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return _listener, (self.family, self.getsockname())


def _sharing_port(sock: socket.socket) -> socket.socket:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


def _listener(family: int, address: tuple[Any, ...]) -> socket.socket:
    """A worker's own socket on ``address``; uvicorn's ``create_server(sock=...)`` makes it listen."""
    sock = _sharing_port(socket.socket(family, socket.SOCK_STREAM))
    sock.bind(address)
    return sock


_PORT_MARK = "_litellm_cloud_reuse_port"


def reuse_port_per_worker() -> bool:
    """Make uvicorn's supervisor bind a ``_PortHolder`` for TCP addresses, so that each worker process
    listens on a socket of its own (idempotent; false where the platform has no load-balancing
    ``SO_REUSEPORT``: then the workers share uvicorn's one socket as before).

    uvicorn's own ``bind_socket`` runs first and its socket is closed right after: it checks the
    address (a port another process holds, even with ``SO_REUSEPORT``, fails there as "address in
    use", so two proxies never share a port by accident) and logs where the proxy listens.
    """
    import uvicorn

    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        return False
    bind = uvicorn.Config.bind_socket
    if getattr(bind, _PORT_MARK, False):
        return True

    @functools.wraps(bind)
    def bind_port_holder(self: uvicorn.Config) -> socket.socket:
        checked = bind(self)
        if self.uds is not None or self.fd is not None:
            return checked
        family, address = checked.family, checked.getsockname()
        checked.close()
        holder = _sharing_port(_PortHolder(family, socket.SOCK_STREAM))
        holder.bind(address)
        holder.set_inheritable(True)
        return holder

    setattr(bind_port_holder, _PORT_MARK, True)
    uvicorn.Config.bind_socket = bind_port_holder  # type: ignore[method-assign]
    return True


_DRAIN_MARK = "_litellm_cloud_drain"
_CLOSE = (b"connection", b"close")


def _close_after_answer(cycle: Any) -> None:
    """Have a request in flight end its connection after the response, *saying so* in that response.

    A cycle keeps the default headers of the moment it began, so one begun before the drain would
    answer without "connection: close"; closing its connection after that answer (uvicorn's h11
    protocol does, once ``keep_alive`` is false, without adding the header) leaves nginx thinking it
    is reusable: nginx sends the next POST on it just as the close arrives, gets a reset or an EOF and
    answers 502 (tests/deploy/test_restart.py, about 1 restart in 3 under load). So the header goes
    into the answer itself. An answer already started cannot say it any more: that connection stays
    open, and is retired by nginx's next request on it (answered with the header) or by nginx's
    keepalive_timeout, both within ``DRAIN_S``.
    """
    if cycle is None or cycle.response_started or _CLOSE in cycle.default_headers:
        return
    cycle.default_headers = [*cycle.default_headers, _CLOSE]
    cycle.keep_alive = False


def install_drain(grace: float) -> None:
    """Make uvicorn's shutdown keep serving open connections up to ``DRAIN_S`` first (idempotent)."""
    import uvicorn

    shutdown = uvicorn.Server.shutdown
    if getattr(shutdown, _DRAIN_MARK, False):
        return

    @functools.wraps(shutdown)
    async def draining_shutdown(self: uvicorn.Server, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # stop accepting; connections already open keep being served
        for sock in sockets or []:
            sock.close()
        # Every answer from now on says "connection: close", so each open connection ends after its next
        # response instead of being closed idle under a request nginx is sending (which nginx may not
        # resend: a POST). The main loop, which refreshes these headers, has stopped.
        self.server_state.default_headers = [*self.server_state.default_headers, _CLOSE]
        deadline = time.monotonic() + min(DRAIN_S, grace)
        while self.server_state.connections and time.monotonic() < deadline and not self.force_exit:
            for connection in list(self.server_state.connections):
                _close_after_answer(getattr(connection, "cycle", None))
            await asyncio.sleep(0.05)
        await shutdown(self, sockets)

    setattr(draining_shutdown, _DRAIN_MARK, True)
    uvicorn.Server.shutdown = draining_shutdown  # type: ignore[method-assign]


if __name__ == "__main__":
    main()
