"""A network partition, made with a network namespace: the sshd lives behind a veth pair, and iptables
DROP rules inside the namespace cut the link silently (no RST, no FIN), as a real outage does.

The tunnel must notice within keepalive interval x count, and come back once the link heals. The test
turns TCP_USER_TIMEOUT off (``tcp_user_timeout: 0``; by default it equals interval x count and would end
the connection at the same moment), so only the keepalive that wants a reply can notice in time, and
the log must say it did. Skipped, with the reason, where namespaces or iptables are not available.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import PYTHON, free_ports, wait_until

from .harness import IdentEcho, SshServer, TunnelProcess, keygen

KEEPALIVE = {"interval": 0.5, "count": 3}  # a dead link must be noticed within 1.5 s


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=False, capture_output=True, text=True, timeout=20)


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in ("ip", "iptables", "/usr/sbin/sshd"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install iproute2 iptables openssh-server)"
    probe = f"lcprobe{os.getpid() % 100000}"
    made = _run("ip", "netns", "add", probe)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:
        rule = _run("ip", "netns", "exec", probe, "iptables", "-A", "INPUT", "-j", "ACCEPT")
        if rule.returncode != 0:
            return f"iptables does not work in a namespace: {rule.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", probe)
    return None


class Netns:
    """Namespace ``name`` linked to the root namespace by a veth pair: 10.231.N.1 here, .2 there."""

    def __init__(self) -> None:
        n = os.getpid() % 200 + 20
        self.name = f"lctun{os.getpid()}"
        self.outer, self.inner = f"lcto{os.getpid() % 100000}", f"lcti{os.getpid() % 100000}"
        self.here, self.there = f"10.231.{n}.1", f"10.231.{n}.2"
        steps = [
            ("ip", "netns", "add", self.name),
            ("ip", "link", "add", self.outer, "type", "veth", "peer", "name", self.inner),
            ("ip", "link", "set", self.inner, "netns", self.name),
            ("ip", "addr", "add", f"{self.here}/30", "dev", self.outer),
            ("ip", "link", "set", self.outer, "up"),
            ("ip", "netns", "exec", self.name, "ip", "addr", "add", f"{self.there}/30", "dev", self.inner),
            ("ip", "netns", "exec", self.name, "ip", "link", "set", self.inner, "up"),
            ("ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _run(*step)
            if done.returncode != 0:
                self.close()
                raise RuntimeError(f"{' '.join(step)}: {done.stderr}")

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return _run("ip", "netns", "exec", self.name, *argv)

    def partition(self, on: bool) -> None:
        action = "-A" if on else "-D"
        for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
            done = self.exec("iptables", action, chain, flag, self.inner, "-j", "DROP")
            assert done.returncode == 0, done.stderr

    def ident_via(self, port: int) -> str | None:
        """Connect to ``127.0.0.1:port`` inside the namespace (the cloud side) and read the greeting."""
        code = (f"import socket; s = socket.create_connection(('127.0.0.1', {port}), 2); s.settimeout(2); "
                "print(s.makefile().readline().strip())")
        done = self.exec(PYTHON, "-c", code)
        return done.stdout.strip() if done.returncode == 0 else None

    def close(self) -> None:
        _run("ip", "netns", "del", self.name)
        _run("ip", "link", "del", self.outer)  # gone with the namespace already, normally


@pytest.fixture(scope="module")
def netns() -> Iterator[Netns]:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    ns = Netns()
    try:
        yield ns
    finally:
        ns.close()


def test_partition_noticed_within_interval_x_count_and_recovered(netns: Netns, tmp_path: Path) -> None:
    key = keygen(tmp_path / "client_key")
    target = IdentEcho("gpu-behind-partition")
    remote = free_ports(1)[0]  # free here; the namespace's loopback is empty anyway
    ssh = SshServer(tmp_path / "sshd", 2222, [remote], [key], host=netns.there, netns=netns.name).start()
    tunnel = TunnelProcess(tmp_path, "part", ssh, key, [("gpu", remote, target.port)], keepalive=KEEPALIVE,
                           tcp_user_timeout=0)
    try:
        tunnel.start()
        tunnel.wait_up(15)
        assert netns.ident_via(remote) == "gpu-behind-partition"

        netns.partition(True)
        t0 = time.monotonic()
        wait_until(lambda: tunnel.status()["state"] != "up", 6, "the tunnel noticing the partition", 0.02)
        noticed = time.monotonic() - t0
        reason = tunnel.status()["last_error"] or ""
        deadline = KEEPALIVE["interval"] * KEEPALIVE["count"]
        # The keepalive noticed it, not the transport dying under a TCP timeout ("connection ... lost").
        assert "no keepalive reply" in reason, reason
        assert f"no keepalive reply from [{netns.there}]:2222" in tunnel.proc.log_text()
        # + the loop's check interval and status-file polling, with room for a loaded machine.
        assert noticed <= deadline + 0.75, f"noticed after {noticed:.2f}s, deadline {deadline}s"
        time.sleep(2.0)  # stay partitioned a while: reconnects time out meanwhile

        netns.partition(False)
        t1 = time.monotonic()
        # sshd may still hold the port for the half-open old session: it ends when our retransmitted FIN
        # gets through, or when the helper ends it. Either way traffic must flow again soon.
        wait_until(lambda: netns.ident_via(remote) == "gpu-behind-partition", 10, "traffic after healing", 0.1)
        recovered = time.monotonic() - t1
        # At most one connect timeout (2 s; the kernel resends the SYN after 1 s) plus a handshake.
        assert recovered < 3.5, recovered
        # The status file is written on its own beat: traffic can flow before it counts the new connect.
        wait_until(lambda: tunnel.status()["connects"] >= 2, 3, "the status file counting the reconnect", 0.05)
        print(f"partition noticed after {noticed:.2f}s (deadline {deadline}s); recovered {recovered:.2f}s after healing")
    finally:
        tunnel.stop()
        ssh.kill()
        target.close()
