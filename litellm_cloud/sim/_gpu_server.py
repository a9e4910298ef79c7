"""One simulated vLLM server at run time: its routes, timing, faults, statistics and listener.

Timing: token 0 leaves ``ttft_ms`` after the request, token i ``i / tokens_per_s`` after token 0 (the
batch's share when saturating, ``_batch``); a non-streaming answer leaves with the last token. Tokens due
together go out in one write (one SSE event each), so high speeds cost no extra wake-ups.

Faults are read at every step, so a mode change reaches requests already in flight: crash and down
reset their connections at the next token, hang holds them until the mode changes again.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import asdict
from typing import Any

from . import _gpu_openai as oa
from . import _gpu_validate as check
from . import _vllm_metrics
from ._batch import Batch, request_priority
from ._gpu_config import Faults, SimServer, parse_control
from ._gpu_http import Connection, Request

_ROUTES = {"/v1/chat/completions": ("chat", "POST"), "/v1/completions": ("completions", "POST"),
           "/v1/embeddings": ("embeddings", "POST"), "/v1/models": ("models", "GET"), "/health": ("health", "GET"),
           "/metrics": ("metrics", "GET")}
_GENERATE = ("chat", "completions")  # endpoints that generate tokens (and may stream)
_INFERENCE = (*_GENERATE, "embeddings")
_STOPPING = ("hang", "crash", "down")


class SimServerState:
    """The live state of one simulated server; ``handle`` is its HTTP handler."""

    def __init__(self, spec: SimServer, host: str, rng: random.Random, strict_model: bool) -> None:
        self.spec = spec
        self.host = host
        self.port = spec.port
        self.faults = Faults(**spec.fault_values())
        self.connections: set[Connection] = set()
        self.listener: asyncio.base_events.Server | None = None
        self.stats: dict[str, Counter[str]] = {}
        self.tokens = Counter[str]()
        self.batch = Batch(self.faults, spec.max_model_len)
        self._rng = rng
        self._strict = strict_model
        self._changed: asyncio.Future[None] | None = None
        self._seq = 0
        self._id_prefix = os.urandom(3).hex()
        self._headers = b"x-sim-server: %s\r\n" % spec.name.encode()
        self._models_body = oa.model_list(spec.model, spec.max_model_len)

    # -- lifecycle --------------------------------------------------------------------------------
    async def listen(self) -> None:
        """Accept connections on the server's port (the same port again after ``down``)."""
        if self.listener is not None:
            return
        loop = asyncio.get_running_loop()
        self.listener = await loop.create_server(
            lambda: Connection(self.handle, self._headers, self.connections),
            self.host, self.port, reuse_address=True, backlog=2048)
        self.port = self.listener.sockets[0].getsockname()[1]

    def unlisten(self) -> None:
        """Stop accepting: new connections are refused."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    def drop_connections(self, keep: Connection | None = None) -> None:
        """Reset every open connection but ``keep`` (a crashed process loses them all)."""
        for conn in list(self.connections):
            if conn is not keep:
                conn.abort()

    async def control(self, changes: dict[str, Any], via: Connection | None = None) -> dict[str, Any]:
        """Apply checked control ``changes``; returns the new state."""
        if changes.pop("reset_stats", False):
            self.stats.clear()
            self.tokens.clear()
            self.batch.reset()
        old = self.faults.mode
        for key, value in changes.items():
            setattr(self.faults, key, value)
        new = self.faults.mode
        if new != old:
            if self._changed is not None and not self._changed.done():
                self._changed.set_result(None)  # wake held (hang) requests
            self._changed = None
            if new in ("crash", "down"):
                self.drop_connections(keep=via)
            if new == "down":
                self.unlisten()
            elif old == "down":
                await self.listen()
        return self.state()

    def state(self) -> dict[str, Any]:
        """Name, address, model, current faults and request counts (the ``/sim/stats`` body)."""
        return {"server": self.spec.name, "host": self.host, "port": self.port, "model": self.spec.model,
                **asdict(self.faults), "listening": self.listener is not None,
                "connections": len(self.connections),
                "requests": {ep: dict(c) for ep, c in self.stats.items()}, "tokens": dict(self.tokens),
                **self.batch.state()}

    def _count(self, endpoint: str, outcome: str) -> None:
        self.stats.setdefault(endpoint, Counter())[outcome] += 1

    async def _mode_change(self) -> None:
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._changed)

    # -- routing ----------------------------------------------------------------------------------
    def handle(self, conn: Connection, req: Request) -> Coroutine[Any, Any, None] | None:
        """Answer ``req`` now, or return the coroutine that will."""
        if req.path.startswith("/sim/"):
            return self._control_route(conn, req)
        route = _ROUTES.get(req.path)
        if route is None:
            self._count("other", "not_found")
            conn.send(404, oa.error_body(404, f"no route {req.path}"))
            return None
        endpoint, method = route
        if req.method != method:
            self._count(endpoint, "bad_request")
            conn.send(405, oa.error_body(405, f"use {method} for {req.path}"))
            return None
        mode = self.faults.mode
        if mode != "ok":
            if mode in _STOPPING:
                # With fault_after_tokens a chat request starts normally and meets the fault mid-answer.
                if mode == "down" or endpoint not in _GENERATE or not self.faults.fault_after_tokens:
                    if mode == "hang":
                        self._count(endpoint, "hang")
                        return self._held(conn, req)
                    self._count(endpoint, "crash")
                    conn.abort()
                    return None
            elif endpoint in _INFERENCE or (endpoint == "health" and mode == "error"):
                self._refuse(conn, endpoint, mode)
                return None
        if endpoint in _GENERATE:
            return self._generate(conn, req, endpoint)
        if endpoint == "embeddings":
            return self._embeddings(conn, req)
        if endpoint == "metrics":
            self._count(endpoint, self.faults.metrics)
            return _vllm_metrics.serve(conn, self.faults.metrics, self.spec.name, self._metrics_body)
        self._count(endpoint, "ok")
        conn.send(200, *((self._models_body,) if endpoint == "models" else (b"", b"text/plain")))
        return None

    def _metrics_body(self) -> bytes:
        return _vllm_metrics.render(self.batch, self.spec.model, self.tokens["prompt"], self.tokens["completion"])

    def _refuse(self, conn: Connection, endpoint: str, mode: str) -> None:
        if mode == "busy":
            self._count(endpoint, "busy")
            retry = self.faults.retry_after_s
            headers = b"retry-after: %d\r\n" % max(1, round(retry)) if retry is not None else b""
            conn.send(429, oa.error_body(429, f"{self.spec.name} is overloaded (simulated busy)"), headers=headers)
        else:
            self._count(endpoint, "error")
            conn.send(500 if endpoint != "health" else 503,
                      oa.error_body(500, f"{self.spec.name}: simulated engine error"))

    async def _held(self, conn: Connection, req: Request) -> None:
        """A request in hang mode: no answer until the mode changes, then served under the new mode."""
        while self.faults.mode == "hang":
            await self._mode_change()
        follow = self.handle(conn, req)
        if follow is not None:
            await follow

    def _bad(self, conn: Connection, endpoint: str, exc: oa.BadRequest) -> None:
        self._count(endpoint, "bad_request")
        conn.send(exc.status, oa.error_body(exc.status, exc.message, exc.param))

    def _check_model(self, data: dict[str, Any]) -> None:
        model = data.get("model")
        if not isinstance(model, str) and model is not None:
            raise oa.BadRequest("'model' must be a string", param="model")
        if self._strict and model != self.spec.model:
            raise oa.BadRequest(f"The model `{model}` does not exist.", status=404, param="model")

    def _random_error(self, conn: Connection, endpoint: str) -> bool:
        if self.faults.error_rate and self._rng.random() < self.faults.error_rate:
            self._refuse(conn, endpoint, "error")
            return True
        return False

    def _next_id(self, kind: str) -> str:
        self._seq += 1
        return f"{kind}-{self.spec.name}-{self._id_prefix}{self._seq:x}"

    # -- chat and text completions ----------------------------------------------------------------
    def _generate(self, conn: Connection, req: Request, endpoint: str) -> Coroutine[Any, Any, None] | None:
        try:
            data = oa.parse_json(req.body)
            self._check_model(data)
            if endpoint == "chat":
                n_prompt, prompt = oa.prompt_tokens(data.get("messages"))
                check.check_roles(data["messages"])
            else:
                n_prompt, prompt = check.completion_prompt(data.get("prompt"))
            check.check_sampling(data)
            max_tokens = oa.positive_int(data, "max_completion_tokens", "max_tokens")
            stream = data.get("stream", False)
            options = data.get("stream_options") or {}
            if not isinstance(stream, bool) or not isinstance(options, dict):
                raise oa.BadRequest("'stream' must be a boolean and 'stream_options' an object")
            n = max_tokens or self.spec.default_max_tokens
            try:
                priority = request_priority(data, self.faults.scheduling_policy)
            except ValueError as exc:
                raise oa.BadRequest(str(exc), param="priority") from None
            check.check_context(n_prompt, n, self.spec.max_model_len)
        except oa.BadRequest as exc:
            self._bad(conn, endpoint, exc)
            return None
        if self._random_error(conn, endpoint):
            return None
        finish = "length" if max_tokens else "stop"
        tokens = oa.completion_tokens(self.spec.name, prompt, n)
        chat = endpoint == "chat"
        rid, created = self._next_id("chatcmpl" if chat else "cmpl"), int(time.time())
        if stream:
            writer = oa.ChunkWriter(rid, created, self.spec.model, text=not chat)
            work = self._stream(conn, endpoint, rid, writer, tokens, finish, n_prompt, bool(options.get("include_usage")))
            return self.batch.run(rid, n_prompt, priority, work)
        answer = oa.chat_completion if chat else oa.text_completion
        body = answer(rid, created, self.spec.model, oa.join_tokens(tokens), finish, n_prompt, n)
        delay = self._duration(n)
        if delay <= 0 and self.faults.mode == "ok" and not self.faults.max_num_seqs:
            self.batch.priorities[priority] += 1
            self._answered(endpoint, n_prompt, n)
            conn.send(200, body)
            return None
        return self.batch.run(rid, n_prompt, priority, self._generate_later(conn, endpoint, body, delay, n_prompt, n))

    def _duration(self, n: int) -> float:
        tps = self.faults.tokens_per_s
        return self.faults.ttft_ms / 1000 + ((n - 1) / tps if tps > 0 else 0.0)

    def _answered(self, endpoint: str, prompt: int, completion: int) -> None:
        self._count(endpoint, "ok")
        self.tokens["prompt"] += prompt
        self.tokens["completion"] += completion

    async def _generate_later(self, conn: Connection, endpoint: str, body: bytes, delay: float, n_prompt: int,
                              n: int) -> None:
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            while self.faults.mode in _STOPPING:
                if self.faults.mode == "hang":
                    self._count(endpoint, "hang")
                    await self._mode_change()
                    continue
                self._count(endpoint, "crash")
                if self.faults.mode == "crash" and self.faults.fault_after_tokens:
                    conn.send_partial(200, body, len(body) // 2)  # the client sees a cut-off body
                conn.abort()
                return
            self._answered(endpoint, n_prompt, n)
            conn.send(200, body)
        except asyncio.CancelledError:
            self._count(endpoint, "cancelled")
            raise

    async def _stream(self, conn: Connection, endpoint: str, rid: str, chunks: oa.ChunkWriter,
                      tokens: list[bytes], finish: str, n_prompt: int, include_usage: bool) -> None:
        loop = asyncio.get_running_loop()
        faults = self.faults
        n = len(tokens)
        sent = 0
        try:
            held = faults.hold_headers
            if not held:
                conn.start_stream()
            ttft = faults.ttft_ms / 1000
            t0 = loop.time() + ttft  # when token 0 is due
            if ttft > 0:
                await asyncio.sleep(ttft)
            if held:
                conn.start_stream()
            self.batch.first_token(rid)
            rate = self.batch.rate(faults.tokens_per_s)
            events = [chunks.role()]
            while sent < n:
                if faults.mode in _STOPPING and sent >= faults.fault_after_tokens:
                    if faults.mode != "hang":
                        self._count(endpoint, "crash")
                        conn.abort()
                        return
                    self._count(endpoint, "hang")
                    await self._mode_change()
                    tps = faults.tokens_per_s
                    t0 = loop.time() - (sent / tps if tps > 0 else 0.0)  # resume without a burst
                    continue
                tps = self.batch.rate(faults.tokens_per_s)
                if tps != rate:  # the batch changed size: go on at the new share from here
                    t0, rate = loop.time() - (sent / tps if tps > 0 else 0.0), tps
                due = n if tps <= 0 else min(n, int((loop.time() - t0) * tps) + 1)
                if faults.mode in _STOPPING:
                    due = min(due, faults.fault_after_tokens)
                events.extend(chunks.token(t) for t in tokens[sent:due])
                sent = max(sent, due)
                self.batch.grow(rid, n_prompt + sent)
                if sent < n:
                    if events:
                        conn.write_events(events)
                        events = []
                    await conn.drain()
                    wait = t0 + sent / tps - loop.time() if tps > 0 else 0.0
                    await asyncio.sleep(max(wait, 0.0))
            events.append(chunks.finish(finish))
            if include_usage:
                events.append(chunks.usage(n_prompt, n))
            events.append(oa.DONE)
            self._answered(endpoint, n_prompt, n)
            conn.write_events(events, end=True)
        except asyncio.CancelledError:
            self._count(endpoint, "cancelled")
            raise

    # -- embeddings -------------------------------------------------------------------------------
    def _embeddings(self, conn: Connection, req: Request) -> Coroutine[Any, Any, None] | None:
        dim = self.spec.embedding_dim
        try:
            data = oa.parse_json(req.body)
            self._check_model(data)
            items = oa.embedding_inputs(data)
            encoding = data.get("encoding_format") or "float"
            if encoding not in ("float", "base64"):
                raise oa.BadRequest("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
            if data.get("dimensions") not in (None, dim):
                raise oa.BadRequest(f"this model only returns {dim} dimensions", param="dimensions")
        except oa.BadRequest as exc:
            self._bad(conn, "embeddings", exc)
            return None
        if self._random_error(conn, "embeddings"):
            return None
        n_prompt = sum(oa.embedding_tokens(item) for item in items)
        vectors = [oa.embedding_vector(self.spec.model, item, dim) for item in items]
        body = oa.embeddings_body(self._next_id("embd"), int(time.time()), self.spec.model, vectors, encoding,
                                  n_prompt)
        delay = self.faults.ttft_ms / 1000
        if delay <= 0:
            self._answered("embeddings", n_prompt, 0)
            conn.send(200, body)
            return None
        return self._embeddings_later(conn, body, delay, n_prompt)

    async def _embeddings_later(self, conn: Connection, body: bytes, delay: float, n_prompt: int) -> None:
        try:
            await asyncio.sleep(delay)
            while self.faults.mode in _STOPPING:
                if self.faults.mode != "hang":
                    self._count("embeddings", "crash")
                    conn.abort()
                    return
                await self._mode_change()
            self._answered("embeddings", n_prompt, 0)
            conn.send(200, body)
        except asyncio.CancelledError:
            self._count("embeddings", "cancelled")
            raise

    # -- control ----------------------------------------------------------------------------------
    def _control_route(self, conn: Connection, req: Request) -> Coroutine[Any, Any, None] | None:
        if req.path == "/sim/stats" and req.method == "GET":
            conn.send(200, oa.dumps(self.state()))
            return None
        if req.path == "/sim/control" and req.method == "POST":
            return control_request(self, conn, req)
        conn.send(404, oa.error_body(404, "sim routes: GET /sim/stats, POST /sim/control"))
        return None


async def control_request(server: SimServerState, conn: Connection, req: Request) -> None:
    """Answer a control request for ``server`` arriving on ``conn`` (its own port or the admin port)."""
    try:
        changes = parse_control(oa.parse_json(req.body))
    except (ValueError, oa.BadRequest) as exc:
        conn.send(400, oa.error_body(400, getattr(exc, "message", str(exc))))
        return
    own_port = conn in server.connections
    if own_port and changes.get("mode") == "down":
        conn.keep_alive = False  # answer, then this port closes
    state = await server.control(changes, via=conn if own_port else None)
    conn.send(200, oa.dumps(state))
