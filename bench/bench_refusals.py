"""Refusals per core: a proxy answering nothing but our own ``429 rate_limited``, with and without the
refusal cut (``litellm_cloud._litellm_refusal``: LiteLLM's proxy-only failure logging skipped for them).

    .venv/bin/python bench/bench_refusals.py [--seconds 4] [--rounds 5] [--concurrency 8]

Starts the GPU simulator, the development key backend and two proxies from one rendered config, with a
tier of 1 request a minute so every request after the first is refused by the limits pre-call hook:
``cut`` as production runs, ``off`` the same with the cut's guard made to fail (its measured names
emptied before the gateway is built, as an upgrade of LiteLLM would), so it logs the guard's error and
LiteLLM logs each refusal as before. Both proxies are pinned to CPU 0 and loaded at once each round
(load generator, simulator and backend on CPU 1): each one's share of the CPU becomes its refusals/s,
and other work on the machine slows both alike. Prints refusals/s per round and the ratio cut/off.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._harness import UNLIMITED_TIERS, load_together, machine
from tests.support import (
    MASTER_KEY,
    ManagedProcess,
    SimFleet,
    free_port,
    http_ok,
    render_test_config,
    start_backend,
)

KEY = "hc-sk-bench-refusals-00000000001"
BODY = {"model": "heartcode-chat-sfw", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
TIERS = {"tiers": {"tight": {**UNLIMITED_TIERS["tiers"]["bench"], "rpm": 1}}}
#: The proxy command with the cut's guard failing: what ``python -m litellm_cloud._serve`` runs, after
#: emptying the names the guard expects (the gateway, built later in this process, then leaves LiteLLM be).
GUARD_OFF = (
    "import sys; from litellm_cloud import _litellm_refusal as r, _serve; "
    "r._MEASURED = dict.fromkeys(r._MEASURED, frozenset()); sys.argv[0] = 'litellm_cloud._serve'; _serve.main()"
)


def pin(cpu: int) -> None:
    if (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def start(name: str, config: Path, logs: Path, env: dict[str, str], *, cut: bool) -> tuple[ManagedProcess, str]:
    from litellm_cloud.proxy import proxy_argv, proxy_env

    port = free_port()
    argv = proxy_argv(config, host="127.0.0.1", port=port)
    if not cut:
        argv[1:3] = ["-c", GUARD_OFF]
    full = proxy_env({**os.environ, "LITELLM_MASTER_KEY": MASTER_KEY, **env})
    base = f"http://127.0.0.1:{port}"
    proc = ManagedProcess(name, argv, log_dir=logs, env=full, cwd=REPO, ready=http_ok(f"{base}/health/liveliness"),
                          ready_timeout=90)  # fmt: skip
    return proc.start(), base


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=8)
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-refusals-"))
    logs = work / "logs"
    logs.mkdir()
    (work / "tiers.yaml").write_text(yaml.safe_dump(TIERS))
    started: list[ManagedProcess] = []
    try:
        pin(1)
        sim = SimFleet(logs, extra_args=["--ttft-ms", "0", "--tokens-per-s", "0"]).start()
        started.append(sim.process)
        backend, url = start_backend(logs, [{"key": KEY, "user_id": "tight", "key_id": "tight", "tier": "tight",
                                             "age_verified": True}])  # fmt: skip
        started.append(backend)
        config = render_test_config(work / "config.yaml", sim.endpoints)
        env = {"HEARTCODE_BACKEND_URL": url, "HEARTCODE_TIERS_FILE": str(work / "tiers.yaml")}
        pin(0)  # the proxies inherit CPU 0
        bases = {}
        for name in ("cut", "off"):
            proc, bases[name] = start(f"proxy-{name}", config, logs, env, cut=name == "cut")
            started.append(proc)
        pin(1)
        guard_logged = "failure logging changed" in (logs / "proxy-off.log").read_text()
        headers = {"authorization": f"Bearer {KEY}"}
        for name, base in bases.items():
            httpx.post(base + "/v1/chat/completions", json=BODY, headers=headers, timeout=30)  # the one admitted
            r = httpx.post(base + "/v1/chat/completions", json=BODY, headers=headers, timeout=30)
            if r.status_code != 429 or r.json()["error"]["code"] != "rate_limited" or "retry-after" not in r.headers:
                raise SystemExit(f"{name}: expected 429 rate_limited with retry-after, got {r.status_code} {r.text}")

        totals = dict.fromkeys(bases, 0.0)
        print(f"{'round':>5} {'cut refusals/s':>15} {'off refusals/s':>15} {'ratio':>6}", flush=True)
        for i in range(1, args.rounds + 1):
            results = load_together(bases, "/v1/chat/completions", BODY, headers=headers,
                                    concurrency=args.concurrency, seconds=args.seconds, warmup=1.0 if i == 1 else 0.3)  # fmt: skip
            rates = {}
            for name, res in results.items():
                if res.requests:
                    raise SystemExit(f"{name}: {res.requests} requests admitted; see {logs}")
                rates[name] = res.errors / res.seconds
                totals[name] += rates[name]
            print(f"{i:>5} {rates['cut']:>15.1f} {rates['off']:>15.1f} {rates['cut'] / rates['off']:>6.3f}", flush=True)
        print(f"\n## Refusals per core ({args.rounds} x {args.seconds:g} s, concurrency {args.concurrency} each)")
        print(f"machine: {machine()}")
        print(f"- cut: {totals['cut'] / args.rounds:,.1f} refusals/s, off: {totals['off'] / args.rounds:,.1f} refusals/s "
              f"(guard error logged by off: {guard_logged})")  # fmt: skip
        print(f"- ratio cut/off (totals): **{totals['cut'] / totals['off']:.3f}**")
        return 0
    finally:
        for proc in reversed(started):
            proc.stop()


if __name__ == "__main__":
    sys.exit(main())
