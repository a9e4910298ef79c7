"""Background health checks (the committed configs' setting): ``/health`` answers from their results
instead of sending a completion to every GPU per call, and a dead server is taken out of routing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.support import MASTER_KEY, ManagedProcess, SimFleet, chat, simulated_gateway, wait_until

KEY = "hc-sk-healthtest000000000000000verified"
INTERVAL = 2  # seconds between background checks in this module's config


@dataclass
class Stack:
    sim: SimFleet
    base: str
    proxy: ManagedProcess  # its log explains a failure


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    keys = [{"key": KEY, "user_id": "u-health", "tier": "admin", "age_verified": True}]
    logs = tmp_path_factory.mktemp("health")
    with simulated_gateway(logs, keys, health_check_interval=INTERVAL) as (sim, base, proxy):
        yield Stack(sim, base, proxy)



def _health(base: str) -> dict[str, object]:
    r = httpx.get(f"{base}/health", headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30)
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def _unhealthy_ids(report: dict[str, object]) -> set[str]:
    entries = report.get("unhealthy_endpoints") or []
    assert isinstance(entries, list)
    return {str((e.get("model_info") or {}).get("id", e.get("model_id", ""))) for e in entries} - {""}


def test_health_answers_from_the_background_results(stack: Stack) -> None:
    sim, base = stack.sim, stack.base
    chat_servers = [name for name in sim.servers if sim.servers[name][0] != "heartcode-embed"]
    # The first background round has reached every chat server.
    wait_until(lambda: all(sim.chat_requests()[n] >= 1 for n in chat_servers), 30, "a background health round")
    report = _health(base)
    assert report["healthy_count"] == len(sim.servers) and report["unhealthy_count"] == 0, report
    before = sum(sim.chat_requests().values())
    started = time.monotonic()
    for _ in range(5):
        _health(base)
    took = time.monotonic() - started
    sent = sum(sim.chat_requests().values()) - before
    # Answering /health itself sends nothing; at most the background rounds that fell into the window did
    # (one request per chat server each). Per-call checks would have sent 5 x 12.
    rounds = 1 + int(took // INTERVAL)
    assert sent <= rounds * len(chat_servers), (sent, took)


def test_a_dead_server_is_noticed_by_the_background_checks_and_skipped(stack: Stack) -> None:
    sim, base = stack.sim, stack.base
    sim.control("gpu-1", mode="down")
    try:
        wait_until(lambda: "gpu-1" in _unhealthy_ids(_health(base)), 4 * INTERVAL + 5, "gpu-1 reported unhealthy")
        headers = {"Authorization": f"Bearer {KEY}"}
        for _ in range(12):
            r = httpx.post(f"{base}/v1/chat/completions", json=chat("heartcode-default", max_tokens=2),
                           headers=headers, timeout=30)  # fmt: skip
            assert r.status_code == 200, (r.text, stack.proxy.log_tail(80))
            assert r.headers["x-litellm-model-id"] in {"gpu-2", "gpu-3", "gpu-4"}
    finally:
        sim.reset()
    wait_until(lambda: "gpu-1" not in _unhealthy_ids(_health(base)), 4 * INTERVAL + 5, "gpu-1 healthy again")
