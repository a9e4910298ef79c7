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

import pytest

from tests.support import PYTHON, free_port, free_ports, port_open, wait_until

from .harness import HttpTarget, IdentEcho, SshServer, TunnelProcess, keygen

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
    ports: list[int]  # remote ports sshd permits; the main tunnel uses the first len(idents) + 1
    spare: list[int]  # permitted remote ports for tests that need their own forwards
    tunnel: TunnelProcess

    def forwards(self) -> list[tuple[str, int, int]]:
        fwds = [(t.name, p, t.port) for t, p in zip(self.idents, self.ports, strict=False)]
        return fwds + [("http", self.ports[len(self.idents)], self.http.port)]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("tunnel")
    key, other = keygen(root / "client_key"), keygen(root / "other_key")
    idents = [IdentEcho(f"gpu-{i}") for i in range(4)]
    http = HttpTarget()
    permitted = free_ports(12)
    ports, spare = permitted[:5], permitted[5:]
    ssh = SshServer(root / "sshd", free_port(), permitted, [key]).start()
    environment = Env(root, ssh, key, other, idents, http, ports, spare, None)  # type: ignore[arg-type]
    environment.tunnel = TunnelProcess(root, "main", ssh, key, environment.forwards()).start()
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
    for name, remote, _ in env.forwards()[:-1]:
        assert ident_via(remote) == name
    # All four again in a different order, interleaved on open connections: no last-handler-wins.
    socks = [socket.create_connection(("127.0.0.1", p), timeout=5) for p in reversed(env.ports[:4])]
    try:
        names = [s.makefile("rb").readline().decode().strip() for s in socks]
    finally:
        for s in socks:
            s.close()
    assert names == [t.name for t in reversed(env.idents)]
