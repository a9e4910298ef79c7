"""Shared parts of the benchmarks: a cheap keep-alive HTTP load generator, percentiles, the result table.

Every benchmark measures its cases side by side in one run and prints ratios, because these machines
are noisy: absolute numbers from different runs do not compare, ratios within a run do.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


# A tier with limits high enough never to refuse a benchmark's load, for benchmarks that measure
# something other than the limits (their refusals would otherwise look like the gateway's speed).
UNLIMITED_TIERS = {"tiers": {"bench": {
    "rpm": 10_000_000, "tpm": 1_000_000_000, "daily_tokens": 1_000_000_000_000, "max_parallel": 10_000,
    "model_groups": ["heartcode-chat-sfw", "heartcode-chat-nsfw", "heartcode-embed"],
}}}  # fmt: skip


def machine() -> str:
    """One line naming the machine the numbers came from."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def request_bytes(host: str, port: int, path: str, body: Mapping[str, object], headers: Mapping[str, str]) -> bytes:
    payload = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", f"host: {host}:{port}", "content-type: application/json",
            f"content-length: {len(payload)}", *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return status
    start = lower.find(b"content-length:")
    if start < 0:
        await reader.read()  # read to close
        return status
    start += len(b"content-length:")
    await reader.readexactly(int(lower[start : lower.index(b"\r\n", start)]))
    return status


@dataclass
class Result:
    """One case's numbers."""

    name: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


async def _worker(host: str, port: int, payload: bytes, deadline: float, lat: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            writer.write(payload)
            status = await _read_response(reader)
            if status == 200:
                lat.append(time.perf_counter() - t)
            else:
                errors.append(status)
    finally:
        writer.close()


async def _run(
    host: str, port: int, payload: bytes, concurrency: int, seconds: float
) -> tuple[list[float], list[int], float]:
    lat: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(_worker(host, port, payload, deadline, lat, errors) for _ in range(concurrency)))
    return lat, errors, time.perf_counter() - started


def _target(url: str, path: str, body: Mapping[str, object], headers: Mapping[str, str] | None) -> tuple[str, int, bytes]:
    host, port = url.split("://", 1)[1].rstrip("/").rsplit(":", 1)
    return host, int(port), request_bytes(host, int(port), path, body, headers or {})


def load(
    name: str, url: str, path: str, body: Mapping[str, object], *, headers: Mapping[str, str] | None = None,
    concurrency: int = 1, seconds: float = 5.0, warmup: float = 0.5,
) -> Result:  # fmt: skip
    """Drive ``POST url+path`` from ``concurrency`` keep-alive connections for ``seconds``."""
    return load_together(
        {name: url}, path, body, headers=headers, concurrency=concurrency, seconds=seconds, warmup=warmup
    )[name]


def load_together(
    urls: Mapping[str, str], path: str, body: Mapping[str, object], *, headers: Mapping[str, str] | None = None,
    concurrency: int = 1, seconds: float = 5.0, warmup: float = 0.5,
) -> dict[str, Result]:  # fmt: skip
    """Drive every ``name -> url`` at the same time, ``concurrency`` connections each.

    Servers pinned to one CPU then share it, so each one's share of the completed requests is the
    inverse of its CPU cost per request, and whatever else the machine does slows all of them alike:
    the ratio of two results is far steadier than that of two runs one after the other.
    """
    targets = {name: _target(url, path, body, headers) for name, url in urls.items()}

    async def run(conc: int, secs: float) -> list[tuple[list[float], list[int], float]]:
        return list(await asyncio.gather(*(_run(h, p, pay, conc, secs) for h, p, pay in targets.values())))

    if warmup:
        asyncio.run(run(min(concurrency, 4), warmup))
    results = asyncio.run(run(concurrency, seconds))
    return {name: Result(name, concurrency, len(lat), len(err), took, lat)
            for name, (lat, err, took) in zip(targets, results, strict=True)}  # fmt: skip


def table(title: str, rows: Sequence[Result], ratios: Sequence[tuple[str, float]] = (), csv_name: str = "") -> str:
    """Print and return a result table (and write it as CSV under bench/results/)."""
    lines = [f"## {title}", f"machine: {machine()}", "",
             "| case | conc | req/s | p50 ms | p95 ms | p99 ms | errors |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r.name} | {r.concurrency} | {r.rps:,.1f} | {r.pct(50):.2f} | {r.pct(95):.2f} | {r.pct(99):.2f} | {r.errors} |"
        )
    if ratios:
        lines += ["", *(f"- {label}: **{value:.3f}**" for label, value in ratios)]
    text = "\n".join(lines)
    print(text, flush=True)
    if csv_name:
        RESULTS.mkdir(parents=True, exist_ok=True)
        with open(RESULTS / csv_name, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["case", "concurrency", "rps", "p50_ms", "p95_ms", "p99_ms", "errors"])
            for r in rows:
                out.writerow([r.name, r.concurrency, f"{r.rps:.2f}", f"{r.pct(50):.3f}", f"{r.pct(95):.3f}",
                              f"{r.pct(99):.3f}", r.errors])  # fmt: skip
    return text


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def cpu_family(pid: int) -> dict[int, float]:
    """``pid`` and its descendants (a proxy's worker processes), each with the CPU seconds it used so far."""
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(fields[1])
            used[int(entry)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    family, grew = {pid}, True
    while grew:
        more = {p for p, parent in parents.items() if parent in family} - family
        family |= more
        grew = bool(more)
    return {p: used.get(p, 0.0) for p in family}


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its descendants."""
    return sum(cpu_family(pid).values())


def unpin_all(pid: int, cpus: set[int]) -> None:
    """Let ``pid``, its threads and its descendants run on ``cpus`` (they were started pinned)."""
    for member in cpu_family(pid):
        try:
            for task in os.listdir(f"/proc/{member}/task"):
                os.sched_setaffinity(int(task), cpus)
        except OSError:
            continue
