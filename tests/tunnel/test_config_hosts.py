"""The ``hosts:`` form of the tunnel config next to the one-host form, and the runner's combined status,
without sshd."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from litellm_cloud._errors import ConfigError
from litellm_cloud.tunnel import Forward, TunnelStatus, load_config, load_tunnels, render_prometheus, render_text
from litellm_cloud.tunnel.sdnotify import Notifier
from litellm_cloud.tunnel.status import all_up, combine

COMMON = """identity_file: id_key
keepalive: {interval: 10, count: 2}
forwards: [{name: backend, remote_port: 8000, target: "127.0.0.1:8000"}]
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_one_host_file_parses_as_before_and_as_a_one_entry_hosts_list(tmp_path: Path) -> None:
    old = _write(tmp_path / "old.yaml", "host: cloud.example\nport: 2222\nuser: tunnel\nknown_hosts: kh\n" + COMMON)
    new = _write(tmp_path / "new.yaml",
                 "user: tunnel\nhosts:\n  - {host: cloud.example, port: 2222, known_hosts: kh}\n" + COMMON)
    config = load_config(old, env={})
    assert (config.host, config.port, config.user, config.known_hosts) == ("cloud.example", 2222, "tunnel",
                                                                           tmp_path / "kh")
    assert config.label == "[cloud.example]:2222" and config.keepalive.deadline == 20
    assert load_tunnels(old, env={}).hosts == (config,)
    assert load_tunnels(new, env={}).hosts == (config,)  # the same config, field for field


def test_each_host_gets_its_own_address_pin_and_name_and_every_forward(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "t.yaml", """user: tunnel
status_file: status.json
hosts:
  - {name: cloud-a, host: a.example, known_hosts: kh-a}
  - {name: cloud-b, host: b.example, port: 2222, known_hosts: kh-b, user: other, identity_file: id_b,
     bind_address: 10.0.0.2}
""" + COMMON)
    a, b = load_tunnels(cfg, env={}).hosts
    assert (a.label, a.host, a.port, a.known_hosts, a.user, a.bind_address) == (
        "cloud-a", "a.example", 22, tmp_path / "kh-a", "tunnel", "127.0.0.1")
    assert (b.label, b.host_label, b.known_hosts, b.user, b.identity_file, b.bind_address) == (
        "cloud-b", "[b.example]:2222", tmp_path / "kh-b", "other", tmp_path / "id_b", "10.0.0.2")
    assert a.forwards == b.forwards == (Forward("backend", 8000, "127.0.0.1", 8000),)
    assert a.status_file == b.status_file == tmp_path / "status.json"
    with pytest.raises(ConfigError, match="lists 2 cloud hosts"):
        load_config(cfg, env={})


def test_a_host_without_its_pinned_key_is_refused_with_file_and_line(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "t.yaml", """user: tunnel
hosts:
  - {host: a.example, known_hosts: kh-a}
  - host: b.example
    port: 2222
""" + COMMON)
    with pytest.raises(ConfigError) as err:
        load_tunnels(cfg, env={})
    assert f"{cfg}:4: hosts.1.known_hosts: Field required" in str(err.value)


@pytest.mark.parametrize(("body", "message"), [
    ("known_hosts: kh\nuser: u\nhosts: [{host: a, known_hosts: ka}]", "known_hosts: give them in each entry"),
    ("host: a\nuser: u\nhosts: [{host: b, known_hosts: kb}]", "host: give them in each entry"),
    ("hosts: [{host: a, known_hosts: ka}]", "hosts.0.user: not set there nor at the top level"),
    ("user: u\nhosts: [{host: a, known_hosts: ka}, {host: a, known_hosts: kb}]", "listed twice"),
    ("user: u\nhosts: [{name: x, host: a, known_hosts: ka}, {name: x, host: b, known_hosts: kb}]", "named x"),
    ("user: u\nhosts: []", "hosts: List should have at least 1 item"),
    ("user: u\nknown_hosts: kh", "host: required"),
])
def test_hosts_mistakes_say_what_to_fix(tmp_path: Path, body: str, message: str) -> None:
    cfg = _write(tmp_path / "t.yaml", body + "\n" + COMMON)
    with pytest.raises(ConfigError, match=message):
        load_tunnels(cfg, env={})


def _host(name: str, up: bool) -> dict[str, object]:
    st = TunnelStatus([Forward("gpu-1", 8080, "10.0.0.5", 8080)], host=name, clock=lambda: 1000.0)
    st.set_state("up" if up else "backoff", error=None if up else "cannot connect")
    if up:
        st.set_forward("gpu-1", "up")
    return st.snapshot()


def test_combined_status_renders_a_row_and_labelled_series_per_host() -> None:
    snap = combine([_host("cloud-a", True), _host("cloud-b", False)], now=1000.0)
    assert snap["state"] == "degraded" and not all_up(snap)
    text = render_text(snap, now=1005.0)
    assert text.splitlines()[0].startswith("host cloud-a: up since 5s ago")
    assert "host cloud-b: backoff" in text and "last error: cannot connect" in text
    assert any(line.split()[:5] == ["cloud-b", "gpu-1", "8080", "10.0.0.5:8080", "down"] for line in text.splitlines())
    prom = render_prometheus(snap)
    assert 'litellm_tunnel_up{host="cloud-a"} 1' in prom and 'litellm_tunnel_up{host="cloud-b"} 0' in prom
    assert 'litellm_tunnel_forward_up{host="cloud-b",forward="gpu-1",remote_port="8080"} 0' in prom
    assert prom.count("# TYPE litellm_tunnel_up gauge") == 1  # one family, a sample per host
    both = combine([_host("cloud-a", True), _host("cloud-b", True)], now=1000.0)
    assert both["state"] == "up" and all_up(both)
    one = _host("cloud-a", True)
    assert combine([one], now=1.0) is one  # one host: the status file keeps its one-host shape


def test_a_notify_reader_that_stopped_reading_does_not_block_us(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        notifier = Notifier(str(path))
        t0 = time.monotonic()
        sent = [notifier.watchdog() for _ in range(5000)]  # never read: the queue fills
        assert time.monotonic() - t0 < 5 and sent[0] and not all(sent)
        notifier.close()
