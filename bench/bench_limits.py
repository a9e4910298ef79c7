"""Tier limits through the real gateway: their cost in throughput, and over-admission under a burst.

    .venv/bin/python bench/bench_limits.py [--seconds 5] [--rounds 3] [--concurrency 8] [--bursts 5]

Starts redis-server, the GPU simulator (instant answers), the development key backend and three LiteLLM
proxies from the same rendered config: ``limits`` and ``limits-2`` run the tier limiter on the shared
Redis; ``none`` is the same gateway without the limits hook in its callbacks (auth, fleet and
observability hooks stay). Proxies are pinned to CPU 0, everything else to CPU 1 (with two CPUs).

1. Throughput: each round loads ``limits`` and ``none`` at once (both on CPU 0, so each one's share of
   the CPU turns into its requests/s, and other work on the machine slows both alike) with keep-alive
   load at ``--concurrency`` each; the ratio of total requests (target >= 0.9; LiteLLM's own limiter measured ~0.67 here).
2. Over-admission: ``--bursts`` times, 200 concurrent requests of a fresh account with 50 requests a
   minute, split over both limited proxies; admitted minus 50, the largest seen (target 0).

3. In process: microseconds per request of the limiter alone (admit + settle) on each storage, the
   deterministic view of what it adds to a request.

Prints a table and writes bench/results/limits-<time>.csv.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._harness import RESULTS, UNLIMITED_TIERS, load_together, machine
from tests.support import ManagedProcess, SimFleet, free_port, port_open, render_test_config, start_backend, start_proxy

RACE_RPM = 50
# The unlimited bench tier, and "race": the same but for its RPM, which the race measures.
_BENCH_TIER = UNLIMITED_TIERS["tiers"]["bench"]
TIERS = {"tiers": {"bench": _BENCH_TIER, "race": {**_BENCH_TIER, "rpm": RACE_RPM, "model_groups": list(_BENCH_TIER["model_groups"])}}}  # fmt: skip
BURST = 200
BENCH_KEY = "hc-sk-bench-limits-0000000000001"
BODY = {"model": "heartcode-chat-sfw", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def pin(cpu: int) -> None:
    if (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def race_key(i: int) -> str:
    return f"hc-sk-bench-race-{i:016d}"


async def burst(bases: list[str], key: str) -> list[int]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=BURST)) as client:
        headers = {"Authorization": f"Bearer {key}"}
        responses = await asyncio.gather(*(
            client.post(bases[i % len(bases)] + "/v1/chat/completions", json=BODY, headers=headers)
            for i in range(BURST)))  # fmt: skip
    return [r.status_code for r in responses]


def in_process(redis_url: str, calls: int = 2000) -> dict[str, float]:
    """Microseconds per request of the limiter alone (admit + settle), per storage, in this process.

    Deterministic where the end-to-end rate is noisy: what the limiter adds to each request.
    """
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from litellm_cloud.limits import Cost, Limiter, Limits
    from litellm_cloud.limits.storage.memory import MemoryStorage
    from litellm_cloud.limits.storage.redis import RedisStorage
    from litellm_cloud.observability import Metrics

    limits = Limits(**{k: v for k, v in _BENCH_TIER.items() if k != "model_groups"})
    cost = Cost(need=10, want=100)

    async def run(limiter: Limiter) -> float:
        for _ in range(50):  # warm the connection pool and the script cache
            t = (await limiter.admit("warm", "bench", limits, cost)).ticket
            assert t is not None
            await limiter.settle(t, 20)
        start = time.perf_counter()
        for i in range(calls):
            ticket = (await limiter.admit(f"acct-{i % 10}", "bench", limits, cost)).ticket
            assert ticket is not None
            await limiter.settle(ticket, 20)
        took = (time.perf_counter() - start) / calls * 1e6
        await limiter.aclose()
        return took

    return {
        "memory": asyncio.run(run(Limiter(MemoryStorage(), Metrics()))),
        "redis": asyncio.run(run(Limiter(RedisStorage.from_url(redis_url), Metrics()))),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--bursts", type=int, default=5)
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-limits-"))
    logs = work / "logs"
    logs.mkdir()
    tiers = work / "tiers.yaml"
    tiers.write_text(yaml.safe_dump(TIERS))
    keys = [{"key": BENCH_KEY, "user_id": "bench", "key_id": "bench", "tier": "bench", "age_verified": True}]
    keys += [{"key": race_key(i), "user_id": f"race-{i}", "key_id": f"race-{i}", "tier": "race", "age_verified": True}
             for i in range(args.bursts)]  # fmt: skip

    started: list[ManagedProcess] = []
    try:
        pin(1)
        redis_port = free_port()
        redis = ManagedProcess("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "no"],
                               log_dir=logs, ready=lambda: port_open(redis_port)).start()  # fmt: skip
        started.append(redis)
        sim = SimFleet(logs, extra_args=["--ttft-ms", "0", "--tokens-per-s", "0"]).start()
        started.append(sim.process)
        backend, backend_url = start_backend(logs, keys)
        started.append(backend)

        limited_cfg = render_test_config(work / "config.yaml", sim.endpoints)
        none = yaml.safe_load(limited_cfg.read_text())
        none["litellm_settings"]["callbacks"] = [c for c in none["litellm_settings"]["callbacks"]
                                                 if c != "custom_auth.limits_hook"]  # fmt: skip
        none_cfg = work / "config-none.yaml"
        none_cfg.write_text(yaml.safe_dump(none, sort_keys=False))
        env = {"HEARTCODE_BACKEND_URL": backend_url, "HEARTCODE_TIERS_FILE": str(tiers), "LITELLM_LOG": "WARNING",
               "HEARTCODE_LIMITS_STORAGE": f"redis://127.0.0.1:{redis_port}/0"}  # fmt: skip
        pin(0)  # the proxies inherit CPU 0
        bases = {}
        for name, cfg in (("limits", limited_cfg), ("none", none_cfg), ("limits-2", limited_cfg)):
            proc, bases[name] = start_proxy(f"proxy-{name}", cfg, logs, env)
            started.append(proc)
        pin(1)

        headers = {"authorization": f"Bearer {BENCH_KEY}"}
        totals = {"limits": 0.0, "none": 0.0}
        round_ratios = []
        print(f"{'round':>5} {'limits req/s':>13} {'none req/s':>11} {'ratio':>6}", flush=True)
        for r in range(1, args.rounds + 1):
            # Both proxies loaded at once on the same CPU: noise from the machine hits both alike.
            results = load_together({name: bases[name] for name in ("limits", "none")}, "/v1/chat/completions",
                                    BODY, headers=headers, concurrency=args.concurrency, seconds=args.seconds,
                                    warmup=1.0 if r == 1 else 0.3)  # fmt: skip
            rates = {}
            for name, res in results.items():
                if res.errors:
                    raise SystemExit(f"{name}: {res.errors} errors under load; see {logs}")
                rates[name] = res.rps
                totals[name] += res.rps
            round_ratios.append(rates["limits"] / rates["none"])
            print(f"{r:>5} {rates['limits']:>13.1f} {rates['none']:>11.1f} {round_ratios[-1]:>6.3f}", flush=True)
        ratio = totals["limits"] / totals["none"]
        median_ratio = statistics.median(round_ratios)

        overs = []
        for i in range(args.bursts):
            codes = asyncio.run(burst([bases["limits"], bases["limits-2"]], race_key(i)))
            admitted, refused = codes.count(200), codes.count(429)
            if admitted + refused != BURST:
                raise SystemExit(f"burst {i}: unexpected statuses {sorted(set(codes))}; see {logs}")
            overs.append(admitted - RACE_RPM)
        worst = max(overs)

        micro = in_process(f"redis://127.0.0.1:{redis_port}/0")
        rows = [
            ("limiter alone, admit + settle, memory:// (us/request)", micro["memory"], ""),
            ("limiter alone, admit + settle, redis:// (us/request)", micro["redis"], ""),
            ("gateway req/s, tier limiter on Redis", totals["limits"] / args.rounds, ""),
            ("gateway req/s, no limits hook", totals["none"] / args.rounds, ""),
            ("ratio limits/none (totals)", ratio, ">= 0.9"),
            ("ratio limits/none (median of rounds)", median_ratio, ">= 0.9"),
            (
                f"largest over-admission, {BURST} concurrent vs {RACE_RPM} rpm, 2 proxies ({args.bursts} bursts)",
                worst,
                "0",
            ),
            ("admitted per burst minus the limit", " ".join(str(o) for o in overs), ""),
        ]
        print(f"\n## Tier limits ({args.rounds} x {args.seconds:g} s rounds, concurrency {args.concurrency})")
        print(f"machine: {machine()}\n\n| measure | value | target |\n|---|---|---|")
        for label, value, target in rows:
            shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
            print(f"| {label} | {shown} | {target} |")
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"limits-{time.strftime('%Y%m%d-%H%M%S')}.csv"
        with open(out, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["measure", "value", "target"])
            w.writerows(rows)
        print(f"\nwrote {out.relative_to(REPO)}")
        return 0 if median_ratio >= 0.9 and worst == 0 else 1
    finally:
        for proc in reversed(started):
            proc.stop()


if __name__ == "__main__":
    raise SystemExit(main())
