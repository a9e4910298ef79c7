"""Which routing strategy? Each of LiteLLM's strategies, measured side by side on the same fleet.

    .venv/bin/python bench/bench_routing.py [--seconds 6]

One of the four SFW servers is slow (a GPU busy with long prompts: 150 ms to first token, 60 tokens/s
against 5 ms and 500 tokens/s for the others). For each strategy a proxy is started and loaded at
concurrency 16 with 16-token completions; the table shows requests/s, tail latency and the share of
requests the slow server got. The winner is what fleet.yaml's ``router.routing_strategy`` says.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._harness import load, table
from tests.support import SimFleet, chat, render_test_config, start_backend, start_proxy

KEY = "hc-sk-benchmark00000000000000000000admin"
STRATEGIES = ("simple-shuffle", "least-busy", "latency-based-routing", "usage-based-routing-v2")


def slow_share(sim: SimFleet) -> float:
    counts = {}
    for name in ("gpu-1", "gpu-2", "gpu-3", "gpu-4"):
        stats = httpx.get(sim.url(name) + "/sim/stats", timeout=5).json()
        counts[name] = sum(stats["requests"].get("chat", {}).values())
    total = sum(counts.values())
    return counts["gpu-4"] / total if total else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-routing-") as tmp:
        logs = Path(tmp)
        sim = SimFleet(logs).start()
        procs = [sim.process]
        try:
            backend, url = start_backend(
                logs, [{"key": KEY, "user_id": "bench", "tier": "admin", "age_verified": True}]
            )
            procs.append(backend)
            env = {"HEARTCODE_BACKEND_URL": url}
            rows, ratios = [], []
            for strategy in STRATEGIES:
                sim.control("*", mode="ok", ttft_ms=5, tokens_per_s=500, reset_stats=True)
                sim.control("gpu-4", ttft_ms=150, tokens_per_s=60)
                config = render_test_config(logs / f"{strategy}.yaml", sim.endpoints, timeout=30, stream_timeout=30,
                                            routing_strategy=strategy)  # fmt: skip
                proxy, base = start_proxy(f"proxy-{strategy}", config, logs, env)
                try:
                    result = load(strategy, base, "/v1/chat/completions", chat("heartcode-default", max_tokens=16),
                                  headers={"authorization": f"Bearer {KEY}"}, concurrency=16, seconds=args.seconds)  # fmt: skip
                    rows.append(result)
                    ratios.append((f"{strategy}: share of requests sent to the slow server", slow_share(sim)))
                finally:
                    proxy.stop()
            table("Routing strategies, one slow server of four (concurrency 16)", rows, ratios, csv_name="routing.csv")
        finally:
            for proc in reversed(procs):
                proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
