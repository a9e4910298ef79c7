"""Benchmark the reverse tunnel: ours (paramiko) vs OpenSSH's own ``ssh -N -R`` vs direct loopback, and
recovery after the SSH server restarts: ours vs autossh.

    python bench/bench_tunnel.py [--mb 200] [--requests 1000] [--outages 0,5,12]

Needs root (sshd), openssh-server, openssh-client and autossh. Prints a table and writes a CSV to
bench/results/. Everything runs on loopback: one sshd with its own host key, local target servers.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import signal
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import free_port, free_ports, port_open, wait_until
from tests.tunnel.harness import HttpTarget, IdentEcho, SshServer, TunnelProcess, keygen

CIPHER = "aes128-gcm@openssh.com"  # what ours negotiates first; OpenSSH is pinned to the same


class Source:
    """On connect reads ``N\\n`` and sends N bytes: a download."""

    def __init__(self) -> None:
        block = os.urandom(1 << 20)

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline()
                if not line.strip():
                    return  # a readiness probe: connected and left
                left = int(line)
                view = memoryview(block)
                while left > 0:
                    n = min(left, len(view))
                    self.connection.sendall(view[:n])
                    left -= n
                self.connection.shutdown(socket.SHUT_WR)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def download(port: int, size: int) -> float:
    """MB/s for ``size`` bytes from the source behind ``port``."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(f"{size}\n".encode())
        got = 0
        buf = bytearray(1 << 20)
        while n := sock.recv_into(buf):
            got += n
    took = time.perf_counter() - t0
    assert got == size, (got, size)
    return size / took / 1e6


def small_requests(port: int, count: int) -> list[float]:
    """Latency (s) of ``count`` small GETs on one kept-alive connection."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            t0 = time.perf_counter()
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            buf = b""
            while not buf.endswith(b"ok"):
                buf += sock.recv(256)
            out.append(time.perf_counter() - t0)
    return out


def new_connections(port: int, count: int) -> list[float]:
    """Latency (s) of connect + one small GET, ``count`` times (where a Nagle stall would show)."""
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            buf = b""
            while not buf.endswith(b"ok"):
                buf += sock.recv(256)
        out.append(time.perf_counter() - t0)
    return out


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def openssh_forward(ssh: SshServer, key: Path, root: Path, forwards: list[tuple[int, int]],
                    autossh: bool = False, gatetime: str | None = "0") -> subprocess.Popen[bytes]:
    kh = root / "openssh_known_hosts"
    kh.write_text(ssh.known_hosts_line)
    argv = ["ssh", "-N", "-c", CIPHER, "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={kh}",
            "-o", "ServerAliveInterval=30", "-o", "ServerAliveCountMax=3", "-o", "ExitOnForwardFailure=yes",
            "-i", str(key), "-p", str(ssh.port)]
    for remote, target in forwards:
        argv += ["-R", f"127.0.0.1:{remote}:127.0.0.1:{target}"]
    argv.append("root@127.0.0.1")
    env = dict(os.environ)
    if autossh:
        # -M 0: ServerAlive instead of a monitor port, as the unit it replaces. GATETIME=0 (common in
        # systemd units) retries a failure soon after start instead of ending autossh; None keeps
        # autossh's defaults (GATETIME 30 s).
        argv = ["autossh", "-M", "0", *argv[1:]]
        env.pop("AUTOSSH_GATETIME", None)
        if gatetime is not None:
            env["AUTOSSH_GATETIME"] = gatetime
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End ``proc`` and its children (autossh's ssh): each was started in its own session."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(5)


def ident_ok(port: int, name: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.settimeout(0.5)
            return sock.makefile("rb").readline().decode().strip() == name
    except OSError:
        return False


def recovery(ssh: SshServer, probes: dict[str, Callable[[], bool]], outage: float) -> dict[str, float]:
    """Kill sshd and its sessions, wait ``outage`` s, start it; seconds from sshd listening to traffic."""
    ssh.kill()
    for name, probe in probes.items():
        wait_until(lambda p=probe: not p(), 10, f"{name} down")  # type: ignore[misc]
    time.sleep(outage)
    ssh.proc = None
    ssh.start()  # returns once the port accepts (polled every 0.1 s)
    back = time.monotonic()
    result: dict[str, float] = {}

    def watch(name: str, probe: Callable[[], bool]) -> None:
        while time.monotonic() - back < 120:
            if probe():
                result[name] = time.monotonic() - back
                return
            time.sleep(0.02)
        result[name] = float("inf")

    threads = [threading.Thread(target=watch, args=item) for item in probes.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return result


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    ssh_version = subprocess.run(["ssh", "-V"], check=False, capture_output=True, text=True).stderr.strip()
    import paramiko

    return (f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, Python {platform.python_version()}, "
            f"paramiko {paramiko.__version__}, {ssh_version}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="download size per run, MB")
    parser.add_argument("--runs", type=int, default=3, help="downloads per path (median reported)")
    parser.add_argument("--requests", type=int, default=1000, help="small requests per path")
    parser.add_argument("--outages", default="0,5,12",
                        help="sshd outages for the recovery test, s (autossh's backoff sleeps 2, 8, 18 ... s "
                             "after six quick failures, so its recovery depends on where an outage ends)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (runs its own sshd)", file=sys.stderr)
        return 2
    rows: list[tuple[str, str, float, str]] = []
    root = Path(tempfile.mkdtemp(prefix="bench-tunnel-"))
    key = keygen(root / "client_key")
    source, http, ident = Source(), HttpTarget(), IdentEcho("ident")
    remote = free_ports(7)
    ssh = SshServer(root / "sshd", free_port(), remote, [key]).start()
    ours = TunnelProcess(root, "ours", ssh, key, [("src", remote[0], source.port), ("http", remote[1], http.port),
                                                  ("ident", remote[4], ident.port)],
                         keepalive={"interval": 15, "count": 3}, reconnect={}, connect_timeout=5.0)
    procs: list[subprocess.Popen[bytes]] = []
    procs_autossh_default: subprocess.Popen[bytes] | None = None
    try:
        ours.start()
        ours.wait_up(15)
        # autossh with its defaults starts now, so it is past its 30 s gate time when sshd restarts.
        procs_autossh_default = openssh_forward(ssh, key, root, [(remote[6], ident.port)], autossh=True,
                                                gatetime=None)
        t_start = time.monotonic()
        procs.append(openssh_forward(ssh, key, root, [(remote[2], source.port), (remote[3], http.port)]))
        wait_until(lambda: port_open(remote[2]) and port_open(remote[3]), 15, "ssh -R up")
        paths = {"direct": (source.port, http.port), "ours (paramiko)": (remote[0], remote[1]),
                 "OpenSSH ssh -N -R": (remote[2], remote[3])}
        size = args.mb * 1_000_000
        for path, (src_port, http_port) in paths.items():
            speeds = [download(src_port, size) for _ in range(args.runs)]
            rows.append(("download_MBps", path, statistics.median(speeds), f"MB/s, median of {args.runs} x {args.mb} MB"))
            lat = small_requests(http_port, args.requests)
            rows.append(("small_request_p50_ms", path, statistics.median(lat) * 1e3, "ms, kept-alive connection"))
            rows.append(("small_request_p99_ms", path, pct(lat, 0.99) * 1e3, "ms, kept-alive connection"))
            conn = new_connections(http_port, 200)
            rows.append(("new_connection_p50_ms", path, statistics.median(conn) * 1e3, "ms, connect + GET"))
            rows.append(("new_connection_over_30ms", path, float(sum(t > 0.03 for t in conn)), "of 200 (Nagle stalls)"))
        for p in procs:
            kill_group(p)
        procs.clear()
        if time.monotonic() - t_start < 32:
            time.sleep(32 - (time.monotonic() - t_start))
        # Recovery: ours and autossh side by side on the same sshd.
        procs.append(openssh_forward(ssh, key, root, [(remote[5], ident.port)], autossh=True))
        wait_until(lambda: ident_ok(remote[5], "ident"), 15, "autossh up")
        procs.append(procs_autossh_default)
        wait_until(lambda: ident_ok(remote[6], "ident"), 15, "autossh (defaults) up")
        probes = {"ours (paramiko)": lambda: ident_ok(remote[4], "ident"),
                  "autossh, GATETIME=0": lambda: ident_ok(remote[5], "ident"),
                  "autossh, defaults": lambda: ident_ok(remote[6], "ident")}
        for outage in (float(x) for x in args.outages.split(",")):
            for name, secs in recovery(ssh, probes, outage).items():
                rows.append((f"recover_after_{outage:g}s_outage_s", name, secs, "s from sshd listening to traffic"))
            wait_until(lambda: all(p() for p in probes.values()), 120, "all back")
            time.sleep(1.0)
    finally:
        for p in procs:
            kill_group(p)
        if procs_autossh_default is not None:
            kill_group(procs_autossh_default)
        ours.stop()
        ssh.kill()
    desc = machine()
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"tunnel-{time.strftime('%Y%m%d-%H%M%S')}.csv"
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", "path", "value", "unit", "machine"])
        for metric, path, value, unit in rows:
            writer.writerow([metric, path, f"{value:.3f}", unit, desc])
    print(f"machine: {desc}\n")
    width = max(len(r[0]) for r in rows)
    pwidth = max(len(r[1]) for r in rows)
    print(f"{'metric':<{width}}  {'path':<{pwidth}}  {'value':>9}  unit")
    for metric, path, value, unit in rows:
        print(f"{metric:<{width}}  {path:<{pwidth}}  {value:>9.2f}  {unit}")
    print(f"\nwrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
