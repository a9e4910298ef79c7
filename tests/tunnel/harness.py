"""A real OpenSSH sshd, local target servers and our tunnel as a child process, for the tunnel tests.

``SshServer`` runs ``sshd -D -e`` on a loopback port (or inside a network namespace) with its own host
key, authorized_keys and ``PermitListen`` list; ``kill()`` also ends the per-connection session
processes (sshd puts each in its own session, so killing the listener's group is not enough).
``TunnelProcess`` writes a tunnel config and runs ``python -m litellm_cloud.tunnel``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support import PYTHON, REPO, ManagedProcess, port_open, wait_until

HELPER = REPO / "tunnels" / "litellm-tunnel-session"


def keygen(path: Path) -> Path:
    """A fresh ed25519 key pair at ``path`` (and ``path.pub``)."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path


def pubkey(path: Path) -> str:
    return Path(f"{path}.pub").read_text().strip()


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(raw[raw.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class SshServer:
    """One sshd with its own keys, on ``host:port``, optionally inside network namespace ``netns``."""

    def __init__(self, root: Path, port: int, permit_listen: Sequence[int], client_keys: Sequence[Path], *,
                 host: str = "127.0.0.1", netns: str | None = None, state_dir: Path | None = None,
                 listen_host: str = "127.0.0.1") -> None:
        # sshd binds forwards to loopback only with GatewayPorts no, whatever address is asked for: a
        # second "cloud host" on this machine listens on another loopback address, so it needs
        # clientspecified (and PermitListen still admits that address only).
        self.root, self.port, self.host, self.netns = root, port, host, netns
        root.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        self.host_key = keygen(root / "host_ed25519")
        self.state_dir = state_dir or root / "helper-state"
        helper = f'command="{PYTHON} {HELPER} --state-dir {self.state_dir}",no-pty,no-agent-forwarding,no-X11-forwarding'
        (root / "authorized_keys").write_text("".join(f"{helper} {pubkey(k)}\n" for k in client_keys))
        listen = " ".join(f"{listen_host}:{p}" for p in permit_listen)
        self.config = root / "sshd_config"
        self.config.write_text(f"""
ListenAddress {host}:{port}
HostKey {self.host_key}
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AllowTcpForwarding remote
GatewayPorts {"no" if listen_host == "127.0.0.1" else "clientspecified"}
PermitListen {listen}
ClientAliveInterval 0
LogLevel VERBOSE
""")
        self.proc: ManagedProcess | None = None

    @property
    def known_hosts_line(self) -> str:
        label = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        key_type, blob = pubkey(self.host_key).split()[:2]
        return f"{label} {key_type} {blob}\n"

    def _argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else argv

    def reachable(self) -> bool:
        if self.netns is None:
            return port_open(self.port, self.host)
        return subprocess.run(self._argv([PYTHON, "-c", f"import socket; socket.create_connection(('{self.host}', {self.port}), 1)"]),
                              check=False, capture_output=True).returncode == 0

    def start(self) -> SshServer:
        self.proc = ManagedProcess(
            f"sshd-{self.port}", self._argv(["/usr/sbin/sshd", "-D", "-e", "-f", str(self.config)]),
            log_dir=self.root, ready=self.reachable, ready_timeout=15,
        ).start()
        return self

    def kill(self) -> None:
        """Kill sshd and every session it runs: the server host 'crashed'."""
        if self.proc is None:
            return
        kids = descendants(self.proc.pid)
        self.proc.kill()
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc = None

    def stop(self) -> None:
        self.kill()

    def log(self) -> str:
        path = self.root / f"sshd-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class IdentEcho:
    """Says its name on connect, then echoes until EOF, then half-closes: a routing and integrity target."""

    def __init__(self, name: str) -> None:
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(f"{outer.name}\n".encode())
                while data := sock.recv(65536):
                    sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)

        self.name = name
        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HttpTarget:
    """``GET /`` answers ``ok`` (keep-alive); ``GET /sse?n=N&gap=S`` streams N events S seconds apart,
    each carrying the sender's ``time.monotonic()``."""

    def __init__(self) -> None:
        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    path = line.split()[1].decode()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    if path.startswith("/sse"):
                        query = dict(p.split("=") for p in path.partition("?")[2].split("&") if p)
                        n, gap = int(query.get("n", 10)), float(query.get("gap", 0.05))
                        self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
                        for i in range(n):
                            self.wfile.write(f"data: {i} {time.monotonic():.6f}\n\n".encode())
                            self.wfile.flush()
                            time.sleep(gap)
                        return
                    # Headers and body in two writes, as most HTTP servers do: the pattern Nagle stalls.
                    self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
                    self.wfile.flush()
                    self.wfile.write(b"ok")
                    self.wfile.flush()

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


FAST = {
    "keepalive": {"interval": 0.5, "count": 3},
    "reconnect": {"initial": 0.2, "cap": 1.0, "unreachable_initial": 0.05, "unreachable_cap": 0.5,
                  "auth_initial": 1.0, "auth_cap": 2.0, "stable_after": 1.0, "forward_retry": 0.2,
                  "forward_retry_cap": 0.5, "jitter": 0.2},
    "connect_timeout": 2.0,
}


class TunnelProcess:
    """Our tunnel (``python -m litellm_cloud.tunnel run``) with a config written for ``ssh``."""

    def __init__(self, root: Path, name: str, ssh: SshServer | dict[str, tuple[SshServer, str]], key: Path,
                 forwards: Sequence[tuple[str, int, int]], *, known_hosts: str | None = None,
                 env: dict[str, str] | None = None, **settings: Any) -> None:
        """``ssh``: one server (the one-host format), or {name: (server, bind address)} for ``hosts:``,
        each entry with a known_hosts file of its own."""
        self.root = root / name
        self.root.mkdir(parents=True, exist_ok=True)
        self.status_file = self.root / "status.json"
        config: dict[str, Any] = {
            "user": "root", "identity_file": str(key), "status_file": str(self.status_file), "client_id": name,
            "forwards": [{"name": n, "remote_port": rp, "target": f"127.0.0.1:{tp}"} for n, rp, tp in forwards],
            **FAST,
        }
        if isinstance(ssh, SshServer):
            kh = self.root / "known_hosts"
            kh.write_text(ssh.known_hosts_line if known_hosts is None else known_hosts)
            config.update(host=ssh.host, port=ssh.port, known_hosts=str(kh))
        else:
            config["hosts"] = []
            for host_name, (server, bind) in ssh.items():
                kh = self.root / f"known_hosts-{host_name}"
                kh.write_text(server.known_hosts_line)
                config["hosts"].append({"name": host_name, "host": server.host, "port": server.port,
                                        "known_hosts": str(kh), "bind_address": bind})
        config.update(settings)
        self.config = self.root / "tunnel.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.proc = ManagedProcess(
            name, [PYTHON, "-m", "litellm_cloud.tunnel", "run", "--config", str(self.config), "--log-level", "debug"],
            log_dir=self.root, env={**os.environ, **(env or {})},
        )

    def start(self) -> TunnelProcess:
        self.proc.start()
        return self

    def status(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.status_file.read_text())
            return data
        except (OSError, ValueError):
            return {"state": "none", "forwards": [], "last_error": None}

    def host_status(self, name: str) -> dict[str, Any]:
        """One cloud host's part of a several-host status file."""
        return next((h for h in self.status().get("hosts", []) if h["host"] == name),
                    {"state": "none", "forwards": [], "last_error": None, "connects": 0})

    def host_up(self, name: str) -> bool:
        st = self.host_status(name)
        return st["state"] == "up" and bool(st["forwards"]) and all(f["state"] == "up" for f in st["forwards"])

    def states(self) -> dict[str, str]:
        return {f["name"]: f["state"] for f in self.status()["forwards"]}

    def all_up(self) -> bool:
        """Every forward of every host up (one host or several)."""
        hosts = self.status().get("hosts") or [self.status()]
        return all(h["state"] == "up" and bool(h["forwards"]) and all(f["state"] == "up" for f in h["forwards"])
                   for h in hosts)

    def wait_up(self, timeout: float = 10.0) -> float:
        """Seconds until every forward is up."""
        t0 = time.monotonic()
        try:
            wait_until(self.all_up, timeout, "all forwards up", interval=0.02)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\nstatus: {self.status()}\nlog:\n{self.proc.log_tail()}") from None
        return time.monotonic() - t0

    def stop(self) -> int | None:
        return self.proc.stop()
