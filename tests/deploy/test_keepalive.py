"""SSE keepalives through the real nginx while a stream waits for its first token.

One stack for the module: the simulator, the development key backend, the proxy on a config rendered
with ``keepalive_seconds: 1`` (production renders fleet.yaml's 15 s), and nginx with a 2 s read
timeout (production: 600 s; cloud load balancers often 60 s). The chat servers hold their first token
for 3.5 s: past nginx's timeout, so without keepalives nginx cuts the stream with a 504.

Two kinds of server: one sends its response headers at once and only then waits (vLLM; LiteLLM's
stream loop writes the pings), one withholds them until its first token (``hold_headers``; LiteLLM
opens the response early and pings before the upstream has answered, ``limits/_keepalive.py`` keeps our
headers there). Either way the client gets ``: ping`` comments, then every token, ``[DONE]``, and the
``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.deploy._certs import make_cert
from tests.deploy._services import KEY, start_backend
from tests.deploy.test_nginx import Front, start_front
from tests.support import ManagedProcess, SimFleet, render_test_config, start_proxy

CHAT_SERVERS = ("gpu-1", "gpu-2", "gpu-3", "gpu-4")
HOLD_MS = 3500.0
READ_TIMEOUT_S = 2


@dataclass
class Stack:
    sim: SimFleet
    front: Front


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("keepalive")
    certs = logs / "certs"
    certs.mkdir()
    make_cert(certs)
    sim = SimFleet(logs).start()
    started: list[ManagedProcess] = [sim.process]
    try:
        backend, backend_url = start_backend(logs)
        started.append(backend)
        config = render_test_config(logs / "config.yaml", sim.endpoints, keepalive_seconds=1.0, stream_timeout=10.0)
        proxy, proxy_url = start_proxy("proxy", config, logs, {"HEARTCODE_BACKEND_URL": backend_url})
        started.append(proxy)
        front = start_front(logs / "nginx", certs, proxy_url.removeprefix("http://"), "nginx",
                            NGINX_READ_TIMEOUT=f"{READ_TIMEOUT_S}s")  # fmt: skip
        started.append(front.process)
        yield Stack(sim, front)
    finally:
        for proc in reversed(started):
            proc.stop()


def _stream(stack: Stack, *, hold_headers: bool) -> tuple[httpx.Response, list[tuple[float, str]]]:
    for name in CHAT_SERVERS:
        stack.sim.control(name, ttft_ms=HOLD_MS, tokens_per_s=0.0, hold_headers=hold_headers)
    body: dict[str, Any] = {"model": "heartcode-sfw", "messages": [{"role": "user", "content": "Hi"}],
                            "max_tokens": 5, "stream": True}  # fmt: skip
    lines: list[tuple[float, str]] = []
    try:
        start = time.monotonic()
        with stack.front.client(timeout=30) as client, client.stream(
            "POST", f"{stack.front.https}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, json=body
        ) as r:
            lines = [(time.monotonic() - start, line) for line in r.iter_lines() if line]
    finally:
        stack.sim.reset()
    return r, lines


@pytest.mark.parametrize("hold_headers", [False, True], ids=["headers-at-once", "headers-with-first-token"])
def test_pings_keep_a_stream_alive_past_nginx_read_timeout(stack: Stack, hold_headers: bool) -> None:
    r, lines = _stream(stack, hold_headers=hold_headers)
    assert r.status_code == 200, lines
    pings = [t for t, line in lines if line.startswith(":")]
    data = [(t, line[6:]) for t, line in lines if line.startswith("data: ")]
    assert len(pings) >= 2, lines  # one a second while the first token is held
    assert data, lines
    first_data = data[0][0]
    assert first_data >= HOLD_MS / 1000 > READ_TIMEOUT_S, lines  # nginx would have cut a silent stream
    assert all(t < first_data for t in pings[:2])
    assert data[-1][1] == "[DONE]"
    tokens = [json.loads(d) for _, d in data[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in tokens if c.get("choices"))
    assert text, tokens
    assert not [c for c in tokens if "error" in c], tokens
    # Our headers survive the keepalive path (the admin tier's limits, counted in the shared minute).
    assert r.headers["x-ratelimit-limit-requests"] == "1000"
    assert int(r.headers["x-ratelimit-remaining-requests"]) < 1000
    assert "x-ratelimit-reset-tokens-day" in r.headers


def test_a_failure_after_the_first_ping_is_an_error_frame_with_our_code(stack: Stack) -> None:
    # Once a ping went out, every chat server starts resetting connections: the held stream dies when
    # its first token is due and the retries find no server. The status is already 200 by then (see
    # limits/_keepalive.py); the error frame still carries our stable code.
    def crash_all() -> None:
        for name in CHAT_SERVERS:
            stack.sim.control(name, mode="crash", fault_after_tokens=0)

    timer = threading.Timer(1.5, crash_all)
    timer.start()
    try:
        r, lines = _stream(stack, hold_headers=True)
    finally:
        timer.cancel()
        stack.sim.reset()
    assert r.status_code == 200, lines
    assert any(line.startswith(":") for _, line in lines), lines
    errors = [json.loads(line[6:])["error"] for _, line in lines if line.startswith("data: {")]
    assert len(errors) == 1, lines
    assert errors[0]["code"] == "model_unavailable", errors
    assert KEY not in json.dumps(errors)
    assert "x-ratelimit-limit-requests" in r.headers


def test_the_adaptation_installs_on_this_litellm() -> None:
    from litellm_cloud.limits import _keepalive

    assert _keepalive.install() and _keepalive.install()  # idempotent; False: LiteLLM's early-SSE path changed


def test_every_chat_server_renders_the_fleet_keepalive() -> None:
    from litellm_cloud.fleet import load_manifest, render_config
    from tests.support import FLEET_FILE

    manifest = load_manifest(FLEET_FILE)
    entries = render_config(manifest, "cloud")["model_list"]
    for entry in entries:
        group = manifest.groups[entry["model_name"]]
        assert entry["litellm_params"].get("keepalive_seconds") == (15 if group.mode == "chat" else None)
