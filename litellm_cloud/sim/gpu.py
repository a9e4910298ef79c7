"""The vLLM-compatible GPU simulator: one process, one port per simulated server, one admin port.

Every server speaks vLLM's OpenAI API (``POST /v1/chat/completions`` plain and SSE, ``POST
/v1/embeddings``, ``GET /v1/models``, ``GET /health``), answers with its served model name, puts its own
name in the reply text and in an ``x-sim-server`` header, and has two simulator routes::

    POST /sim/control  {"mode": "ok|error|hang|busy|crash|down", "error_rate": 0.1, "ttft_ms": 5,
                        "tokens_per_s": 500, "retry_after_s": 1, "fault_after_tokens": 3, "hold_headers": false,
                        "reset_stats": true}          (every key optional)
    GET  /sim/stats    faults, connections, token totals, and request counts by endpoint (chat,
                       embeddings, models, health) and outcome (ok, bad_request, error, busy, hang,
                       crash, cancelled = the client left first)

Faults by mode: error answers inference with 500 and /health with 503; busy answers inference with
429 (``Retry-After`` when ``retry_after_s`` is set); hang holds every request until the mode changes,
then serves it; crash resets the connection (a chat request first gets ``fault_after_tokens`` tokens,
streamed, or half its body); down closes the port (connection refused) and resets open connections.
``error_rate`` fails that fraction of inference requests with 500 in any mode. /sim/* always answers.

A ``down`` server cannot hear its own port, so the admin port (``SimConfig.admin_port``) controls any::

    GET  /health                        200
    GET  /servers                       every server's /sim/stats
    GET  /servers/<name>                one server's
    POST /servers/<name>/control        as /sim/control; <name> "*" means every server

Python API: ``run(config)`` blocks until SIGINT/SIGTERM; ``await serve(config)`` is the same inside a
loop; ``start_in_thread(config)`` returns a ``SimHandle`` (ports, urls, control, stop) for tests and
benchmarks. The CLI (``python -m litellm_cloud.sim``) prints ``sim ready: gpu-1=127.0.0.1:8080 ...``
once every port listens.
"""

from __future__ import annotations

import asyncio
import random
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Self

from . import _gpu_openai as oa
from ._gpu_config import MODES, ConfigError, SimConfig, SimServer, load_spec, parse_control
from ._gpu_http import Connection, Request
from ._gpu_server import SimServerState, control_request

__all__ = ["MODES", "ConfigError", "SimConfig", "SimHandle", "SimServer", "Simulator", "load_spec", "run", "serve",
           "start_in_thread"]


class Simulator:
    """All simulated servers of one config, plus the admin port, on the running event loop."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        rng = random.Random(config.seed)
        # Each server draws from its own generator so one server's traffic does not shift another's.
        self.servers = {s.name: SimServerState(s, config.host, random.Random(rng.random()), config.strict_model)
                        for s in config.servers}
        self.admin_port = config.admin_port
        self._admin: asyncio.base_events.Server | None = None
        self._admin_conns: set[Connection] = set()

    async def start(self) -> None:
        """Listen on every port (servers whose spec says ``down`` stay closed)."""
        try:
            for server in self.servers.values():
                if server.faults.mode == "down":
                    continue
                await server.listen()
            if self.config.admin_port is not None:
                self._admin = await asyncio.get_running_loop().create_server(
                    lambda: Connection(self._admin_handle, b"", self._admin_conns),
                    self.config.host, self.config.admin_port, reuse_address=True)
                self.admin_port = self._admin.sockets[0].getsockname()[1]
        except OSError:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close every port and connection."""
        for server in self.servers.values():
            server.unlisten()
            server.drop_connections()
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        for conn in list(self._admin_conns):
            conn.abort(reset=False)
        await asyncio.sleep(0)  # let cancelled request tasks unwind

    def ports(self) -> dict[str, int]:
        """Server name to its bound port (the real one when the spec said 0)."""
        return {name: s.port for name, s in self.servers.items()}

    def ready_line(self) -> str:
        """``sim ready: gpu-1=127.0.0.1:8080 ... admin=127.0.0.1:9000``: what a parent waits for."""
        parts = [f"{name}={self.config.host}:{port}" for name, port in self.ports().items()]
        if self.admin_port is not None:
            parts.append(f"admin={self.config.host}:{self.admin_port}")
        return "sim ready: " + " ".join(parts)

    async def control(self, name: str, **changes: Any) -> dict[str, Any]:
        """Change server ``name`` (see ``/sim/control``); ValueError or KeyError when wrong."""
        return await self.servers[name].control(parse_control(changes))

    def _admin_handle(self, conn: Connection, req: Request) -> Coroutine[Any, Any, None] | None:
        parts = req.path.strip("/").split("/")
        if req.method == "GET" and req.path == "/health":
            conn.send(200, b'{"status":"ok"}')
        elif req.method == "GET" and req.path == "/servers":
            conn.send(200, oa.dumps({"servers": [s.state() for s in self.servers.values()]}))
        elif len(parts) >= 2 and parts[0] == "servers" and (parts[1] in self.servers or parts[1] == "*"):
            targets = list(self.servers.values()) if parts[1] == "*" else [self.servers[parts[1]]]
            if req.method == "GET" and len(parts) == 2 and len(targets) == 1:
                conn.send(200, oa.dumps(targets[0].state()))
            elif req.method == "POST" and parts[2:] == ["control"]:
                return self._admin_control(conn, req, targets)
            else:
                conn.send(404, oa.error_body(404, "use GET /servers/<name> or POST /servers/<name>/control"))
        else:
            conn.send(404, oa.error_body(404, f"no admin route {req.method} {req.path}; servers: "
                                              f"{', '.join(self.servers)}"))
        return None

    async def _admin_control(self, conn: Connection, req: Request, targets: list[SimServerState]) -> None:
        if len(targets) == 1:
            await control_request(targets[0], conn, req)
            return
        try:
            changes = parse_control(oa.parse_json(req.body))
        except (ValueError, oa.BadRequest) as exc:
            conn.send(400, oa.error_body(400, getattr(exc, "message", str(exc))))
            return
        states = [await server.control(dict(changes)) for server in targets]
        conn.send(200, oa.dumps({"servers": states}))


async def serve(config: SimConfig, *, stop: asyncio.Event | None = None,
                on_ready: Callable[[Simulator], None] | None = None) -> None:
    """Run the simulator on the current loop until ``stop`` is set (forever without one)."""
    sim = Simulator(config)
    await sim.start()
    try:
        if on_ready is not None:
            on_ready(sim)
        await (stop or asyncio.Event()).wait()
    finally:
        await sim.stop()


def _new_loop(use_uvloop: bool) -> asyncio.AbstractEventLoop:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()  # type: ignore[no-any-return]
    return asyncio.new_event_loop()


def run(config: SimConfig, *, announce: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then close every port; ``announce`` gets the ready line."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop=stop, on_ready=lambda sim: announce(sim.ready_line()) if announce else None)

    loop = _new_loop(config.use_uvloop)
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


class SimHandle:
    """A simulator running on its own thread and loop; ``stop()`` (or ``with``) ends it."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._loop = _new_loop(config.use_uvloop)
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._sim: Simulator | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="gpu-sim", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)

        def ready(sim: Simulator) -> None:
            self._sim = sim
            self._ready.set()

        async def main() -> None:
            self._stop = asyncio.Event()
            await serve(self.config, stop=self._stop, on_ready=ready)

        try:
            self._loop.run_until_complete(main())
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    def start(self, timeout: float = 10.0) -> Self:
        """Start the thread and wait until every port listens."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("simulator thread did not start")
        if self._error is not None:
            raise self._error
        return self

    @property
    def sim(self) -> Simulator:
        """The running simulator (read-only use from other threads: ports, ready line)."""
        assert self._sim is not None, "not started"
        return self._sim

    def ports(self) -> dict[str, int]:
        """Server name to bound port."""
        return self.sim.ports()

    def url(self, name: str) -> str:
        """``http://host:port`` of server ``name`` (append ``/v1`` for an OpenAI base URL)."""
        return f"http://{self.config.host}:{self.sim.servers[name].port}"

    def control(self, name: str, timeout: float = 5.0, **changes: Any) -> dict[str, Any]:
        """Change server ``name`` from this thread (same keys as ``POST /sim/control``)."""
        return asyncio.run_coroutine_threadsafe(self.sim.control(name, **changes), self._loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Close every port and end the thread."""
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self if self._thread.is_alive() else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(config: SimConfig, timeout: float = 10.0) -> SimHandle:
    """Run the simulator on a background thread; returns once every port listens."""
    return SimHandle(config).start(timeout)
