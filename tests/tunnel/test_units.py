"""The tunnel's pure parts without sshd: backoff schedule, config loading, known_hosts pinning, status
rendering, the systemd notify socket, and the status command's exit codes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from pathlib import Path

import paramiko
import pytest

from litellm_cloud._errors import ConfigError
from litellm_cloud.tunnel import Forward, TunnelStatus, load_config, render_prometheus, render_text
from litellm_cloud.tunnel.backoff import Backoff, exp_delay
from litellm_cloud.tunnel.config import Reconnect
from litellm_cloud.tunnel.connection import pinned_keys
from litellm_cloud.tunnel.errors import HostKeyUnknown
from litellm_cloud.tunnel.keepalive import GlobalRequests
from litellm_cloud.tunnel.sdnotify import Notifier
from litellm_cloud.tunnel.status import write_status
from tests.support import PYTHON, REPO

from .harness import keygen, pubkey

POLICY = Reconnect(initial=0.5, cap=4.0, unreachable_initial=0.1, unreachable_cap=1.0, auth_initial=30.0,
                   auth_cap=600.0, stable_after=60.0, jitter=0.2)


def test_first_failure_after_a_stable_connection_retries_at_once_then_backs_off() -> None:
    b = Backoff(POLICY, rand=lambda: 0.0)
    b.connected(now=0.0)
    assert b.failed("session", now=100.0) == 0.0
    assert [b.failed("session", now=101.0) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    b.connected(now=200.0)
    assert b.failed("session", now=210.0) == 4.0  # dropped before stable_after: no reset
    b.connected(now=300.0)
    assert b.failed("session", now=360.0) == 0.0  # stable for 60 s: forgotten


def test_unreachable_server_is_retried_within_the_small_cap_however_long_the_outage() -> None:
    b = Backoff(POLICY, rand=lambda: 0.0)
    delays = [b.failed("unreachable", now=float(i)) for i in range(50)]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8] and max(delays) == 1.0
    b.tcp_connected()
    assert b.failed("unreachable", now=60.0) == 0.1


def test_refused_credentials_back_off_long() -> None:
    b = Backoff(POLICY, rand=lambda: 0.0)
    assert [b.failed("operator", now=0.0) for _ in range(7)] == [30, 60, 120, 240, 480, 600, 600]


def test_jitter_only_shortens() -> None:
    assert exp_delay(1.0, 8.0, 10, 0.2, lambda: 1.0) == pytest.approx(6.4)
    assert exp_delay(1.0, 8.0, 2, 0.2, lambda: 0.5) == pytest.approx(3.6)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_config_with_credential_key_and_fleet_manifest(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "tunnel.yaml", f"""
host: cloud.example.com
user: tunnel
identity_file: credential:tunnel-key
known_hosts: known_hosts
fleet: {REPO / 'fleet.yaml'}
keepalive: {{interval: 10, count: 2}}
forwards:
  - {{name: extra, remote_port: 9100, target: "[::1]:9100"}}
""")
    config = load_config(cfg, env={"CREDENTIALS_DIRECTORY": "/run/credentials/x"})
    assert config.identity_file == Path("/run/credentials/x/tunnel-key")
    assert config.known_hosts == tmp_path / "known_hosts"
    assert config.keepalive.deadline == 20
    assert config.host_label == "cloud.example.com"
    ports = {f.remote_port: f for f in config.forwards}
    assert ports[8000].name == "backend"  # from the manifest
    assert {8080, 8087, 8090, 8097} <= set(ports)
    assert ports[9100] == Forward("extra", 9100, "::1", 9100)
    assert config.command() == "litellm-tunnel session onprem"


@pytest.mark.parametrize(("body", "message"), [
    ("identity_file: credential:k\nforwards: [{name: a, remote_port: 1, target: 'h:1'}]", "CREDENTIALS_DIRECTORY"),
    ("identity_file: k\nforwards: [{name: a, remote_port: 1, target: 'h:1'}, {name: b, remote_port: 1, target: 'h:2'}]",
     "both use remote port 1"),
    ("identity_file: k\nforwards: []", "no forwards"),
    ("identity_file: k\nforwards: [{name: a, remote_port: 1, target: 'nohost'}]", "forwards.0.target"),
    ("identity_file: k\nclient_id: 'a b'\nforwards: [{name: a, remote_port: 1, target: 'h:1'}]", "client_id"),
    ("identity_file: k\nmetrics_listen: '9470'\nforwards: [{name: a, remote_port: 1, target: 'h:1'}]",
     "metrics_listen"),
    ("identity_file: k\ntcp_user_timeout: -1\nforwards: [{name: a, remote_port: 1, target: 'h:1'}]",
     "tcp_user_timeout"),
])
def test_config_mistakes_say_what_to_fix(tmp_path: Path, body: str, message: str) -> None:
    cfg = _write(tmp_path / "t.yaml", f"host: h\nuser: u\nknown_hosts: kh\n{body}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(cfg, env={})


def test_metrics_listen_and_tcp_user_timeout(tmp_path: Path) -> None:
    base = "host: h\nuser: u\nknown_hosts: kh\nidentity_file: k\nforwards: [{name: a, remote_port: 1, target: 'h:1'}]\n"
    config = load_config(_write(tmp_path / "a.yaml", base), env={})
    assert config.metrics_listen is None and config.user_timeout == 45.0  # off; keepalive 15 s x 3
    config = load_config(_write(tmp_path / "b.yaml", base + "metrics_listen: '[::1]:9470'\ntcp_user_timeout: 0\n"),
                         env={})
    assert config.metrics_listen == ("::1", 9470) and config.user_timeout == 0


def test_known_hosts_pins_by_port_and_accepts_hashed_entries(tmp_path: Path) -> None:
    key = keygen(tmp_path / "host")
    kh = _write(tmp_path / "known_hosts", f"[cloud.example]:2222 {pubkey(key)}\n")
    assert set(pinned_keys(kh, "[cloud.example]:2222")) == {"ssh-ed25519"}
    with pytest.raises(HostKeyUnknown, match="not in"):
        pinned_keys(kh, "cloud.example")  # port 22 is another host as far as pinning goes
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(kh)], check=True, capture_output=True)
    assert "cloud.example" not in kh.read_text()
    assert set(pinned_keys(kh, "[cloud.example]:2222")) == {"ssh-ed25519"}
    with pytest.raises(HostKeyUnknown, match="does not exist"):
        pinned_keys(tmp_path / "missing", "x")


def _status() -> TunnelStatus:
    clock = iter(range(1000, 2000)).__next__
    st = TunnelStatus([Forward("backend", 8000, "localhost", 8000), Forward("gpu-1", 8080, "10.0.0.5", 8080)],
                      clock=lambda: float(clock()))
    st.set_state("up")
    st.set_forward("backend", "up")
    st.set_forward("gpu-1", "refused", error="denied")
    st.connection("backend", opened=True)
    st.add_bytes("backend", to_target=2048, from_target=3 * 1024 * 1024)
    return st


def test_status_text_and_prometheus_come_from_one_snapshot() -> None:
    st = _status()
    assert st.summary() == "up: 1/2 forwards up, refused: gpu-1"
    snap = st.snapshot()
    text = render_text(snap, now=snap["written_at"] + 5)
    assert "backend  8000    localhost:8000  up" in text
    assert "2.0 KB" in text and "3.0 MB" in text
    assert "gpu-1: denied" in text
    prom = render_prometheus(snap)
    assert 'litellm_tunnel_forward_up{forward="gpu-1",remote_port="8080"} 0' in prom
    assert 'litellm_tunnel_forward_bytes_total{forward="backend",remote_port="8000",direction="from_target"} 3145728' in prom
    assert "litellm_tunnel_connects_total 1" in prom
    st.set_state("backoff", error="gone")
    assert all(f["state"] == "down" for f in st.snapshot()["forwards"])  # no session, no listeners


def test_notifier_sends_datagrams_and_reads_the_watchdog_period(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        notifier = Notifier.from_env({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "4000000"})
        assert notifier.watchdog_interval == 2.0
        notifier.ready("up: 2/2")
        assert sock.recv(100) == b"READY=1\nSTATUS=up: 2/2"
        assert notifier.status("up: 2/2") is False  # unchanged: not resent
        notifier.watchdog()
        assert sock.recv(100) == b"WATCHDOG=1"
        notifier.close()
    assert Notifier.from_env({"WATCHDOG_USEC": "1", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier.from_env({}).send(READY="1") is False


def _status_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "litellm_cloud.tunnel", "status", *args], env=env,
                          check=False, capture_output=True, text=True, timeout=30)  # fmt: skip


def test_status_command_exit_codes(tmp_path: Path) -> None:
    missing = _status_cli("--status-file", str(tmp_path / "none.json"))
    assert missing.returncode == 3 and "is the tunnel running" in missing.stderr
    snap = _status().snapshot()
    path = tmp_path / "status.json"
    write_status(path, {**snap, "pid": os.getpid()})
    degraded = _status_cli("--status-file", str(path))
    assert degraded.returncode == 1 and "refused" in degraded.stdout
    dead = subprocess.Popen(["true"])
    dead.wait()
    write_status(path, {**snap, "pid": dead.pid})
    stale = _status_cli("--status-file", str(path), "--format", "json")
    assert stale.returncode == 3 and "status file is stale" in json.loads(stale.stdout)["last_error"]


def test_status_command_uses_the_configs_status_file_and_reports_a_broken_config(tmp_path: Path) -> None:
    custom = tmp_path / "custom-status.json"
    write_status(custom, {**_status().snapshot(), "pid": os.getpid()})
    # As in production: credential: paths, and an admin's shell has no CREDENTIALS_DIRECTORY.
    good = _write(tmp_path / "tunnel.yaml", f"""
host: h
user: u
identity_file: credential:tunnel-key
known_hosts: credential:tunnel-known-hosts
status_file: {custom}
forwards: [{{name: backend, remote_port: 8000, target: "localhost:8000"}}, {{name: gpu-1, remote_port: 8080, target: "10.0.0.5:8080"}}]
""")
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    shown = _status_cli("--config", str(good), env=env)
    assert shown.returncode == 1 and "gpu-1: denied" in shown.stdout, shown.stderr
    broken = _write(tmp_path / "broken.yaml", good.read_text() + "keepalive: {interval: soon}\n")
    failed = _status_cli("--config", str(broken))
    assert failed.returncode == 2, failed.stdout
    assert "cannot load the tunnel config" in failed.stderr and "keepalive.interval" in failed.stderr
    missing = _status_cli("--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr


def test_exported_names_are_complete_and_sorted() -> None:
    from litellm_cloud import tunnel

    assert tunnel.__all__ == sorted(tunnel.__all__)
    assert all(hasattr(tunnel, name) for name in tunnel.__all__)
    public = {n for n, v in vars(tunnel).items() if not n.startswith("_") and isinstance(v, type)}
    assert public <= set(tunnel.__all__)


class _RekeyingTransport:
    """paramiko's global-request bookkeeping, with a key exchange finishing before the server's reply:
    the KEX sets ``completion_event`` and ``global_response`` still holds the previous answer."""

    def __init__(self, stale: object, reply: object) -> None:
        self.completion_event: threading.Event | None = None
        self.global_response: object = stale
        self._reply = reply
        self._tcp_handler: object = None

    def is_active(self) -> bool:
        return True

    def global_request(self, kind: str, data: object = None, wait: bool = True) -> object:
        self.completion_event = event = threading.Event()
        event.set()  # NEWKEYS processed: paramiko sets the same event

        def answer() -> None:
            self.global_response = self._reply
            event.set()

        threading.Timer(0.05, answer).start()
        event.wait()
        return self.global_response


def test_global_requests_wait_through_a_rekey_for_their_own_reply() -> None:
    granted = object()
    denied = GlobalRequests(_RekeyingTransport(stale=granted, reply=None))  # type: ignore[arg-type]
    with pytest.raises(paramiko.SSHException, match="denied"):
        denied.forward("127.0.0.1", 8080, print)  # paramiko alone: the stale grant
    assert denied.transport._tcp_handler is None
    ok = GlobalRequests(_RekeyingTransport(stale=None, reply=granted))  # type: ignore[arg-type]
    assert ok.forward("127.0.0.1", 8080, print) == 8080 and ok.transport._tcp_handler is print
    assert GlobalRequests(_RekeyingTransport(stale=None, reply=granted)).request("x") is granted  # type: ignore[arg-type]
