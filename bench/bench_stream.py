"""Streaming capacity: SSE chunks relayed per core, ours (every hook) against stock LiteLLM.

    .venv/bin/python bench/bench_stream.py [--seconds 5] [--skip-workers] [--skip-itl]

Starts the GPU simulator (400-token streams, instant unless said otherwise), the development key
backend, a redis-server and three proxies from one rendered config:

- ``ours``: ``litellm-cloud proxy`` with every hook (auth, fleet, limits on ``memory://``, observability);
- ``stock``: LiteLLM's own proxy, same model list and router settings, master key, no callbacks, no
  custom auth;
- ``ours2``: ours with 2 workers on Redis (limits and revocation shared), for the workers case.

Cases, each printed as a table with ratios:

1. chunks/s per core: ``ours`` and ``stock`` both pinned to CPU 0 and loaded at once (load generator,
   simulator and backend on CPU 1), concurrency 1, 8, 32; target ours/stock >= 2.0;
2. non-streaming requests/s, the same two at once; target >= 1.0;
3. added inter-token latency: a simulator producing 50 tokens/s per stream, ``ours`` loaded at half of
   its measured capacity; the gap between chunks at the client minus the same through no gateway;
4. 1 vs 2 workers on both cores (loaded one after the other; the load generator shares the cores):
   target >= 1.7x.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._harness import UNLIMITED_TIERS, cpu_family, machine, tree_cpu, unpin_all
from bench._load import END, stream_blast
from tests.support import (
    MASTER_KEY,
    PYTHON,
    ManagedProcess,
    SimFleet,
    free_port,
    http_ok,
    port_open,
    render_test_config,
    start_proxy,
)  # fmt: skip

KEY = "hc-sk-bench-stream-key-00000001"
TOKENS = 400
CHAT_SERVERS = ("gpu-1", "gpu-2", "gpu-3", "gpu-4")


def body(stream: bool, tokens: int = TOKENS) -> bytes:
    return json.dumps({"model": "heartcode-chat-sfw", "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": tokens, "stream": stream}).encode()  # fmt: skip


def request(port: int, key: str, payload: bytes) -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
            b"authorization: Bearer %s\r\ncontent-length: %d\r\n\r\n%s" % (port, key.encode(), len(payload), payload))  # fmt: skip


async def _plain_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    """The body of an answer whose (lower-cased) ``head`` gives its content-length."""
    start = head.index(b"content-length:") + len(b"content-length:")
    return await reader.readexactly(int(head[start : head.index(b"\r\n", start)]))


async def read_stream(reader: asyncio.StreamReader, arrivals: list[float] | None, deadline: float = float("inf")) -> int:
    """One chunked SSE response; returns its ``data:`` events that arrived before ``deadline``."""
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))
    lower = head.lower()
    if b"transfer-encoding: chunked" not in lower:
        return (await _plain_body(reader, lower)).count(b"data: ")
    events = 0
    while True:
        size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return events
        n = chunk.count(b"data: ")
        now = time.perf_counter()
        if now < deadline:
            events += n
        if arrivals is not None and n:
            arrivals.append(now)


async def count_stream(reader: asyncio.StreamReader, deadline: float) -> int:
    """One chunked SSE response read in bulk (cheap for the load generator): ``data:`` events before ``deadline``.

    The answer ends with the zero-size chunk; JSON escapes line breaks, so the end marker cannot appear
    inside an event.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))
    lower = head.lower()
    if b"transfer-encoding: chunked" not in lower:  # a plain answer
        return (await _plain_body(reader, lower)).count(b"data: ")
    events, tail = 0, b""
    while True:
        block = await reader.read(1 << 16)
        if not block:
            raise RuntimeError("connection closed mid-stream")
        data = tail + block
        n = data.count(b"data: ") - tail.count(b"data: ")
        if time.perf_counter() < deadline:
            events += n
        if data.endswith(END):
            return events
        tail = data[-8:]


async def drive(port: int, key: str, payload: bytes, concurrency: int, seconds: float,
                gaps: list[float] | None = None) -> tuple[int, int]:
    """(responses, data events) completed within ``seconds`` by ``concurrency`` keep-alive connections."""
    deadline = time.perf_counter() + seconds
    done = events = 0

    async def worker() -> None:
        nonlocal done, events
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                writer.write(request(port, key, payload))
                arrivals: list[float] | None = [] if gaps is not None else None
                if arrivals is None:
                    n = await count_stream(reader, deadline)  # not `events += await ...`: loses updates
                else:
                    n = await read_stream(reader, arrivals, deadline)
                events += n
                done += time.perf_counter() < deadline
                if gaps is not None and arrivals:
                    gaps.extend(b - a for a, b in itertools.pairwise(arrivals[1:-1]))  # tokens only
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, events


def pin(cpus: set[int]) -> None:
    if (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000 if ordered else float("nan")


def sim_speed(sim: SimFleet, tokens_per_s: float) -> None:
    for name in CHAT_SERVERS:
        sim.control(name, ttft_ms=0.0, tokens_per_s=tokens_per_s)


@dataclass
class Bench:
    """What the cases share: the options, the helpers' processes, the rendered config, the results."""

    args: argparse.Namespace
    work: Path
    sim: SimFleet
    backend: ManagedProcess
    redis: ManagedProcess
    redis_url: str
    ours_cfg: Path
    env: dict[str, str]
    started: list[ManagedProcess]
    results: list[str] = field(default_factory=list)

    def report(self, *lines: str) -> None:
        self.results.append("\n".join(lines))
        print(self.results[-1], flush=True)


def compared(b: Bench) -> dict[str, tuple[int, str]]:
    """Start ``ours`` and ``stock`` pinned to CPU 0; {name: (port, key)}."""
    stock = yaml.safe_load(b.ours_cfg.read_text())
    stock["litellm_settings"].pop("callbacks")
    stock["general_settings"].pop("custom_auth")
    stock_cfg = b.work / "config-stock.yaml"
    stock_cfg.write_text(yaml.safe_dump(stock, sort_keys=False))
    pin({0})  # the two compared proxies inherit CPU 0
    ours_proc, ours = start_proxy("proxy-ours", b.ours_cfg, b.work / "logs", b.env)
    b.started.append(ours_proc)
    sport = free_port()
    stock_proc = ManagedProcess(
        "proxy-stock", [PYTHON, "-m", "litellm.proxy.proxy_cli", "--config", str(stock_cfg), "--host", "127.0.0.1",
                        "--port", str(sport)], log_dir=b.work / "logs", cwd=b.work,
        env={**os.environ, "LITELLM_MASTER_KEY": MASTER_KEY, "LITELLM_LOG": "WARNING", "LITELLM_TELEMETRY": "False"},
        ready=http_ok(f"http://127.0.0.1:{sport}/health/liveliness"), ready_timeout=120,
    ).start()  # fmt: skip
    b.started.append(stock_proc)
    pin({1})
    targets = {"ours": (int(ours.rsplit(":", 1)[1]), KEY), "stock": (sport, MASTER_KEY)}
    for port, key in targets.values():
        asyncio.run(drive(port, key, body(True), 2, 1.0))  # warm up (the key is validated once)
    return targets


def case_streams(b: Bench, targets: dict[str, tuple[int, str]]) -> float:
    """1. chunks/s per core, both loaded at once on CPU 0; returns ours' best rate."""
    stream = body(True)
    lines = ["## Streams: chunks/s per core, ours and stock loaded at once on one pinned CPU",
             f"{TOKENS}-token streams, instant simulator, {b.args.seconds:g} s per case", "",
             "| conc | ours chunks/s | stock chunks/s | ours streams/s | stock streams/s | ours/stock |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    capacity = 0.0
    for conc in (1, 8, 32):

        async def both(c: int = conc) -> list[tuple[int, int]]:
            return list(await asyncio.gather(*(drive(port, key, stream, c, b.args.seconds)
                                               for port, key in targets.values())))  # fmt: skip

        (od, oe), (sd, se) = asyncio.run(both())
        ours_cps, stock_cps = oe / b.args.seconds, se / b.args.seconds
        capacity = max(capacity, ours_cps)
        lines.append(f"| {conc} | {ours_cps:,.0f} | {stock_cps:,.0f} | {od / b.args.seconds:.1f} | "
                     f"{sd / b.args.seconds:.1f} | **{ours_cps / stock_cps:.2f}** |")  # fmt: skip
        print(lines[-1], flush=True)
    b.report(*lines)
    return capacity


def case_plain(b: Bench, targets: dict[str, tuple[int, str]]) -> None:
    """2. non-streaming requests/s, the same two at once."""

    async def plain_both() -> list[int]:
        async def one(port: int, key: str) -> int:
            return (await drive(port, key, body(False, 8), 8, b.args.seconds))[0]

        return list(await asyncio.gather(*(one(port, key) for port, key in targets.values())))

    o, s = asyncio.run(plain_both())
    b.report("## Non-streaming (8-token answers), loaded at once on one pinned CPU, concurrency 8 each", "",
             f"ours {o / b.args.seconds:.1f} req/s, stock {s / b.args.seconds:.1f} req/s: **ratio {o / s:.2f}** (target >= 1.0)")  # fmt: skip


def case_itl(b: Bench, ours_port: int, capacity: float) -> None:
    """3. added inter-token latency at half capacity, 50 tokens/s per stream."""
    sim_speed(b.sim, 50.0)
    conc = max(1, int(capacity / 2 / 50))
    short = body(True, 100)
    direct_gaps: list[float] = []
    gw_gaps: list[float] = []
    asyncio.run(drive(b.sim.ports["gpu-1"], "none", short, conc, b.args.seconds, direct_gaps))
    asyncio.run(drive(ours_port, KEY, short, conc, b.args.seconds * 2, gw_gaps))
    sim_speed(b.sim, 0.0)
    b.report(f"## Inter-token latency, 50 tokens/s per stream, {conc} streams (half of ours' {capacity:,.0f} chunks/s)", "",
             "| path | p50 ms | p99 ms |", "|---|---|---|",
             f"| direct to the simulator | {pct(direct_gaps, 50):.2f} | {pct(direct_gaps, 99):.2f} |",
             f"| through ours | {pct(gw_gaps, 50):.2f} | {pct(gw_gaps, 99):.2f} |", "",
             (f"added by the gateway: p50 **{pct(gw_gaps, 50) - pct(direct_gaps, 50):+.2f} ms**, "
              f"p99 **{pct(gw_gaps, 99) - pct(direct_gaps, 99):+.2f} ms**"))  # fmt: skip


def case_workers(b: Bench) -> None:
    """4. 1 vs 2 workers on both cores, on Redis, loaded one after the other by the cheap load generator."""
    pin({0, 1})
    for helper in (b.sim.process, b.backend, b.redis):  # started on CPU 1 for cases 1-3
        unpin_all(helper.pid, {0, 1})
    env = {**b.env, "HEARTCODE_LIMITS_STORAGE": b.redis_url, "HEARTCODE_REDIS_URL": b.redis_url}
    procs = {}
    for name, workers in (("2 workers", 2), ("1 worker", 1)):
        proc, base = start_proxy(f"proxy-ours{workers}", b.ours_cfg, b.work / "logs", env, workers=workers)
        b.started.append(proc)
        procs[name] = (proc, int(base.rsplit(":", 1)[1]))
    stream = body(True)
    rates: dict[str, list[float]] = {}
    shares: dict[str, list[float]] = {}
    split: dict[str, list[list[float]]] = {}
    for name in ("1 worker", "2 workers") * b.args.rounds:
        proc, port = procs[name]
        asyncio.run(drive(port, KEY, stream, 4, 1.0))
        start = cpu_family(proc.pid)
        before = (sum(start.values()), tree_cpu(b.sim.process.pid), sum(os.times()[:2]), time.perf_counter())
        _, ev = stream_blast(port, request(port, KEY, stream), 32, b.args.seconds)
        end = cpu_family(proc.pid)
        after = (sum(end.values()), tree_cpu(b.sim.process.pid), sum(os.times()[:2]), time.perf_counter())
        wall = after[3] - before[3]
        rates.setdefault(name, []).append(ev / b.args.seconds)
        shares.setdefault(name, []).extend((after[i] - before[i]) / wall for i in range(3))
        # Each process of the proxy (supervisor included, ~0): how evenly the workers share the load.
        split.setdefault(name, []).append(sorted(((end[p] - start.get(p, 0.0)) / wall for p in end), reverse=True))
        time.sleep(1.0)  # the closed streams' clean-up stays out of the next window
    r1, r2 = statistics.mean(rates["1 worker"]), statistics.mean(rates["2 workers"])

    def cores(name: str, i: int) -> float:
        return statistics.mean(shares[name][i::3])

    per1, per2 = r1 / cores("1 worker", 0), r2 / cores("2 workers", 0)
    b.report(
        "## 1 vs 2 workers on 2 cores (ours, Redis limits; load generator on the same cores), concurrency 32", "",
        f"{b.args.rounds} rounds of each, alternating; the load generator reads every 5 ms (bench/_load.py)", "",
        "| case | chunks/s (each round) | proxy cores | per process (each round) | simulator cores | load generator cores |",
        "|---|---|---|---|---|---|",
        *(f"| {name} | {rate:,.0f} ({' / '.join(f'{r:,.0f}' for r in rates[name])}) | {cores(name, 0):.2f} | "
          f"{' / '.join(' + '.join(f'{c:.2f}' for c in run if c >= 0.01) for run in split[name])} | "
          f"{cores(name, 1):.2f} | {cores(name, 2):.2f} |"
          for name, rate in (("1 worker", r1), ("2 workers", r2))), "",
        f"1 worker {r1:,.0f} chunks/s, 2 workers {r2:,.0f} chunks/s: **{r2 / r1:.2f}x** (target >= 1.7)", "",
        # The load generator shares the two cores; chunks/s per core the proxy used says how well
        # the workers themselves scale.
        f"per proxy core: 1 worker {per1:,.0f}, 2 workers {per2:,.0f} chunks/s: **{per2 / per1:.2f}** of linear")  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3, help="rounds of the workers case (default 3)")
    p.add_argument("--skip-workers", action="store_true")
    p.add_argument("--skip-itl", action="store_true")
    p.add_argument("--workers-only", action="store_true", help="only the workers case")
    args = p.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    print(f"machine: {machine()}")
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip())
    from importlib.metadata import version

    print(f"litellm {version('litellm')}")

    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    logs = work / "logs"
    tiers = work / "tiers.yaml"
    tiers.write_text(yaml.safe_dump(UNLIMITED_TIERS))
    keys = work / "keys.yaml"
    keys.write_text(yaml.safe_dump([{"key": KEY, "user_id": "bench", "tier": "bench", "age_verified": True}]))
    started: list[ManagedProcess] = []
    try:
        pin({1})
        sim = SimFleet(logs, extra_args=["--ttft-ms", "0", "--tokens-per-s", "0"]).start()
        started.append(sim.process)
        bport = free_port()
        backend = ManagedProcess("backend", [PYTHON, "-m", "litellm_cloud.sim.backend", "--port", str(bport),
                                             "--keys", str(keys)], log_dir=logs, cwd=REPO,
                                 ready=http_ok(f"http://127.0.0.1:{bport}/health")).start()  # fmt: skip
        started.append(backend)
        rport = free_port()
        redis = ManagedProcess("redis", ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no"], log_dir=logs, ready=lambda: port_open(rport)).start()  # fmt: skip
        started.append(redis)
        b = Bench(args, work, sim, backend, redis, f"redis://127.0.0.1:{rport}/0", render_test_config(work / "config.yaml", sim.endpoints, health_check_interval=0),
                  {"HEARTCODE_BACKEND_URL": f"http://127.0.0.1:{bport}", "HEARTCODE_TIERS_FILE": str(tiers)}, started)  # fmt: skip
        if not args.workers_only:
            helpers = len(started)
            targets = compared(b)
            capacity = case_streams(b, targets)
            case_plain(b, targets)
            if not args.skip_itl:
                case_itl(b, targets["ours"][0], capacity)
            for proc in started[helpers:]:  # ours and stock
                proc.stop()
        if not args.skip_workers:
            case_workers(b)
        print("\n\n".join(b.results))
        print("load after:", subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip())
        return 0
    finally:
        for proc in reversed(started):
            proc.stop()


if __name__ == "__main__":
    sys.exit(main())
