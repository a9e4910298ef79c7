"""Two LiteLLM versions side by side: start time, chunks/s, requests/s and memory of ``litellm-cloud proxy``.

    .venv/bin/python bench/bench_versions.py [--seconds 5] [--other 1.108.7=/tmp/venv-1087/bin/python]

Each interpreter has its own venv with ``litellm[proxy]`` at one version and this package installed
(``pip install --no-deps -e .``). Both gateways run every hook on one rendered config, pinned to CPU 0
and loaded at once (load generator, simulator and key backend on CPU 1), as in ``bench_stream.py``:
400-token streams from an instant simulator at concurrency 8, then 8-token answers at concurrency 8.
Start time is from spawn to ``/health/liveliness`` answering; memory is the process RSS after the load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._harness import UNLIMITED_TIERS, machine
from bench.bench_stream import KEY, body, drive, pin
from tests.support import (  # fmt: skip
    MASTER_KEY,
    PYTHON,
    ManagedProcess,
    SimFleet,
    free_port,
    http_ok,
    render_test_config,
)


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children, MB."""
    out = subprocess.run(
        ["ps", "-o", "rss=", "--ppid", str(pid), "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return sum(int(v) for v in out.stdout.split()) / 1024


def version_of(python: str) -> str:
    code = "from importlib.metadata import version; print(version('litellm'))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--other", default="1.108.7=/tmp/venv-1087/bin/python", help="NAME=PYTHON of the candidate")
    args = p.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    name, other = args.other.split("=", 1)
    pythons = {f"pinned {version_of(PYTHON)}": PYTHON, f"{name} ({version_of(other)})": other}
    print(f"machine: {machine()}")
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip())
    work = Path(tempfile.mkdtemp(prefix="bench-versions-"))
    logs = work / "logs"
    (work / "tiers.yaml").write_text(yaml.safe_dump(UNLIMITED_TIERS))
    keys = work / "keys.yaml"
    keys.write_text(yaml.safe_dump([{"key": KEY, "user_id": "bench", "tier": "bench", "age_verified": True}]))
    started: list[ManagedProcess] = []
    try:
        pin({1})
        sim = SimFleet(logs, extra_args=["--ttft-ms", "0", "--tokens-per-s", "0"]).start()
        started.append(sim.process)
        bport = free_port()
        started.append(ManagedProcess("backend", [PYTHON, "-m", "litellm_cloud.sim.backend", "--port", str(bport),
                                                  "--keys", str(keys)], log_dir=logs, cwd=REPO,
                                      ready=http_ok(f"http://127.0.0.1:{bport}/health")).start())  # fmt: skip
        cfg = render_test_config(work / "config.yaml", sim.endpoints, health_check_interval=0)
        env = {**os.environ, "LITELLM_MASTER_KEY": MASTER_KEY, "HEARTCODE_BACKEND_URL": f"http://127.0.0.1:{bport}",
               "HEARTCODE_TIERS_FILE": str(work / "tiers.yaml"), "LITELLM_OFFLINE_MODE": "true"}  # fmt: skip
        procs: dict[str, tuple[ManagedProcess, int, float]] = {}
        pin({0})
        for label, python in pythons.items():  # one after the other: start times do not overlap
            port = free_port()
            t0 = time.perf_counter()
            proc = ManagedProcess(f"proxy-{label.split()[0]}", [python, "-m", "litellm_cloud", "proxy", "--config",
                                  str(cfg), "--home", str(REPO), "--host", "127.0.0.1", "--port", str(port)],
                                  log_dir=logs, env=env, ready=http_ok(f"http://127.0.0.1:{port}/health/liveliness"),
                                  ready_timeout=180).start()  # fmt: skip
            started.append(proc)
            procs[label] = (proc, port, time.perf_counter() - t0)
        pin({1})
        stream, plain = body(True), body(False, 8)
        for _, port, _ in procs.values():
            asyncio.run(drive(port, KEY, stream, 2, 1.0))

        async def both(payload: bytes) -> list[tuple[int, int]]:
            return list(
                await asyncio.gather(*(drive(port, KEY, payload, 8, args.seconds) for _, port, _ in procs.values()))
            )

        chunks = [e / args.seconds for _, e in asyncio.run(both(stream))]
        reqs = [d / args.seconds for d, _ in asyncio.run(both(plain))]
        print(
            f"\n## LiteLLM versions side by side (ours, every hook; one pinned CPU, loaded at once), {args.seconds:g} s per case\n"
        )
        print("| version | start s | chunks/s (conc 8) | req/s (conc 8) | RSS MB |\n|---|---|---|---|---|")
        for (label, (proc, _, start)), c, r in zip(procs.items(), chunks, reqs, strict=True):
            assert proc.proc is not None
            print(f"| {label} | {start:.1f} | {c:,.0f} | {r:.1f} | {rss_mb(proc.proc.pid):.0f} |")
        print(f"\ncandidate/pinned: chunks/s {chunks[1] / chunks[0]:.2f}, req/s {reqs[1] / reqs[0]:.2f}")
        print("load after:", subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip())
        return 0
    finally:
        for proc in reversed(started):
            proc.stop()


if __name__ == "__main__":
    sys.exit(main())
