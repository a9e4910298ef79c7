"""The tunnel against a real OpenSSH sshd on loopback: routing, integrity, streaming, recovery, refusals.

One sshd (own host key, authorized_keys with the forced-command helper, ``PermitListen`` for the test
ports) and one long-lived tunnel serve most tests; tests that need their own tunnel start one.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import PYTHON, free_port, free_ports, port_open, wait_until

from .harness import FAST, HttpTarget, IdentEcho, SshServer, TunnelProcess, keygen

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists(),
                                reason="needs root and OpenSSH sshd (apt-get install openssh-server)")


@dataclass
class Env:
    root: Path
    ssh: SshServer
    key: Path
    other_key: Path
    idents: list[IdentEcho]
    http: HttpTarget
    ports: list[int]  # remote ports of the main tunnel: one per ident, http, one to a dead target
    spare: list[int]  # permitted remote ports for tests that need their own forwards
    tunnel: TunnelProcess
    dead_target: int = 0
    metrics_port: int = 0  # the main tunnel serves /metrics here (metrics_listen)

    def forwards(self) -> list[tuple[str, int, int]]:
        fwds = [(t.name, p, t.port) for t, p in zip(self.idents, self.ports, strict=False)]
        n = len(self.idents)
        return fwds + [("http", self.ports[n], self.http.port), ("dead", self.ports[n + 1], self.dead_target)]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("tunnel")
    key, other = keygen(root / "client_key"), keygen(root / "other_key")
    idents = [IdentEcho(f"gpu-{i}") for i in range(4)]
    http = HttpTarget()
    permitted = free_ports(16)
    ports, spare = permitted[:6], permitted[6:]
    ssh = SshServer(root / "sshd", free_port(), permitted, [key]).start()
    dead, metrics = free_ports(2)
    environment = Env(root, ssh, key, other, idents, http, ports, spare, None, dead, metrics)  # type: ignore[arg-type]
    environment.tunnel = TunnelProcess(root, "main", ssh, key, environment.forwards(),
                                       metrics_listen=f"127.0.0.1:{metrics}").start()
    try:
        environment.tunnel.wait_up(15)
        yield environment
    finally:
        environment.tunnel.stop()
        ssh.kill()
        for t in idents:
            t.close()
        http.close()


def ident_via(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return sock.makefile("rb").readline().decode().strip()


def test_each_remote_port_reaches_its_own_target(env: Env) -> None:
    for name, remote, _ in env.forwards()[:4]:
        assert ident_via(remote) == name
    # All four again in a different order, interleaved on open connections: no last-handler-wins.
    socks = [socket.create_connection(("127.0.0.1", p), timeout=5) for p in reversed(env.ports[:4])]
    try:
        names = [s.makefile("rb").readline().decode().strip() for s in socks]
    finally:
        for s in socks:
            s.close()
    assert names == [t.name for t in reversed(env.idents)]


def test_50_mb_each_way_arrive_intact_and_half_close_passes(env: Env) -> None:
    payload = os.urandom(50 * 1024 * 1024)
    with socket.create_connection(("127.0.0.1", env.ports[0]), timeout=30) as sock:
        reader = sock.makefile("rb")
        assert reader.readline() == b"gpu-0\n"

        def send() -> None:
            view = memoryview(payload)
            for i in range(0, len(view), 1 << 20):
                sock.sendall(view[i:i + (1 << 20)])
            sock.shutdown(socket.SHUT_WR)  # the echo target must see EOF through the tunnel ...

        sender = threading.Thread(target=send)
        sender.start()
        digest, received = hashlib.sha256(), 0
        while chunk := reader.read1(1 << 20):  # ... and its own EOF must come back to us
            digest.update(chunk)
            received += len(chunk)
        sender.join()
    assert received == len(payload)
    assert digest.hexdigest() == hashlib.sha256(payload).hexdigest()


def test_sse_events_arrive_unbuffered(env: Env) -> None:
    with socket.create_connection(("127.0.0.1", env.ports[4]), timeout=10) as sock:
        sock.sendall(b"GET /sse?n=20&gap=0.03 HTTP/1.1\r\nhost: x\r\n\r\n")
        reader = sock.makefile("rb")
        lags = []
        for line in reader:
            if line.startswith(b"data: "):
                sent = float(line.split()[2])
                lags.append(time.monotonic() - sent)
    assert len(lags) == 20
    # Events are readable within a few ms of being written: nothing waits for a buffer to fill (that
    # would hold events back by a whole gap, 30 ms, or more). A couple may be late on a busy machine.
    assert statistics.median(lags) < 0.010, lags
    assert sum(lag > 0.025 for lag in lags) <= 2, lags


def test_new_connections_do_not_stall(env: Env) -> None:
    """Nagle: without TCP_NODELAY on both sides ~45% of new connections stalled ~40 ms."""
    times = []
    for _ in range(40):
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", env.ports[4]), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            reply = b""
            while not reply.endswith(b"ok"):  # headers and body come in two writes
                chunk = sock.recv(100)
                assert chunk, reply
                reply += chunk
        times.append(time.monotonic() - t0)
    slow = [t for t in times if t > 0.030]
    # Stalls hit most connections when they happen (87-97 of 100 without our TCP_NODELAY); a few slow
    # ones on a loaded machine are scheduling, not Nagle.
    assert len(slow) <= 4, sorted(times)[-5:]


def test_dead_target_closes_that_connection_only(env: Env) -> None:
    with socket.create_connection(("127.0.0.1", env.ports[5]), timeout=5) as sock:
        sock.settimeout(5)
        assert sock.recv(10) == b""  # closed at once: the target refused
    assert ident_via(env.ports[1]) == "gpu-1"
    wait_until(lambda: next(f for f in env.tunnel.status()["forwards"] if f["name"] == "dead")["failed_connections"] >= 1,
               3, "failure counted")


def test_status_command_shows_each_forward(env: Env) -> None:
    ident_via(env.ports[2])
    time.sleep(1.1)  # the status file is rewritten at least every second
    out = subprocess.run([PYTHON, "-m", "litellm_cloud.tunnel", "status", "--config", str(env.tunnel.config)],
                         check=False, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr + out.stdout
    lines = out.stdout.splitlines()
    assert lines[0].startswith("tunnel: up since")
    for name, remote, target in env.forwards():
        row = next(line for line in lines if line.startswith(name + " "))
        assert f" {remote} " in row and f"127.0.0.1:{target}" in row and " up " in row
    row = next(line for line in lines if line.startswith("gpu-2 "))
    assert row.split()[-2:] != ["0", "B"]  # bytes moved are shown
    prom = subprocess.run([PYTHON, "-m", "litellm_cloud.tunnel", "status", "--status-file",
                           str(env.tunnel.status_file), "--format", "prometheus"],
                          check=False, capture_output=True, text=True, timeout=30)
    assert "litellm_tunnel_up 1" in prom.stdout
    assert f'litellm_tunnel_forward_up{{forward="gpu-3",remote_port="{env.ports[3]}"}} 1' in prom.stdout


def _scrape(env: Env) -> dict[str, float]:
    reply = httpx.get(f"http://127.0.0.1:{env.metrics_port}/metrics", timeout=5)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in reply.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_tunnel_process_serves_its_own_metrics_live(env: Env) -> None:
    """metrics_listen: the running tunnel answers GET /metrics from its live state (no status file)."""
    remote = env.ports[3]
    lab = f'forward="gpu-3",remote_port="{remote}"'
    before = _scrape(env)
    assert before["litellm_tunnel_up"] == 1
    assert before[f"litellm_tunnel_forward_up{{{lab}}}"] == 1
    assert before["litellm_tunnel_reconnects_total"] == 0
    ident_via(remote)  # the target says "gpu-3\n": 6 bytes from the target

    def moved() -> bool:
        now = _scrape(env)
        return (now[f'litellm_tunnel_forward_bytes_total{{{lab},direction="from_target"}}']
                - before[f'litellm_tunnel_forward_bytes_total{{{lab},direction="from_target"}}'] == 6
                and now[f"litellm_tunnel_forward_connections_total{{{lab}}}"]
                == before[f"litellm_tunnel_forward_connections_total{{{lab}}}"] + 1)

    wait_until(moved, 2, "bytes and connection counted on /metrics", interval=0.02)
    assert f"metrics: http://127.0.0.1:{env.metrics_port}/metrics" in env.tunnel.proc.log_text()


def ssh_holder(env: Env, port: int, target: int) -> subprocess.Popen[bytes]:
    """OpenSSH's own client holding remote ``port`` (no command, so the helper does not run)."""
    kh = env.root / "holder_known_hosts"
    kh.write_text(env.ssh.known_hosts_line)
    proc = subprocess.Popen(
        ["ssh", "-N", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={kh}", "-o", "ExitOnForwardFailure=yes",
         "-i", str(env.key), "-p", str(env.ssh.port), "-R", f"127.0.0.1:{port}:127.0.0.1:{target}",
         "root@127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_until(lambda: port_open(port), 10, "ssh -R holder listening")
    return proc


def test_port_held_by_another_session_is_retried_without_dropping_others(env: Env) -> None:
    free_p, held_p = env.spare[0], env.spare[1]
    holder = ssh_holder(env, held_p, env.idents[3].port)
    tunnel = TunnelProcess(env.root, "held", env.ssh, env.key,
                           [("a", free_p, env.idents[0].port), ("b", held_p, env.idents[1].port)],
                           session_command="")
    try:
        tunnel.start()
        wait_until(lambda: tunnel.states() == {"a": "up", "b": "refused"}, 10, "a up, b refused")
        assert ident_via(free_p) == "gpu-0"
        assert ident_via(held_p) == "gpu-3"  # still the holder's
        holder.kill()
        holder.wait(5)
        t0 = time.monotonic()
        tunnel.wait_up(5)
        assert time.monotonic() - t0 < 2.0
        assert ident_via(held_p) == "gpu-1"
        assert tunnel.status()["reconnects"] == 0  # recovered on the same connection
    finally:
        holder.kill()
        tunnel.stop()


def test_own_stale_session_is_ended_by_the_helper_at_once(env: Env) -> None:
    fwds = [("s1", env.spare[2], env.idents[0].port), ("s2", env.spare[3], env.idents[1].port)]
    old = TunnelProcess(env.root, "stale-old", env.ssh, env.key, fwds, client_id="site-a").start()
    new = TunnelProcess(env.root, "stale-new", env.ssh, env.key, fwds, client_id="site-a")
    try:
        old.wait_up(10)
        old.proc.signal(signal.SIGSTOP)  # the old on-prem side vanishes without a FIN
        t0 = time.monotonic()
        new.start()
        new.wait_up(10)
        took = time.monotonic() - t0
        assert "ended=" in new.proc.log_text() and "ended=none" not in new.proc.log_text()
        # Up on its first connection, in the time a Python start-up and a handshake take; without the
        # helper sshd would hold the ports for as long as the frozen session lives (forever here).
        assert new.status()["connects"] == 1
        assert took < 5.0, took
        assert ident_via(env.spare[2]) == "gpu-0"
    finally:
        old.proc.kill()
        new.stop()


def _tunnel_error(tunnel: TunnelProcess, needle: str) -> str:
    wait_until(lambda: needle in (tunnel.status().get("last_error") or ""), 10, f"error {needle!r}")
    return str(tunnel.status()["last_error"])


def test_changed_host_key_is_refused_with_a_clear_message(env: Env) -> None:
    impostor = keygen(env.root / "impostor_host")
    line = env.ssh.known_hosts_line.split()[0] + " " + " ".join(Path(f"{impostor}.pub").read_text().split()[:2])
    tunnel = TunnelProcess(env.root, "badhost", env.ssh, env.key, [("x", env.spare[4], env.idents[0].port)],
                           known_hosts=line + "\n")
    accepted, preauth = env.ssh.log().count("Accepted publickey"), env.ssh.log().count("[preauth]")
    try:
        tunnel.start()
        error = _tunnel_error(tunnel, "HOST KEY MISMATCH")
        assert "SHA256:" in error and str(tunnel.root / "known_hosts") in error
        assert "will not fix itself" in tunnel.proc.log_text()
        # We hung up before authenticating: an impostor never sees our key signature, no session starts.
        wait_until(lambda: env.ssh.log().count("[preauth]") > preauth, 5, "sshd logging the pre-auth hang-up")
        assert env.ssh.log().count("Accepted publickey") == accepted, env.ssh.log()[-2000:]
        st = tunnel.status()
        assert st["connects"] == 0 and [f["state"] for f in st["forwards"]] == ["down"], st
    finally:
        tunnel.stop()


def test_unknown_host_key_is_refused(env: Env) -> None:
    tunnel = TunnelProcess(env.root, "nohost", env.ssh, env.key, [("x", env.spare[4], env.idents[0].port)],
                           known_hosts="")
    try:
        tunnel.start()
        assert "refusing to trust an unknown key" in _tunnel_error(tunnel, "is not in")
    finally:
        tunnel.stop()


def test_wrong_client_key_is_refused_with_a_clear_message(env: Env) -> None:
    tunnel = TunnelProcess(env.root, "badkey", env.ssh, env.other_key, [("x", env.spare[4], env.idents[0].port)])
    try:
        tunnel.start()
        error = _tunnel_error(tunnel, "refused our key")
        assert "authorized_keys" in error and "'root'" in error
    finally:
        tunnel.stop()


def test_strict_mode_gives_up_a_connection_with_a_refused_forward(env: Env) -> None:
    not_permitted = free_port()
    # The second failed session waits >= 4 s (initial 5 s, jitter 20%): long enough to look at the ports.
    slow = {**FAST["reconnect"], "initial": 5.0, "cap": 5.0, "stable_after": 60.0}
    tunnel = TunnelProcess(env.root, "strict", env.ssh, env.key,
                           [("ok", env.spare[5], env.idents[0].port), ("no", not_permitted, env.idents[1].port)],
                           strict=True, reconnect=slow)
    try:
        tunnel.start()
        assert "strict mode: forward no refused" in _tunnel_error(tunnel, "strict mode")
        wait_until(lambda: tunnel.status()["connects"] >= 2 and tunnel.status()["state"] == "backoff", 10,
                   "second strict failure, then backoff")
        # Like ExitOnForwardFailure: the whole connection went, so the forward that was granted is gone too
        # (sshd needs a moment to see our close; the backoff lasts >= 4 s, so a kept connection would fail).
        t0 = time.monotonic()
        wait_until(lambda: not port_open(env.spare[5]), 1.5, "the granted forward's port closed", 0.02)
        assert tunnel.status()["state"] == "backoff" and time.monotonic() - t0 < 1.5
        assert tunnel.status()["forwards"][0]["refusals"] == 0  # "ok" was granted each time, then dropped
    finally:
        tunnel.stop()


def test_sigterm_frees_the_ports_at_once_and_systemd_hears_everything(env: Env) -> None:
    notify_path = env.root / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(0.2)
    ports = env.spare[6:8]
    tunnel = TunnelProcess(env.root, "term", env.ssh, env.key,
                           [("t1", ports[0], env.idents[0].port), ("t2", ports[1], env.idents[1].port)],
                           env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"})
    messages: list[str] = []

    def drain(until: float) -> None:
        while time.monotonic() < until:
            try:
                messages.append(notify.recv(4096).decode())
            except TimeoutError:
                pass

    try:
        tunnel.start()
        tunnel.wait_up(10)
        drain(time.monotonic() + 0.6)
        ready = [m for m in messages if "READY=1" in m]
        assert len(ready) == 1 and "STATUS=up: 2/2 forwards up" in ready[0], messages
        assert sum("WATCHDOG=1" in m for m in messages) >= 2, messages
        tunnel.proc.signal(signal.SIGTERM)
        t0 = time.monotonic()
        wait_until(lambda: not port_open(ports[0]) and not port_open(ports[1]), 2, "ports closed")
        freed = time.monotonic() - t0
        with socket.socket() as probe:  # free for anyone to bind now
            probe.bind(("127.0.0.1", ports[0]))
        assert tunnel.proc.proc is not None and tunnel.proc.proc.wait(5) == 0
        drain(time.monotonic() + 0.3)
        assert any("STOPPING=1" in m for m in messages)
        assert freed < 1.0, freed
    finally:
        tunnel.stop()
        notify.close()


def test_sshd_killed_and_restarted_is_back_within_2s(env: Env) -> None:
    """Last: it restarts the shared sshd. The main tunnel notices and returns fast after an outage."""
    tunnel = env.tunnel
    before = tunnel.status()["connects"]
    env.ssh.kill()
    wait_until(lambda: tunnel.status()["state"] != "up", 5, "tunnel noticed sshd gone")
    time.sleep(4.0)  # an outage long enough that autossh would be sleeping in its backoff
    env.ssh.start()
    t0 = time.monotonic()
    wait_until(lambda: _ident_or_none(env.ports[0]) == "gpu-0", 5, "traffic through the tunnel again")
    took = time.monotonic() - t0
    assert took < 2.0, took
    tunnel.wait_up(5)
    assert tunnel.status()["connects"] == before + 1
    assert _scrape(env)["litellm_tunnel_reconnects_total"] == before  # the metrics server outlived the session


def _ident_or_none(port: int) -> str | None:
    try:
        return ident_via(port)
    except OSError:
        return None
