"""The simulator saturating like vLLM: a bounded batch, a waiting queue by priority, vLLM's metric names.

One simulator process (the real CLI with a spec file) serves the module.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import PYTHON, ManagedProcess, free_ports, port_open

# vLLM's documented metric names this simulator must serve, as listed on
# https://docs.vllm.ai/en/stable/usage/metrics/ (v1 engine: running, waiting, kv_cache_usage_perc, the
# TTFT histogram) and https://docs.vllm.ai/en/v0.5.3/serving/metrics.html (gpu_cache_usage_perc, the name
# before v1), with their Prometheus types.
VLLM_DOCUMENTED = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:gpu_cache_usage_perc": "gauge",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:prompt_tokens_total": "counter",
    "vllm:generation_tokens_total": "counter",
}


class Sim:
    def __init__(self, ports: dict[str, int]) -> None:
        self.ports = ports

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def control(self, name: str, **changes: object) -> dict[str, object]:
        r = httpx.post(self.url(name) + "/sim/control", json=changes, timeout=5)
        assert r.status_code == 200, r.text
        return dict(r.json())


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        m = re.match(r'^([a-z_:]+)\{model_name="[^"]+"\} (\S+)$', line)
        if m:
            out[m[1]] = float(m[2])
    return out


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    tmp = tmp_path_factory.mktemp("sat")
    names = ("batch-1", "prio-1", "plain-1")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    spec = {"host": "127.0.0.1", "defaults": {"model": "m", "ttft_ms": 5, "tokens_per_s": 100},
            "servers": [{"name": "batch-1", "port": ports["batch-1"], "max_num_seqs": 2},
                        {"name": "prio-1", "port": ports["prio-1"], "max_num_seqs": 1,
                         "scheduling_policy": "priority"},
                        {"name": "plain-1", "port": ports["plain-1"]}]}  # fmt: skip
    path = Path(tmp) / "spec.json"
    path.write_text(json.dumps(spec))
    proc = ManagedProcess("sim", [PYTHON, "-m", "litellm_cloud.sim", "--spec", str(path)], log_dir=Path(tmp),
                          ready=lambda: all(port_open(p) for p in ports.values()))  # fmt: skip
    proc.start()
    try:
        yield Sim(ports)
    finally:
        proc.stop()


async def _stream(client: httpx.AsyncClient, url: str, tokens: int, **extra: object) -> tuple[float, float]:
    """(time to first content token, end) of one streamed completion, from now."""
    started = time.monotonic()
    first = None
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": tokens, "stream": True,
            **extra}
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if first is None and '"content"' in line:
                first = time.monotonic() - started
    assert first is not None
    return first, time.monotonic() - started


def test_metrics_carry_vllms_documented_names(sim: Sim) -> None:
    text = httpx.get(sim.url("plain-1") + "/metrics", timeout=5).text
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    for name, kind in VLLM_DOCUMENTED.items():
        assert types.get(name) == kind, (name, types)
    assert 'vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"}' in text


def test_a_full_batch_queues_and_the_gauges_say_so(sim: Sim) -> None:
    async def run() -> tuple[list[tuple[float, float]], dict[str, float]]:
        async with httpx.AsyncClient(timeout=30) as client:
            tasks = [asyncio.create_task(_stream(client, sim.url("batch-1"), 30)) for _ in range(4)]
            await asyncio.sleep(0.12)
            seen = _samples((await client.get(sim.url("batch-1") + "/metrics")).text)
            return list(await asyncio.gather(*tasks)), seen

    results, seen = asyncio.run(run())
    assert seen["vllm:num_requests_running"] == 2
    assert seen["vllm:num_requests_waiting"] == 2
    assert 0 < seen["vllm:kv_cache_usage_perc"] <= 1
    firsts = sorted(f for f, _ in results)
    # Two start at once; two wait for a whole 30-token generation (~0.3 s at 100 tokens/s).
    assert firsts[1] < 0.2 and firsts[2] > 0.25, firsts
    after = _samples(httpx.get(sim.url("batch-1") + "/metrics", timeout=5).text)
    assert after["vllm:num_requests_running"] == after["vllm:num_requests_waiting"] == 0
    assert after["vllm:time_to_first_token_seconds_count"] >= 4


def test_the_batch_shares_its_token_rate(sim: Sim) -> None:
    sim.control("batch-1", batch_tokens_per_s=100, tokens_per_s=1000)
    try:
        async def run() -> list[tuple[float, float]]:
            async with httpx.AsyncClient(timeout=30) as client:
                return list(await asyncio.gather(*(_stream(client, sim.url("batch-1"), 20) for _ in range(2))))

        ends = [end for _, end in asyncio.run(run())]
        assert min(ends) > 0.3, ends  # 40 tokens at 100 tokens/s for the batch, not 20 at 1000 each
    finally:
        sim.control("batch-1", batch_tokens_per_s=0, tokens_per_s=100)


def test_priority_scheduling_serves_lower_values_first(sim: Sim) -> None:
    async def run() -> dict[int, float]:
        async with httpx.AsyncClient(timeout=30) as client:
            blocker = asyncio.create_task(_stream(client, sim.url("prio-1"), 20))
            await asyncio.sleep(0.05)
            low = asyncio.create_task(_stream(client, sim.url("prio-1"), 5, priority=10))
            await asyncio.sleep(0.02)
            high = asyncio.create_task(_stream(client, sim.url("prio-1"), 5, priority=0))
            await blocker
            return {10: (await low)[0], 0: (await high)[0]}

    firsts = asyncio.run(run())
    assert firsts[0] < firsts[10], firsts  # arrived later, served first
    state = httpx.get(sim.url("prio-1") + "/sim/stats", timeout=5).json()
    assert state["priorities"]["10"] >= 1


def test_priority_without_priority_scheduling_is_a_400_as_in_vllm(sim: Sim) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "priority": 5}
    r = httpx.post(sim.url("plain-1") + "/v1/chat/completions", json=body, timeout=5)
    assert r.status_code == 400
    assert "Priority scheduling is not enabled" in r.json()["error"]["message"]


@pytest.mark.parametrize(("mode", "status"), [("error", 500), ("hang", None)])
def test_metrics_can_fail_alone(sim: Sim, mode: str, status: int | None) -> None:
    sim.control("plain-1", metrics=mode)
    try:
        if status is None:
            with pytest.raises(httpx.ReadTimeout):
                httpx.get(sim.url("plain-1") + "/metrics", timeout=0.3)
        else:
            assert httpx.get(sim.url("plain-1") + "/metrics", timeout=5).status_code == status
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert httpx.post(sim.url("plain-1") + "/v1/chat/completions", json=body, timeout=5).status_code == 200
    finally:
        sim.control("plain-1", metrics="ok")
