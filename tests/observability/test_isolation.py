"""Langfuse never costs a request anything: off without keys, harmless when it hangs.

Two real proxies share one simulator and one key backend: ``quiet`` has no Langfuse keys but a
``LANGFUSE_HOST`` pointing at a recorder (which must see no connection at all); ``stuck`` has keys and a
Langfuse that accepts connections and never answers. Requests through ``stuck`` must be as fast as
through ``quiet``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.observability.harness import scrape, value
from tests.observability.recorder import Recorder
from tests.support import MASTER_KEY, SimFleet, chat, render_test_config, start_backend, start_proxy, wait_until

KEY = "hc-sk-obs-isolation-0123456789abcdef"
KEYS = [{"key": KEY, "user_id": "user-iso", "tier": "admin", "age_verified": True, "key_id": "k-iso"}]


@dataclass
class Pair:
    quiet: str
    stuck: str
    quiet_recorder: Recorder
    stuck_recorder: Recorder


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    logs: Path = tmp_path_factory.mktemp("observability-isolation")
    with Recorder() as quiet_rec, Recorder(hang=True) as stuck_rec:
        sim = SimFleet(logs).start()
        started = []
        try:
            backend, backend_url = start_backend(logs, KEYS)
            started.append(backend)
            config = render_test_config(logs / "config.yaml", sim.endpoints)
            base_env = {"HEARTCODE_BACKEND_URL": backend_url, "LANGFUSE_HOST": quiet_rec.url,
                        "LANGFUSE_PUBLIC_KEY": "", "LANGFUSE_SECRET_KEY": ""}  # fmt: skip
            stuck_env = {**base_env, "LANGFUSE_HOST": stuck_rec.url,
                         "LANGFUSE_PUBLIC_KEY": "pk-lf-x", "LANGFUSE_SECRET_KEY": "sk-lf-x"}  # fmt: skip
            with ThreadPoolExecutor(2) as pool:  # two proxies start in parallel: half the wait
                quiet_f = pool.submit(start_proxy, "proxy-quiet", config, logs, base_env)
                stuck_f = pool.submit(start_proxy, "proxy-stuck", config, logs, stuck_env)
            failures = [f.exception() for f in (quiet_f, stuck_f)]
            started += [f.result()[0] for f, exc in zip((quiet_f, stuck_f), failures, strict=True) if exc is None]
            for exc in failures:
                if exc is not None:
                    raise exc
            yield Pair(quiet_f.result()[1], stuck_f.result()[1], quiet_rec, stuck_rec)
        finally:
            for proc in reversed(started):
                proc.stop()
            sim.stop()


def _timed(base: str, body: dict[str, object]) -> float:
    start = time.perf_counter()
    r = httpx.post(f"{base}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}, timeout=30)
    assert r.status_code == 200, r.text
    return time.perf_counter() - start


def test_without_keys_nothing_is_exported_and_no_connection_is_made(pair: Pair) -> None:
    _timed(pair.quiet, chat("heartcode-default", "hello", max_tokens=3))
    _timed(pair.quiet, chat("heartcode-nsfw", "hello", max_tokens=3, stream=False))
    bad = httpx.post(f"{pair.quiet}/v1/chat/completions", json=chat("heartcode-default"),
                     headers={"authorization": "Bearer hc-sk-obs-unknown-0123456789abcdef"}, timeout=30)  # fmt: skip
    assert bad.status_code == 401
    samples = scrape(pair.quiet, MASTER_KEY)
    assert value(samples, "litellm_cloud_langfuse_enabled") == 0
    assert value(samples, "litellm_cloud_requests_total", code="ok") >= 2  # metrics still work
    time.sleep(1.5)  # longer than the span queue's flush interval (1 s): an exporter would have sent by now
    assert pair.quiet_recorder.connections == 0 and pair.quiet_recorder.requests == []


def test_hanging_langfuse_does_not_slow_requests(pair: Pair) -> None:
    body = chat("heartcode-default", "latency", max_tokens=3)
    for base in (pair.quiet, pair.stuck):  # warm both up (first-call imports, connection pools)
        _timed(base, body)
    wait_until(lambda: pair.stuck_recorder.connections >= 1, 10, "the exporter to reach the hanging Langfuse")
    quiet, stuck = [], []
    for _ in range(15):  # interleaved, so both see the same machine load
        quiet.append(_timed(pair.quiet, body))
        stuck.append(_timed(pair.stuck, body))
    assert pair.stuck_recorder.requests, "the exporter never posted: the test proves nothing"
    q50, s50 = statistics.median(quiet), statistics.median(stuck)
    print(f"p50 without Langfuse {q50 * 1000:.1f} ms, with a hanging Langfuse {s50 * 1000:.1f} ms")  # -s shows it
    # A request that waited for Langfuse would take the exporter's 10 s timeout; allow only machine noise.
    assert s50 <= q50 * 1.5 + 0.05, (quiet, stuck)
    assert max(stuck) < 2.0, stuck
    samples = scrape(pair.stuck, MASTER_KEY)
    assert value(samples, "litellm_cloud_langfuse_enabled") == 1
    assert value(samples, "litellm_cloud_requests_total", code="ok") >= 16
    # The hung batch times out after 10 s (retries included) and is counted as failed; requests never
    # waited for it.
    wait_until(
        lambda: value(scrape(pair.stuck, MASTER_KEY), "litellm_cloud_langfuse_events_total", result="failed") >= 1,
        25, "the hung batch to be given up",
    )  # fmt: skip
