"""When the fleet is full: queue-aware routing and paying tiers first, against simple-shuffle, in one run.

    .venv/bin/python bench/bench_fleet.py [--seconds 20] [--flood-seconds 60] [--premium-rate 4]

Two identical simulated fleets (4 SFW servers each saturating like vLLM: ``max_num_seqs`` 4, a shared
decode rate, priority scheduling available) and two proxies, loaded at the same time with the same
open-loop (Poisson) arrivals, so the machine's noise hits both alike:

- **ours**: ``queue_routing`` + ``vllm_priority`` on, Free refused at ``fleet_busy_at``;
- **shuffle**: ``simple-shuffle``, no priority, no refusals (the fleet before issue 16);
- with ``--gc-compare``, two more on fleets of their own: **ours-gc-py**, ours with Python's collector
  thresholds (``HEARTCODE_GC_THRESHOLD=off``, as before 3 Dec 2026), and **ours-gc-off**, also without the
  start-up freeze (``HEARTCODE_GC_FREEZE=off``, as before issue 16c); with ``--gc-threshold 700,50,10``
  another, ours with ``HEARTCODE_GC_THRESHOLD`` set so.

Every proxy's garbage-collection pauses during phase 2 are read from its ``/metrics``.

Phase 1, mixed answer lengths (2-64 tokens) and prompt lengths at ~70% of capacity: p95 TTFT.
Phase 2, Premium alone (its unloaded TTFT), then a Free flood at twice the group's capacity plus the same
steady Premium traffic: Premium p99 TTFT, and what Free got (served, ``fleet_busy``, timeouts). Each half
of phase 2 lasts ``--flood-seconds`` at ``--premium-rate``: 4 req/s for 60 s gives ~240 Premium samples a
half, so a p99 is the 3rd-slowest request, not the only slow one (27 samples before).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import gc
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._harness import machine
from tests.support import FLEET_FILE, MASTER_KEY, SimFleet, chat, render_test_config, start_backend, start_proxy

FREE = "hc-sk-benchfleetfree0000000000000000000"
PREMIUM = "hc-sk-benchfleetpremium000000000000000"
SFW = [f"gpu-{i}" for i in range(1, 5)]
LIMITS = {"rpm": 10_000_000, "tpm": 1_000_000_000, "daily_tokens": 10**12, "max_parallel": 10_000,
          "model_groups": ["heartcode-chat-sfw", "heartcode-chat-nsfw", "heartcode-embed"]}  # fmt: skip
SLOTS, BATCH_RATE = 4, 40  # max_num_seqs, decode tokens/s of a server's whole batch
SERVER: dict[str, int | str] = {"max_num_seqs": SLOTS, "batch_tokens_per_s": BATCH_RATE, "tokens_per_s": 40, "ttft_ms": 20,
          "scheduling_policy": "priority"}  # fmt: skip
ANSWERS = (2, 8, 32, 64)  # phase 1: mean 26.5 tokens -> ~1.5 req/s per server at 40 tokens/s
FLOOD_TOKENS = 32  # phase 2: 1.25 req/s per server, 5 req/s for the group
TIMEOUT = 30.0


@dataclass
class Outcomes:
    ttft: dict[str, list[float]] = field(default_factory=dict)
    codes: dict[str, Counter[str]] = field(default_factory=dict)
    served: dict[str, list[tuple[float, str, float, float]]] = field(default_factory=dict)
    """kind -> (arrival on the monotonic clock, server id, response headers s, TTFT s) of each answer."""

    def add(self, kind: str, code: str, ttft: float | None, at: float = 0.0, server: str = "",
            headers: float = 0.0) -> None:  # fmt: skip
        self.codes.setdefault(kind, Counter())[code] += 1
        if ttft is not None:
            self.ttft.setdefault(kind, []).append(ttft)
            self.served.setdefault(kind, []).append((at, server, headers, ttft))

    def pct(self, kind: str, p: float) -> float:
        values = sorted(self.ttft.get(kind, []))
        return values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000 if values else float("nan")


async def _one(client: httpx.AsyncClient, key: str, body: dict[str, object], out: Outcomes, kind: str) -> None:
    started = time.monotonic()
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body,
                                 headers={"authorization": f"Bearer {key}"}) as r:  # fmt: skip
            headers = time.monotonic() - started  # LiteLLM answers a stream with its first chunk
            if r.status_code != 200:
                data = (await r.aread()).decode()
                code = "fleet_busy" if "fleet_busy" in data else str(r.status_code)
                out.add(kind, code, None)
                return
            first = None
            async for line in r.aiter_lines():
                if first is None and '"content"' in line:
                    first = time.monotonic() - started
            out.add(kind, "ok", first, started, r.headers.get("x-litellm-model-id", ""), headers)
    except httpx.TimeoutException:
        out.add(kind, "timeout", None)
    except httpx.HTTPError as exc:
        out.add(kind, type(exc).__name__, None)


Polls = list[tuple[float, dict[str, tuple[int, int]]]]
"""(when, server -> (running, waiting)) samples of one simulated fleet."""


async def _poll(admin: str, into: Polls, stop: asyncio.Event, every: float = 0.1) -> None:
    """Sample every server's running batch and waiting queue (the simulator's ``/sim/stats``)."""
    async with httpx.AsyncClient(timeout=2) as client:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                servers = (await client.get(admin + "/servers")).json()["servers"]
                into.append((time.monotonic(), {s["server"]: (s["running"], s["waiting"]) for s in servers}))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)


def split(out: Outcomes, polls: Polls, kind: str, slots: int) -> str:
    """Where ``kind``'s time to first token went: requests that arrived at a server with every slot taken
    (they wait in the simulator's queue) against the rest (whose TTFT is the gateway + ``ttft_ms``)."""
    if not polls:
        return "no samples"
    times = [t for t, _ in polls]
    full: list[float] = []
    free: list[float] = []
    heads = [h * 1000 for _, _, h, _ in out.served.get(kind, [])]
    for at, server, _, ttft in out.served.get(kind, []):
        i = max(0, bisect.bisect_right(times, at) - 1)
        taken, _ = polls[i][1].get(server, (0, 0))
        (full if taken >= slots else free).append(ttft * 1000)

    def p(v: list[float], q: float) -> str:
        return f"{sorted(v)[min(len(v) - 1, int(q / 100 * len(v)))]:.0f}" if v else "-"

    running = [r for _, snap in polls for r, _ in snap.values()]
    waiting = [w for _, snap in polls for _, w in snap.values()]
    busy = sum(1 for _, snap in polls if any(r >= slots for r, _ in snap.values())) / len(polls)
    return (f"{kind} arriving at a full server: {len(full)} (p50/p99 {p(full, 50)}/{p(full, 99)} ms), at one with a "
            f"free slot: {len(free)} (p50/p99 {p(free, 50)}/{p(free, 99)} ms); response headers "
            f"p50/p99 {p(heads, 50)}/{p(heads, 99)} ms; running per server mean "
            f"{sum(running) / len(running):.2f} max {max(running)}, waiting max {max(waiting)}, "
            f"samples with some server full {busy:.0%}")


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its descendants (by this process alone
    for its own pid), from ``/proc``."""
    if pid == os.getpid():
        own = os.times()
        return own.user + own.system
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    tree, total, grew = {pid}, 0.0, True
    while grew:
        grew = False
        for child, (parent, _) in stats.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    for member in tree:
        total += stats.get(member, (0, 0.0))[1]
    return total


async def drive(bases: dict[str, str], streams: list[tuple[str, str, float, list[int]]], seconds: float,
                seed: int = 1, admins: dict[str, str] | None = None,
                polls: dict[str, Polls] | None = None) -> dict[str, Outcomes]:  # fmt: skip
    """Open-loop arrivals: for each (kind, key, rate, answer lengths) the same schedule on every proxy;
    with ``admins`` (fleet name -> simulator admin URL) the batches are sampled into ``polls``."""
    rng = random.Random(seed)
    schedule: list[tuple[float, str, str, dict[str, object]]] = []
    for kind, key, rate, lengths in streams:
        t = 0.0
        while True:
            t += rng.expovariate(rate)
            if t >= seconds:
                break
            words = " ".join(["word"] * rng.choice((8, 64, 512)))
            body = chat("heartcode-default", words, max_tokens=rng.choice(lengths), stream=True)
            schedule.append((t, kind, key, body))
    schedule.sort(key=lambda item: item[0])
    results = {name: Outcomes() for name in bases}
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    clients = {name: httpx.AsyncClient(base_url=b, timeout=TIMEOUT, limits=limits) for name, b in bases.items()}
    tasks = []
    stop = asyncio.Event()
    pollers = [asyncio.create_task(_poll(url, polls.setdefault(n, []), stop)) for n, url in (admins or {}).items()
               if polls is not None]  # fmt: skip
    start = time.monotonic()
    for t, kind, key, body in schedule:
        await asyncio.sleep(max(0.0, start + t - time.monotonic()))
        tasks += [asyncio.create_task(_one(clients[n], key, body, results[n], kind)) for n in bases]
    await asyncio.gather(*tasks)
    stop.set()
    await asyncio.gather(*pollers)
    for client in clients.values():
        await client.aclose()
    return results


def gc_pauses(base: str) -> dict[str, tuple[int, float, float]]:
    """generation -> (collections, seconds in all, the upper bound of the slowest one's bucket) so far,
    from the proxy's ``litellm_cloud_gc_pause_seconds``."""
    text = httpx.get(base + "/metrics", headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=10).text
    out: dict[str, tuple[int, float, float]] = {}
    buckets: dict[str, list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "litellm_cloud_gc_pause_seconds":
            continue
        for sample in family.samples:
            gen = sample.labels.get("generation", "")
            count, total, _ = out.get(gen, (0, 0.0, 0.0))
            if sample.name.endswith("_count"):
                out[gen] = (int(sample.value), total, 0.0)
            elif sample.name.endswith("_sum"):
                out[gen] = (count, sample.value, 0.0)
            elif sample.name.endswith("_bucket"):
                buckets.setdefault(gen, []).append((float(sample.labels["le"]), sample.value))
    for gen, (count, total, _) in out.items():
        bounds = sorted(buckets.get(gen, []))
        out[gen] = (count, total, next((le for le, n in bounds if n >= count), float("inf")) if count else 0.0)
    return out


def _gc_line(name: str, before: dict[str, tuple[int, float, float]], after: dict[str, tuple[int, float, float]]) -> str:
    parts = []
    for gen in ("0", "1", "2"):
        n = after.get(gen, (0, 0.0, 0.0))[0] - before.get(gen, (0, 0.0, 0.0))[0]
        secs = after.get(gen, (0, 0.0, 0.0))[1] - before.get(gen, (0, 0.0, 0.0))[1]
        parts.append(f"gen{gen} {n} ({secs * 1000:.0f} ms)")
    largest = after.get("2", (0, 0.0, 0.0))[2]
    return f"{name}: " + ", ".join(parts) + f"; largest full collection since start <= {largest * 1000:.0f} ms"


class ClientPauses:
    """This bench client's own garbage collections (a pause here delays every proxy's answers at once)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._started = 0.0
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))

    def line(self) -> str:
        full = [secs for gen, secs in self.pauses if gen == 2]
        return (f"{len(self.pauses)} collections, {sum(s for _, s in self.pauses) * 1000:.0f} ms in all, full: "
                f"{len(full)} (largest {max(full, default=0.0) * 1000:.0f} ms)")  # fmt: skip


def paired(flood: dict[str, Outcomes], name: str, other: str, line: float) -> str:
    """Both proxies get the same arrivals at the same moment: a Premium request slow on both was slowed by
    something they share (the machine, this client), one slow on ``name`` alone by ``name``'s proxy."""
    a = sorted(flood[name].served.get("premium", []))
    b = sorted(flood[other].served.get("premium", []))
    if len(a) != len(b):
        return f"{name} vs {other}: different answer counts, not paired"
    both = sum(1 for x, y in zip(a, b, strict=True) if x[3] > line and y[3] > line)
    alone = sum(1 for x, y in zip(a, b, strict=True) if x[3] > line >= y[3])
    other_alone = sum(1 for x, y in zip(a, b, strict=True) if y[3] > line >= x[3])
    return (f"Premium over {line * 1000:.0f} ms in the flood: on both {name} and {other} {both}, on {name} only "
            f"{alone}, on {other} only {other_alone}")  # fmt: skip


def _fleet_files(logs: Path, name: str, ours: bool) -> dict[str, str]:
    manifest = yaml.safe_load(FLEET_FILE.read_text())
    manifest["router"].update(queue_routing=ours, vllm_priority=ours)
    tiers = {"tiers": {"free": {**LIMITS, "priority": 10, **({"fleet_busy_at": 2} if ours else {})},
                       "premium": {**LIMITS, "priority": 0}}}  # fmt: skip
    (logs / f"{name}-fleet.yaml").write_text(yaml.safe_dump(manifest))
    (logs / f"{name}-tiers.yaml").write_text(yaml.safe_dump(tiers))
    return {"HEARTCODE_FLEET_FILE": str(logs / f"{name}-fleet.yaml"),
            "HEARTCODE_TIERS_FILE": str(logs / f"{name}-tiers.yaml")}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="phase 1")
    parser.add_argument("--flood-seconds", type=float, default=60.0, help="each half of phase 2")
    parser.add_argument("--premium-rate", type=float, default=4.0, help="Premium req/s in phase 2")
    parser.add_argument("--gc-compare", action="store_true", help="add ours with Python's GC thresholds, and without the freeze too")
    parser.add_argument("--gc-threshold", default="", help="add ours with HEARTCODE_GC_THRESHOLD=gen0,gen1,gen2")
    parser.add_argument("--dump", type=Path, help="write every phase 2 answer (JSON) here, to trace slow ones")
    args = parser.parse_args()
    secs, secs2 = args.seconds, args.flood_seconds
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        logs = Path(tmp)
        procs = []
        try:
            backend, url = start_backend(logs, [
                {"key": FREE, "user_id": "b-free", "tier": "free", "age_verified": True},
                {"key": PREMIUM, "user_id": "b-premium", "tier": "premium", "age_verified": True},
            ])  # fmt: skip
            procs.append(backend)
            bases, sims = {}, {}
            watched = []
            variants = [("ours", True, {}), ("shuffle", False, {})]
            if args.gc_compare:
                variants.insert(1, ("ours-gc-off", True, {"HEARTCODE_GC_FREEZE": "off", "HEARTCODE_GC_THRESHOLD": "off"}))
                variants.insert(1, ("ours-gc-py", True, {"HEARTCODE_GC_THRESHOLD": "off"}))
            if args.gc_threshold:
                variants.insert(1, (f"ours-gc-{args.gc_threshold}", True, {"HEARTCODE_GC_THRESHOLD": args.gc_threshold}))
            for name, ours, extra in variants:
                (logs / name).mkdir()
                sim = SimFleet(logs / name).start()
                procs.append(sim.process)
                watched.append((name, "sim", sim.process))
                sim.control("*", **SERVER)
                sims[name] = sim
                config = render_test_config(logs / f"{name}.yaml", sim.endpoints, timeout=TIMEOUT,
                                            stream_timeout=TIMEOUT, routing_strategy="simple-shuffle")  # fmt: skip
                env = {"HEARTCODE_BACKEND_URL": url, **_fleet_files(logs, name, ours), **extra}
                proxy, bases[name] = start_proxy(f"proxy-{name}", config, logs, env)
                procs.append(proxy)
                watched.append((name, "proxy", proxy))
            print(f"machine: {machine()}")
            print(f"fleet: 4 servers x {SERVER}")
            asyncio.run(drive(bases, [("warmup", PREMIUM, 4.0, [4])], 3.0))
            gc.collect()
            gc.freeze()  # the client's own start-up heap out of its collections, as the gateway does
            gc.disable()  # and no collection of its own while it measures (as timeit does); enabled at the end
            client = ClientPauses()

            rate1 = 0.7 * 4 * BATCH_RATE / (sum(ANSWERS) / len(ANSWERS))
            print(f"\n## Phase 1: mixed lengths, Poisson {rate1:.1f} req/s for {secs:.0f} s (answers {ANSWERS})")
            p1 = asyncio.run(drive(bases, [("mixed", PREMIUM, rate1, list(ANSWERS))], secs))
            print("| routing | served | errors | p50 TTFT ms | p95 TTFT ms | p99 TTFT ms |\n|---|---|---|---|---|---|")
            for name, out in p1.items():
                codes = out.codes.get("mixed", Counter())
                print(f"| {name} | {codes['ok']} | {sum(codes.values()) - codes['ok']} | {out.pct('mixed', 50):.0f} |"
                      f" {out.pct('mixed', 95):.0f} | {out.pct('mixed', 99):.0f} |")
            ratio1 = p1["ours"].pct("mixed", 95) / p1["shuffle"].pct("mixed", 95)
            print(f"- ours p95 / shuffle p95: **{ratio1:.2f}** (target <= 0.6)")

            capacity = 4 * BATCH_RATE / FLOOD_TOKENS
            premium_rate = args.premium_rate
            time.sleep(3)
            print(f"\n## Phase 2: Premium {premium_rate} req/s (16 tokens) alone, then with a Free flood of "
                  f"{2 * capacity:.0f} req/s ({FLOOD_TOKENS} tokens; group capacity ~{capacity:.0f} req/s), {secs2:.0f} s each")
            alone = asyncio.run(drive(bases, [("premium", PREMIUM, premium_rate, [16])], secs2, seed=2))
            time.sleep(2)
            admins = {n: f"http://127.0.0.1:{sim.admin_port}" for n, sim in sims.items()}
            polls: dict[str, Polls] = {}
            tracked = {f"{n} {kind}": proc.pid for n, kind, proc in watched} | {"bench client": os.getpid()}
            gc0 = {n: gc_pauses(b) for n, b in bases.items()}
            client.pauses.clear()
            cpu0, wall0 = {k: cpu_seconds(v) for k, v in tracked.items()}, time.monotonic()
            flood = asyncio.run(drive(bases, [("premium", PREMIUM, premium_rate, [16]),
                                              ("free", FREE, 2 * capacity, [FLOOD_TOKENS])], secs2, seed=3,
                                      admins=admins, polls=polls))  # fmt: skip
            wall = time.monotonic() - wall0
            cpu = {k: (cpu_seconds(v) - cpu0[k]) / wall for k, v in tracked.items()}
            gc1 = {n: gc_pauses(b) for n, b in bases.items()}
            if args.dump:
                args.dump.write_text(json.dumps({f"{n} {half}": out[n].served for half, out in
                                                 (("alone", alone), ("flood", flood)) for n in bases}))  # fmt: skip
            samples = {n: (len(alone[n].ttft.get("premium", [])), len(flood[n].ttft.get("premium", []))) for n in bases}
            print("samples (Premium answers alone, in the flood): "
                  + ", ".join(f"{n} {a} / {f}" for n, (a, f) in samples.items()))
            print("| routing | Premium alone p99 ms | Premium in flood p50 / p99 ms | p99 ratio | Premium errors |"
                  " Free outcomes |\n|---|---|---|---|---|---|")
            for name in bases:
                a, f = alone[name], flood[name]
                pcodes = f.codes.get("premium", Counter())
                ratio = f.pct("premium", 99) / a.pct("premium", 99)
                print(f"| {name} | {a.pct('premium', 99):.0f} | {f.pct('premium', 50):.0f} / {f.pct('premium', 99):.0f}"
                      f" | **{ratio:.2f}** | {sum(pcodes.values()) - pcodes['ok']} | {dict(f.codes.get('free', {}))} |")
            print("- target: ours Premium p99 in flood <= 1.5x its unloaded p99; Free refused with fleet_busy")
            for name in bases:
                line = 1.5 * alone[name].pct("premium", 99) / 1000
                slow = sorted(round(t * 1000) for t in flood[name].ttft.get("premium", []) if t > line)
                print(f"- {name}: Premium in the flood over 1.5x unloaded p99: {len(slow)} of "
                      f"{len(flood[name].ttft.get('premium', []))} ({slow[:12]} ms)")
            for name in bases:
                print(f"- {name}: {split(flood[name], polls.get(name, []), 'premium', SLOTS)}")
            for name in bases:
                print(f"- garbage collections during the flood, {_gc_line(name, gc0[name], gc1[name])}")
            print(f"- garbage collections during the flood, bench client: {client.line()}")
            line = 1.5 * alone["ours"].pct("premium", 99) / 1000
            for other in bases:
                if other not in ("ours", "shuffle"):
                    print(f"- {paired(flood, 'ours', other, line)}")
            print(f"- CPU during the flood (cores, of {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
        finally:
            gc.enable()
            for proc in reversed(procs):
                proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
