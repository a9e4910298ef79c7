"""Micro-benchmark of the GPU simulator alone: requests/s and latency percentiles, direct over HTTP.

    .venv/bin/python bench/bench_sim.py [--seconds 5] [--concurrency 1,32] [--ttft-ms 0 --tokens-per-s 0]

Starts ``python -m litellm_cloud.sim`` as a child (pinned to CPU 0 when there are two or more, the load
generator to CPU 1), then drives it from keep-alive connections with a tiny raw-socket HTTP client, as
cheap as a Python client gets. Prints one row per case. ``wrk`` (apt) measures the simulator's ceiling
better than any Python client; on the 2-core dev machine it measured ~14,500 small chat requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import free_ports, http_ok, wait_until

CHAT = {"model": "heartcode-chat", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}


def request_bytes(port: int, stream: bool) -> bytes:
    body = json.dumps({**CHAT, "stream": stream}).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (port, len(body), body))


async def read_response(reader: asyncio.StreamReader) -> None:
    """Read one answer: a content-length body or a chunked stream to its last chunk."""
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return
    start = lower.index(b"content-length:") + len(b"content-length:")
    await reader.readexactly(int(lower[start:lower.index(b"\r\n", start)]))


async def worker(port: int, payload: bytes, deadline: float, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            writer.write(payload)
            await read_response(reader)
            latencies.append(time.perf_counter() - t)
    finally:
        writer.close()


async def run_case(port: int, concurrency: int, stream: bool, seconds: float) -> dict[str, float]:
    payload = request_bytes(port, stream)
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(worker(port, payload, deadline, latencies) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100)
    return {"rps": len(latencies) / elapsed, "p50": q[49] * 1000, "p95": q[94] * 1000, "p99": q[98] * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--tokens-per-s", type=float, default=0.0)
    args = parser.parse_args()
    port = free_ports(1)[0]
    pin = ["taskset", "-c", "0"] if (os.cpu_count() or 1) >= 2 and _has("taskset") else []
    sim = subprocess.Popen([*pin, sys.executable, "-m", "litellm_cloud.sim", "--server", f"bench={port}",
                            "--ttft-ms", str(args.ttft_ms), "--tokens-per-s", str(args.tokens_per_s)],
                           cwd=REPO, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(http_ok(f"http://127.0.0.1:{port}/health"), 30, "the simulator")
        if pin:
            os.sched_setaffinity(0, {1})
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        print(f"simulator: ttft {args.ttft_ms} ms, {args.tokens_per_s or 'instant'} tokens/s, max_tokens 8")
        print(f"{'case':<28}{'req/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
        for stream in (False, True):
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                row = asyncio.run(run_case(port, concurrency, stream, args.seconds))
                name = f"{'stream' if stream else 'plain'} c={concurrency}"
                print(f"{name:<28}{row['rps']:>10.0f}{row['p50']:>9.2f}{row['p95']:>9.2f}{row['p99']:>9.2f}")
    finally:
        sim.terminate()
        sim.wait(10)
    return 0


def _has(program: str) -> bool:
    return any((Path(d) / program).exists() for d in os.environ.get("PATH", "").split(os.pathsep))


if __name__ == "__main__":
    sys.exit(main())
