"""Several cloud hosts: two real OpenSSH sshd's, each with its own host key, port and listen address,
fed by one tunnel process whose config lists both under ``hosts:``.

sshd A lets the tunnel listen on 127.0.0.1, sshd B on 127.0.0.2 (both loopback on this machine, so the
same remote port can be forwarded on both, as on two real cloud hosts). Every forward reaches the
on-prem HTTP target through each host; sshd B killed, requests through A keep succeeding all through the
outage and A's session is untouched; B comes back on its own once its sshd returns.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import PYTHON, free_port, free_ports, wait_until

from .harness import HttpTarget, SshServer, TunnelProcess, keygen

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists(),
                                reason="needs root and OpenSSH sshd (apt-get install openssh-server)")

BIND = {"cloud-a": "127.0.0.1", "cloud-b": "127.0.0.2"}


@dataclass
class Hosts:
    root: Path
    ssh: dict[str, SshServer]
    http: HttpTarget
    ports: list[int]  # remote ports, forwarded on both hosts
    tunnel: TunnelProcess
    notify: socket.socket
    metrics_port: int

    def url(self, host: str, port: int | None = None) -> str:
        return f"http://{BIND[host]}:{port or self.ports[0]}/"


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    root = tmp_path_factory.mktemp("hosts")
    key = keygen(root / "client_key")
    http = HttpTarget()
    ports = free_ports(2)
    ssh = {name: SshServer(root / name, free_port(), ports, [key], listen_host=bind).start()
           for name, bind in BIND.items()}
    assert ssh["cloud-a"].host_key.read_bytes() != ssh["cloud-b"].host_key.read_bytes()
    notify_path = root / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    metrics = free_port()
    tunnel = TunnelProcess(root, "multi", {n: (s, BIND[n]) for n, s in ssh.items()}, key,
                           [("http", ports[0], http.port), ("http2", ports[1], http.port)],
                           metrics_listen=f"127.0.0.1:{metrics}",
                           env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000"})
    try:
        tunnel.start()
        tunnel.wait_up(20)
        yield Hosts(root, ssh, http, ports, tunnel, notify, metrics)
    finally:
        tunnel.stop()
        for server in ssh.values():
            server.kill()
        http.close()
        notify.close()


def _get(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).text == "ok"
    except httpx.HTTPError:
        return False


def test_forwards_open_on_both_hosts_and_reach_the_target(hosts: Hosts) -> None:
    for name in BIND:
        for port in hosts.ports:
            assert httpx.get(hosts.url(name, port), timeout=5).text == "ok", (name, port)
    # Each host has its own session, on its own sshd.
    for name, server in hosts.ssh.items():
        assert hosts.tunnel.host_status(name)["connects"] == 1
        assert "Accepted publickey" in server.log()


def test_systemd_hears_ready_once_with_every_host_named(hosts: Hosts) -> None:
    hosts.notify.settimeout(0.2)
    messages: list[str] = []
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        try:
            messages.append(hosts.notify.recv(4096).decode())
        except TimeoutError:
            pass
    ready = [m for m in messages if "READY=1" in m]
    assert len(ready) == 1, messages
    assert "cloud-a up: 2/2 forwards up" in ready[0] and "cloud-b up: 2/2 forwards up" in ready[0], ready
    assert sum("WATCHDOG=1" in m for m in messages) >= 2, messages


def test_status_rows_and_metrics_name_each_host(hosts: Hosts) -> None:
    _get(hosts.url("cloud-b"))
    wait_until(lambda: hosts.tunnel.host_status("cloud-b")["forwards"][0]["connections"] >= 1, 3,
               "connection counted in the status file")
    out = subprocess.run([PYTHON, "-m", "litellm_cloud.tunnel", "status", "--config", str(hosts.tunnel.config)],
                         check=False, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr + out.stdout
    lines = out.stdout.splitlines()
    assert lines[0].startswith("host cloud-a: up since") and lines[1].startswith("host cloud-b: up since")
    for name in BIND:
        for fwd, port in zip(("http", "http2"), hosts.ports, strict=True):
            assert any(line.split()[:4] == [name, fwd, str(port), f"127.0.0.1:{hosts.http.port}"]
                       and " up " in line for line in lines), (name, fwd, out.stdout)
    text = httpx.get(f"http://127.0.0.1:{hosts.metrics_port}/metrics", timeout=5).text
    for name in BIND:
        assert f'litellm_tunnel_up{{host="{name}"}} 1' in text
        assert f'litellm_tunnel_forward_up{{host="{name}",forward="http",remote_port="{hosts.ports[0]}"}} 1' in text


def test_one_host_down_does_not_disturb_the_other_and_comes_back(hosts: Hosts) -> None:
    """Last: it kills and restarts sshd B."""
    tunnel, a_before = hosts.tunnel, hosts.tunnel.host_status("cloud-a")["connects"]
    b_before = tunnel.host_status("cloud-b")["connects"]
    hosts.ssh["cloud-b"].kill()
    wait_until(lambda: tunnel.host_status("cloud-b")["state"] != "up", 5, "tunnel noticed sshd B gone")
    served, failed = 0, 0
    outage_end = time.monotonic() + 4.0  # long enough for B to go through several backoff steps
    while time.monotonic() < outage_end:
        if _get(hosts.url("cloud-a")):
            served += 1
        else:
            failed += 1
        assert not _get(hosts.url("cloud-b")) or tunnel.host_status("cloud-b")["state"] == "up"
    assert failed == 0 and served > 20, (served, failed)
    assert tunnel.host_up("cloud-a") and tunnel.host_status("cloud-a")["connects"] == a_before
    out = subprocess.run([PYTHON, "-m", "litellm_cloud.tunnel", "status", "--config", str(tunnel.config)],
                         check=False, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "host cloud-b: backoff" in out.stdout, out.stdout  # degraded
    hosts.ssh["cloud-b"].start()
    t0 = time.monotonic()
    wait_until(lambda: _get(hosts.url("cloud-b")), 5, "traffic through host B again", interval=0.02)
    took = time.monotonic() - t0
    print(f"served through cloud-a during a 4 s outage of cloud-b: {served}; cloud-b back after {took:.2f} s")
    assert took < 2.0, took
    tunnel.wait_up(5)
    assert tunnel.host_status("cloud-b")["connects"] == b_before + 1
    assert tunnel.host_status("cloud-a")["connects"] == a_before  # A never reconnected
