"""The development key backend: the HeartCode key contract served from a keys file.

``litellm-cloud dev`` and the tests run it so the gateway's auth path is the production one. It serves
``POST /api/v1/keys/validate`` exactly as docs/backend-contract.md says, from a YAML list::

    - {key: hc-sk-dev-free-..., user_id: user-free, tier: free, age_verified: false, key_id: k1}

and has simulator routes for tests (loopback tooling; they are not part of the contract)::

    GET  /health              200 {"status": "ok"}
    GET  /sim/stats           {"validate_calls": n, "by_result": {"valid": n, "invalid": n, "fault": n}}
    POST /sim/control         {"mode": "ok|slow|hang|error", "delay_s": 2.0, "error_status": 500,
                               "invalid_status": 200|401|404, "reset_stats": true}   (every key optional)
    POST /sim/keys            {"key", "user_id", "tier", "age_verified", "key_id"}: add or replace a key
    DELETE /sim/keys          {"key": ...}: forget a key (the backend side of a revocation)

Modes: ``slow`` answers after ``delay_s``; ``hang`` answers when the mode changes; ``error`` answers
``error_status`` (500). ``invalid_status`` picks how an unknown key is refused (200 ``valid: false``, 401
or 404). With ``token`` set, a request without ``Authorization: Bearer <token>`` gets 403.

Python API: ``BackendConfig`` + ``await serve(config)`` / ``run(config)`` / ``start_in_thread(config)``
(a ``BackendHandle`` with ``url`` and ``stop()``). CLI: ``python -m litellm_cloud.sim.backend --port N
--keys FILE [--token T]`` prints ``backend ready: http://host:port`` once it listens. Keys never appear
in its logs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import pydantic
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .._errors import ConfigError
from .._yaml import load_model

MODES = ("ok", "slow", "hang", "error")


class KeyRecord(pydantic.BaseModel):
    """One key of the keys file."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    key: str = pydantic.Field(min_length=1)
    user_id: str = pydantic.Field(min_length=1)
    tier: str = pydantic.Field(min_length=1)
    age_verified: bool = False
    key_id: str | None = None


class KeysFile(pydantic.RootModel[list[KeyRecord]]):
    """The keys file: a YAML list of ``KeyRecord``."""


def load_keys(path: Path) -> tuple[KeyRecord, ...]:
    """Load a keys file; a mistake raises ``ConfigError`` naming the line."""
    return tuple(load_model(path, KeysFile).root)


@dataclass(frozen=True)
class BackendConfig:
    """How to run the development backend."""

    keys: tuple[KeyRecord, ...] = ()
    keys_file: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    token: str = ""
    mode: str = "ok"
    delay_s: float = 0.0

    def all_keys(self) -> tuple[KeyRecord, ...]:
        return (load_keys(self.keys_file) if self.keys_file else ()) + self.keys


@dataclass
class _State:
    keys: dict[str, KeyRecord]
    mode: str = "ok"
    delay_s: float = 0.0
    error_status: int = 500
    invalid_status: int = 200
    stats: Counter[str] = field(default_factory=Counter)
    changed: asyncio.Event | None = None


def build_app(config: BackendConfig) -> Starlette:
    """The ASGI app of the development backend."""
    state = _State(keys={r.key: r for r in config.all_keys()}, mode=config.mode, delay_s=config.delay_s)
    token = config.token.encode()

    def _changed() -> asyncio.Event:
        if state.changed is None:
            state.changed = asyncio.Event()
        return state.changed

    async def validate(request: Request) -> JSONResponse:
        state.stats["validate_calls"] += 1
        if token:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").encode()
            if not hmac.compare_digest(given, token):
                state.stats["forbidden"] += 1
                return JSONResponse({"error": "service token missing or wrong"}, status_code=403)
        if state.mode == "slow":
            await asyncio.sleep(state.delay_s)
        elif state.mode == "hang":
            while state.mode == "hang":
                event = _changed()
                await event.wait()
        if state.mode == "error":
            state.stats["fault"] += 1
            return JSONResponse({"error": "simulated failure"}, status_code=state.error_status)
        try:
            body = await request.json()
            api_key = body["api_key"]
            if not isinstance(api_key, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "expected {\"api_key\": \"...\"}"}, status_code=400)
        record = state.keys.get(api_key)
        if record is None:
            state.stats["invalid"] += 1
            if state.invalid_status != 200:
                return JSONResponse({"error": "unknown key"}, status_code=state.invalid_status)
            return JSONResponse({"valid": False, "reason": "unknown or revoked key"})
        state.stats["valid"] += 1
        return JSONResponse({
            "valid": True, "user_id": record.user_id, "key_id": record.key_id or f"kid-{record.user_id}",
            "tier": record.tier, "age_verified": record.age_verified,
        })

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def stats(request: Request) -> JSONResponse:
        by_result = {k: state.stats[k] for k in ("valid", "invalid", "fault", "forbidden")}
        return JSONResponse({"validate_calls": state.stats["validate_calls"], "by_result": by_result,
                             "mode": state.mode, "keys": len(state.keys)})

    async def control(request: Request) -> JSONResponse:
        body = await request.json()
        mode = body.get("mode", state.mode)
        if mode not in MODES:
            return JSONResponse({"error": f"mode must be one of {', '.join(MODES)}"}, status_code=400)
        state.delay_s = float(body.get("delay_s", state.delay_s))
        state.error_status = int(body.get("error_status", state.error_status))
        state.invalid_status = int(body.get("invalid_status", state.invalid_status))
        if body.get("reset_stats"):
            state.stats.clear()
        state.mode = mode
        event, state.changed = state.changed, None
        if event is not None:
            event.set()  # wake requests held by "hang"
        return await stats(request)

    async def keys(request: Request) -> JSONResponse:
        body = await request.json()
        if request.method == "DELETE":
            removed = state.keys.pop(str(body.get("key")), None) is not None
            return JSONResponse({"removed": removed})
        try:
            record = KeyRecord.model_validate(body)
        except pydantic.ValidationError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        state.keys[record.key] = record
        return JSONResponse({"added": True})

    return Starlette(routes=[
        Route("/api/v1/keys/validate", validate, methods=["POST"]),
        Route("/health", health),
        Route("/sim/stats", stats),
        Route("/sim/control", control, methods=["POST"]),
        Route("/sim/keys", keys, methods=["POST", "DELETE"]),
    ])


def _server(config: BackendConfig) -> uvicorn.Server:
    uv = uvicorn.Config(build_app(config), host=config.host, port=config.port, log_level="warning",
                        access_log=False, lifespan="off")
    server = uvicorn.Server(uv)
    # The caller owns SIGINT/SIGTERM (run() below, or the dev command's loop): uvicorn must not take them.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    return server


async def serve(config: BackendConfig, *, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or forever)."""
    server = _server(config)
    task = asyncio.create_task(server.serve())
    if stop is None:
        await task
        return
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    waiter.cancel()
    await task


def run(config: BackendConfig, *, announce: Any = None) -> None:
    """Serve until SIGINT/SIGTERM; ``announce(line)`` is called once the port listens."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = _server(config)
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if task.done():
            await task
            raise OSError(f"development backend could not listen on {config.host}:{config.port}")
        if announce is not None:
            announce(f"backend ready: http://{config.host}:{_bound_port(server)}")
        await stop.wait()
        server.should_exit = True
        await task

    asyncio.run(main())


def _bound_port(server: uvicorn.Server) -> int:
    for s in server.servers:
        for sock in s.sockets:
            return int(sock.getsockname()[1])
    raise OSError("backend is not listening")


class BackendHandle:
    """A development backend running in a thread (tests and benchmarks)."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, host: str) -> None:
        self._server, self._thread, self._host = server, thread, host
        self.port = _bound_port(server)
        self.url = f"http://{host}:{self.port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(config: BackendConfig, timeout: float = 10.0) -> BackendHandle:
    """Start the backend in a daemon thread (``port=0``: any free port) and wait until it listens."""
    server = _server(config)
    thread = threading.Thread(target=server.run, name="dev-key-backend", daemon=True)
    thread.start()
    end = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > end:
            server.should_exit = True
            raise OSError(f"development backend did not start on {config.host}:{config.port}")
        time.sleep(0.01)
    return BackendHandle(server, thread, config.host)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m litellm_cloud.sim.backend", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--keys", type=Path, required=True, help="YAML list of key, user_id, tier, age_verified")
    p.add_argument("--token", default="", help="require this service token (Bearer); default: none")
    p.add_argument("--mode", choices=MODES, default="ok")
    p.add_argument("--delay-s", type=float, default=0.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = BackendConfig(keys_file=args.keys, host=args.host, port=args.port, token=args.token,
                           mode=args.mode, delay_s=args.delay_s)
    try:
        config.all_keys()  # fail on a bad file before listening
        run(config, announce=lambda line: print(line, flush=True))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
