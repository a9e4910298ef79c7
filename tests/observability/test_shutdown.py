"""A SIGTERM of the proxy loses no queued span: they reach Langfuse before the process exits.

One real proxy whose Langfuse answers every export only after a second, so that when the proxy gets
SIGTERM a batch is in flight and later spans wait in the queue behind it. uvicorn's graceful shutdown
runs, then LiteLLM's app shutdown runs the gateway's (``Gateway.stop``), which sends the rest (bounded at
5 s per target), before uvicorn re-raises SIGTERM and the process dies of it.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from litellm_cloud.identity import key_hash
from tests.observability.recorder import Recorder
from tests.support import SimFleet, chat, render_test_config, start_backend, start_proxy, wait_until

KEY = "hc-sk-obs-shutdown-0123456789abcdef"
KEYS = [{"key": KEY, "user_id": "user-term", "tier": "admin", "age_verified": True, "key_id": "k-term"}]


def test_sigterm_flushes_queued_spans_before_exit(tmp_path_factory: pytest.TempPathFactory) -> None:
    logs: Path = tmp_path_factory.mktemp("observability-shutdown")
    with Recorder(delay=1.0) as recorder:
        sim = SimFleet(logs).start()
        try:
            backend, backend_url = start_backend(logs, KEYS)
            try:
                config = render_test_config(logs / "config.yaml", sim.endpoints)
                env = {"HEARTCODE_BACKEND_URL": backend_url, "LANGFUSE_HOST": recorder.url,
                       "LANGFUSE_PUBLIC_KEY": "pk-lf-term", "LANGFUSE_SECRET_KEY": "sk-lf-term"}  # fmt: skip
                proxy, base = start_proxy("proxy-shutdown", config, logs, env)
                try:
                    body = chat("heartcode-default", "before the end", max_tokens=2)
                    headers = {"authorization": f"Bearer {KEY}"}
                    assert httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=30).is_success
                    wait_until(lambda: len(recorder.requests) >= 1, 10, "the first export to be in flight")
                    for _ in range(4):  # queued behind the slow export
                        r = httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=30)
                        assert r.status_code == 200, r.text
                    accepted_before = len(recorder.spans())
                    started = time.monotonic()
                    code = proxy.stop(timeout=30)  # SIGTERM, and wait for the exit
                    took = time.monotonic() - started
                finally:
                    proxy.stop()
            finally:
                backend.stop()
        finally:
            sim.stop()
        spans = recorder.spans()  # read after the exit, without waiting: they arrived before it
    roots = [s for s in spans if not s.parent_span_id and s.metadata.get("key_hash") == key_hash(KEY)]
    assert accepted_before < 10, "everything was sent before SIGTERM: the test proves nothing"
    assert len(roots) == 5 and len(spans) == 10, (len(roots), len(spans))
    assert len({s.span_id for s in spans}) == 10
    assert code == -15, code  # the graceful shutdown ran to its end, where uvicorn re-raises SIGTERM
    assert took < 20, took
    print(f"SIGTERM to exit: {took:.1f} s, {10 - accepted_before} spans sent during shutdown")
