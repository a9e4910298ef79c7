"""Event-loop lag of one proxy worker, idle, at part load and saturated: where the saturation threshold comes from.

    .venv/bin/python bench/bench_loop_lag.py [--seconds 10]

Starts the GPU simulator, the development key backend and ``litellm-cloud proxy`` (one worker, every
hook, limits on ``memory://``). The proxy runs pinned to CPU 0; simulator, backend and load generator
to CPU 1. Each phase reads ``litellm_cloud_event_loop_lag_seconds`` from ``/metrics`` before and after
and prints the phase's lag quantiles (interpolated within buckets, as Prometheus' ``histogram_quantile``
does), the share of samples over 50 and 100 ms, the max gauge, and what the clients got (chunks/s, and
the gap between chunks at the client, p99).

Phases: idle; 400-token streams from an instant simulator at concurrency 1, 4, 8, 32 (the worker's
whole core: 1 already saturates it, the simulator never waits); then streams paced at 50 tokens/s each
at about a quarter, a half and all of the measured capacity (what a real GPU fleet sends).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._harness import UNLIMITED_TIERS, machine
from bench.bench_stream import body, drive, pct, pin, sim_speed
from tests.support import MASTER_KEY, SimFleet, render_test_config, start_backend, start_proxy

KEY = "hc-sk-bench-looplag-key-0000001"
LAG = "litellm_cloud_event_loop_lag_seconds"


def scrape(base: str) -> tuple[dict[float, float], float]:
    """(cumulative bucket counts by upper bound, the max gauge) from ``/metrics``."""
    text = httpx.get(f"{base}/metrics", headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=10).text
    found = re.findall(rf'^{LAG}_bucket\{{le="([^"]+)"\}} (\S+)$', text, re.MULTILINE)
    buckets = {float(le): float(v) for le, v in found}
    [top] = re.findall(r"^litellm_cloud_event_loop_lag_max_seconds (\S+)$", text, re.MULTILINE)
    return buckets, float(top)


def quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """``histogram_quantile(q, ...)`` over the difference of two scrapes, in ms."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound, cum in zip(bounds, counts, strict=True):
        if cum >= rank:
            if bound == float("inf"):
                return lower * 1000
            return (lower + (bound - lower) * (rank - below) / max(cum - below, 1e-9)) * 1000
        lower, below = bound, cum
    return lower * 1000


def over(limit: float, before: dict[float, float], after: dict[float, float]) -> float:
    """Share of the phase's samples above ``limit`` seconds (a bucket bound)."""
    total = after[float("inf")] - before[float("inf")]
    return (total - (after[limit] - before[limit])) / total if total else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    print(f"machine: {machine()}")
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip())
    work = Path(tempfile.mkdtemp(prefix="bench-looplag-"))
    tiers = work / "tiers.yaml"
    tiers.write_text(yaml.safe_dump(UNLIMITED_TIERS))
    started = []
    rows = ["| phase | client chunks/s | client gap p99 ms | lag p50 ms | lag p99 ms | > 50 ms | > 100 ms | max gauge ms |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    try:
        pin({1})
        sim = SimFleet(work, extra_args=["--ttft-ms", "0", "--tokens-per-s", "0"]).start()
        started.append(sim.process)
        backend, url = start_backend(work, [{"key": KEY, "user_id": "bench", "tier": "bench", "age_verified": True}])
        started.append(backend)
        config = render_test_config(work / "config.yaml", sim.endpoints)
        pin({0})
        proxy, base = start_proxy(
            "proxy", config, work, {"HEARTCODE_BACKEND_URL": url, "HEARTCODE_TIERS_FILE": str(tiers)}
        )
        started.append(proxy)
        pin({1})
        port = int(base.rsplit(":", 1)[1])
        asyncio.run(drive(port, KEY, body(True), 2, 2.0))  # warm up: the key is validated once

        def phase(name: str, conc: int, payload: bytes | None) -> float:
            gaps: list[float] = []
            before, _ = scrape(base)
            if payload is None:
                asyncio.run(asyncio.sleep(args.seconds))
                events = 0
            else:
                events = asyncio.run(drive(port, KEY, payload, conc, args.seconds, gaps))[1]
            after, top = scrape(base)
            gap = f"{pct(gaps, 99):.1f}" if gaps else "-"
            rows.append(f"| {name} | {events / args.seconds:,.0f} | {gap} | {quantile(0.5, before, after):.2f} | "
                        f"{quantile(0.99, before, after):.1f} | {over(0.05, before, after):.1%} | "
                        f"{over(0.1, before, after):.1%} | {top * 1000:.1f} |")  # fmt: skip
            print(rows[-1], flush=True)
            return events / args.seconds

        print("\n".join(rows), flush=True)
        phase("idle", 0, None)
        capacity = max(phase(f"instant streams, conc {c}", c, body(True)) for c in (1, 4, 8, 32))
        sim_speed(sim, 50.0)
        for share in (0.25, 0.5, 1.0):
            conc = max(1, round(capacity * share / 50))
            phase(f"50 tok/s streams x {conc} ({share:.0%} of {capacity:,.0f} chunks/s)", conc, body(True, 200))
        phase("idle again", 0, None)
    finally:
        for proc in reversed(started):
            proc.stop()
    print("\n" + "\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
