"""The gateway against the GPU simulator, side by side in one run.

    .venv/bin/python bench/bench_gateway.py [--seconds 5]

Starts the simulated fleet, the development key backend and the real proxy (as ``litellm-cloud dev``
does), then measures requests/s and p50/p95/p99 for direct-to-simulator and through-the-gateway, at
concurrency 1 and 32, non-streaming and streaming. The load generator shares the machine's cores with
what it measures: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from bench._harness import UNLIMITED_TIERS, load, table
from tests.support import SimFleet, chat, render_test_config, start_backend, start_proxy

KEY = "hc-sk-benchmark00000000000000000000admin"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        logs = Path(tmp)
        sim = SimFleet(logs).start()
        procs = [sim.process]
        try:
            # Instant generation: the benchmark measures the gateway, not simulated GPU speed.
            sim.control("*", ttft_ms=0, tokens_per_s=0)
            backend, url = start_backend(
                logs, [{"key": KEY, "user_id": "bench", "tier": "bench", "age_verified": True}]
            )
            procs.append(backend)
            # What is measured is the gateway's cost, not a tier's limit: the key's tier never refuses.
            tiers = logs / "tiers.yaml"
            tiers.write_text(yaml.safe_dump(UNLIMITED_TIERS))
            env = {"HEARTCODE_BACKEND_URL": url, "HEARTCODE_TIERS_FILE": str(tiers)}
            config = render_test_config(logs / "config.yaml", sim.endpoints, timeout=30, stream_timeout=30)
            proxy, base = start_proxy("proxy", config, logs, env)
            procs.append(proxy)
            auth = {"authorization": f"Bearer {KEY}"}
            rows, ratios = [], []
            for stream in (False, True):
                body = chat("heartcode-default", max_tokens=8, stream=stream)
                kind = "stream" if stream else "plain"
                for conc in (1, 32):
                    direct = load(f"direct {kind}", sim.url("gpu-1"), "/v1/chat/completions", body,
                                  concurrency=conc, seconds=args.seconds)  # fmt: skip
                    via = load(f"gateway {kind}", base, "/v1/chat/completions", body, headers=auth,
                               concurrency=conc, seconds=args.seconds)  # fmt: skip
                    rows += [direct, via]
                    ratios.append((f"gateway/direct req/s, {kind}, concurrency {conc}", via.rps / direct.rps))
                    ratios.append((f"gateway added p50 ms, {kind}, concurrency {conc}", via.pct(50) - direct.pct(50)))
            table("Gateway vs direct (simulated GPU, instant generation)", rows, ratios, csv_name="gateway.csv")
        finally:
            for proc in reversed(procs):
                proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
