"""Several proxy workers behind one port: limits stay exact and ``/metrics`` sums the process group.

One proxy with ``--workers 2`` on a real redis-server, the simulator and the development key backend,
started once for the module. Every request goes over a new connection, so the kernel spreads them
over both workers (the auth cache counts one backend miss per worker that served the key, which is how
the test sends until both did); the event-loop lag histogram counts both workers' samples. ``memory://`` limits with several workers are refused before anything starts.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support import MASTER_KEY, REPO, SimFleet, render_test_config, start_backend, start_proxy, wait_until

from .conftest import RedisServer

GROUPS = ["heartcode-chat-sfw", "heartcode-chat-nsfw", "heartcode-embed"]
KEY = "hc-sk-workers-rpm-000000000001"
RPM = 10
REQUESTS = 30


@dataclass
class Proxy:
    base: str
    pid: int  # the supervisor (``litellm_cloud._serve``); the workers are its children

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    def scrape(self) -> str:
        with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            r = client.get(self.base + "/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"})
        assert r.status_code == 200, r.text
        return r.text


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    log_dir = tmp_path_factory.mktemp("workers")
    tiers = log_dir / "tiers.yaml"
    tiers.write_text(yaml.safe_dump({"tiers": {"rpm10": {
        "rpm": RPM, "tpm": 1_000_000, "daily_tokens": 10_000_000, "max_parallel": 100, "model_groups": GROUPS}}}))  # fmt: skip
    redis = RedisServer(log_dir).start()
    procs: list[object] = [redis]
    try:
        sim = SimFleet(log_dir).start()
        procs.append(sim)
        backend, backend_url = start_backend(log_dir, [{"key": KEY, "user_id": "u-w", "key_id": "w1", "tier": "rpm10"}])
        procs.append(backend)
        config = render_test_config(log_dir / "config.yaml", sim.endpoints)
        env = {"HEARTCODE_BACKEND_URL": backend_url, "HEARTCODE_TIERS_FILE": str(tiers),
               "HEARTCODE_LIMITS_STORAGE": redis.url, "HEARTCODE_REDIS_URL": redis.url}  # fmt: skip
        # Two workers import LiteLLM at once: on a loaded 2-core machine that takes a while.
        proc, base = start_proxy("proxy", config, log_dir, env, workers=2, ready_timeout=240)
        procs.append(proc)
        assert proc.pid is not None
        yield Proxy(base, proc.pid)
    finally:
        for p in reversed(procs):
            p.stop()  # type: ignore[attr-defined]


def _sample(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total += float(m.group(2))
    return total


def _requests(base: str, n: int, wave: int = 3) -> list[int]:
    """``n`` chat completions in waves of ``wave`` at once, each on a connection of its own.

    Waves, not one burst: a worker woken by a burst accepts every pending connection itself.
    """

    async def run() -> list[int]:
        statuses: list[int] = []
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            body = {"model": "heartcode-chat-sfw", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
            headers = {"Authorization": f"Bearer {KEY}"}
            for start in range(0, n, wave):
                replies = await asyncio.gather(*(
                    client.post(base + "/v1/chat/completions", json=body, headers=headers)
                    for _ in range(min(wave, n - start))))  # fmt: skip
                statuses += [r.status_code for r in replies]
        return statuses

    return asyncio.run(run())


def test_limits_are_exact_across_workers_and_metrics_sum_them(proxy: Proxy) -> None:
    # Waves until both workers have served the key (one backend miss per worker; a loaded worker can
    # accept every connection of a wave itself), and at least REQUESTS requests.
    statuses: list[int] = []
    while len(statuses) < REQUESTS or _sample(proxy.scrape(), "litellm_cloud_auth_cache_total", result="miss") < 2:
        assert len(statuses) < 20 * REQUESTS, "one worker served every request"
        statuses += _requests(proxy.base, 3)
    sent = len(statuses)
    assert statuses.count(200) == RPM and statuses.count(429) == sent - RPM, statuses

    def finished() -> float:
        return _sample(proxy.scrape(), "litellm_cloud_requests_total", tier="rpm10")

    wait_until(lambda: finished() == sent, 15, f"/metrics to count {sent} finished requests")
    scrapes = [proxy.scrape() for _ in range(6)]
    for text in scrapes:
        assert _sample(text, "litellm_cloud_requests_total", tier="rpm10", code="ok") == RPM
        assert _sample(text, "litellm_cloud_requests_total", tier="rpm10", code="rate_limited") == sent - RPM
        assert _sample(text, "litellm_cloud_limiter_refusals_total", kind="rate_limited") == sent - RPM
        assert _sample(text, "litellm_cloud_auth_cache_total", result="miss") == 2  # both workers, summed


def test_event_loop_lag_sums_both_workers_samples_and_keeps_one_max_gauge(proxy: Proxy) -> None:
    def count() -> float:
        return _plain(proxy.scrape(), "litellm_cloud_event_loop_lag_seconds_count")

    first = count()
    time.sleep(2)
    # Each worker samples four times a second: two workers for 2 s give ~16, one alone at most ~8.
    assert count() - first >= 11
    gauges = [
        line for line in proxy.scrape().splitlines() if line.startswith("litellm_cloud_event_loop_lag_max_seconds")
    ]
    assert len(gauges) == 1 and "pid=" not in gauges[0], gauges  # livemax: one series, the worst worker


def _plain(text: str, name: str) -> float:
    """The value of the unlabelled sample ``name``."""
    [value] = [float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " ")]
    return value


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _tcp_inodes(port: int, state: str) -> set[int]:
    """Inodes of TCP sockets whose local port is ``port``, in ``state`` (/proc/net/tcp: 0A listen, 01
    established)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                inodes.add(int(fields[9]))
    return inodes


def test_each_worker_listens_on_a_socket_of_its_own_and_connections_spread(proxy: Proxy) -> None:
    # One shared socket let the worker that woke first take every waiting connection (the other idled
    # under long streams): each worker has its own SO_REUSEPORT listener, and the supervisor listens on none.
    listening = _tcp_inodes(proxy.port, "0A")
    workers = {pid: _socket_inodes(pid) for pid in _descendants(proxy.pid)}
    serving = {pid: inodes & listening for pid, inodes in workers.items() if inodes & listening}
    assert len(serving) == 2 and len(listening) == 2, (serving, listening)
    assert not _socket_inodes(proxy.pid) & listening
    held = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(32)]  # one burst, held open
    try:
        def per_worker() -> list[int]:
            established = _tcp_inodes(proxy.port, "01")
            return [len(_socket_inodes(pid) & established) for pid in serving]

        wait_until(lambda: sum(per_worker()) == 32, 10, "both workers to accept the 32 connections")
        # The kernel spreads by address hash: a worker with under 4 of 32 has odds of about 1 in 10^5.
        assert min(per_worker()) >= 4, per_worker()
    finally:
        for sock in held:
            sock.close()


def test_memory_limits_with_several_workers_are_refused_at_start(tmp_path: object) -> None:
    env = {"PATH": "/usr/bin:/bin", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HEARTCODE_LIMITS_STORAGE": "memory://",
           "HEARTCODE_REDIS_URL": "redis://127.0.0.1:1/0"}  # fmt: skip
    argv = [sys.executable, "-m", "litellm_cloud", "proxy", "--config", str(REPO / "config-local.yaml"),
            "--home", str(REPO), "--port", "1", "--workers", "2"]  # fmt: skip
    done = subprocess.run(argv, check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "HEARTCODE_WORKERS=2 with HEARTCODE_LIMITS_STORAGE='memory://'" in done.stderr
    assert "multiplying every tier limit by 2" in done.stderr and "redis://" in done.stderr
