"""What ships in ``tunnels/`` fits together: the example config, the systemd unit, the README's set-up
steps and the cloud-side sshd snippet (checked by OpenSSH's own ``sshd -t`` / ``sshd -T``)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from litellm_cloud.fleet import load_manifest
from litellm_cloud.tunnel import load_config
from litellm_cloud.tunnel.config import CREDENTIAL_PREFIX
from tests.support import REPO

from .harness import keygen

TUNNELS = REPO / "tunnels"
EXAMPLE = TUNNELS / "tunnel.example.yaml"
UNIT = TUNNELS / "litellm-tunnel.service"
README = TUNNELS / "README.md"
SNIPPET = TUNNELS / "sshd_config.litellm-tunnel"
SSHD = Path("/usr/sbin/sshd")
ROOT_ONLY_DIR = "/etc/litellm-cloud/tunnel/"  # 0700 root in the README: the DynamicUser cannot read it


def _unit_settings(key: str) -> list[str]:
    return [line.split("=", 1)[1].strip() for line in UNIT.read_text().splitlines()
            if line.startswith(f"{key}=")]


def _credentials() -> dict[str, str]:
    """LoadCredential=NAME:PATH lines of the unit, as {NAME: PATH}."""
    return dict(value.split(":", 1) for value in _unit_settings("LoadCredential"))


def _strings(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def test_every_credential_the_example_config_names_is_loaded_by_the_unit() -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    named = {s[len(CREDENTIAL_PREFIX):] for s in _strings(example) if s.startswith(CREDENTIAL_PREFIX)}
    assert {"tunnel-key", "tunnel-known-hosts"} <= named  # the key and the pinned host key
    loaded = _credentials()
    assert named <= set(loaded), named - set(loaded)
    # Nothing the service reads itself may live in the root-only directory (it would fail forever).
    direct = [s for s in _strings(example) if s.startswith("/")]
    assert not [p for p in direct if p.startswith(ROOT_ONLY_DIR)], direct
    # The unit loads each credential from the file the README's set-up steps create there.
    readme = README.read_text()
    assert f"install -d -m 0700 {ROOT_ONLY_DIR.rstrip('/')}" in readme
    for path in loaded.values():
        assert path.startswith(ROOT_ONLY_DIR) and re.search(rf"(-f|>) {re.escape(path)}\b", readme), path


def test_example_config_loads_as_the_unit_runs_it(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    config = load_config(EXAMPLE, env={"CREDENTIALS_DIRECTORY": str(creds)}, fleet=REPO / "fleet.yaml")
    assert config.identity_file == creds / "tunnel-key"
    assert config.known_hosts == creds / "tunnel-known-hosts"
    # status_file lives in the unit's RuntimeDirectory, which the dynamic user owns.
    assert config.status_file is not None
    assert config.status_file.parent == Path("/run") / _unit_settings("RuntimeDirectory")[0]
    assert config.command() == "litellm-tunnel session onprem-1"
    assert config.metrics_listen is None  # off by default
    assert int(_unit_settings("LimitNOFILE")[0]) >= 65536  # pumps hold ~3 fds per connection
    assert ["yes"] == _unit_settings("DynamicUser")


def test_example_and_docs_agree_on_the_command_without_the_helper() -> None:
    # "" runs no command, so sshd never sets TCP_NODELAY; "true" keeps the Nagle fix.
    for path in (EXAMPLE, README, REPO / "docs" / "tunnels.md"):
        text = path.read_text()
        assert '"true"' in text, path
        assert not re.search(r'""\s+on a (cloud )?host without the helper', text), path


def _sshd_T(config: Path, user: str) -> dict[str, str]:
    out = subprocess.run([str(SSHD), "-T", "-f", str(config), "-C", f"user={user},host=onprem,addr=127.0.0.1"],
                         check=True, capture_output=True, text=True, timeout=30).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


@pytest.mark.skipif(not SSHD.exists(), reason="needs OpenSSH sshd (apt-get install openssh-server)")
def test_sshd_accepts_the_snippet_and_it_binds_only_the_tunnel_user(tmp_path: Path) -> None:
    # Laid out as Debian's sshd_config does it: an Include of sshd_config.d/ first, global settings after
    # (a Match block leaking out of the snippet would swallow them, or make sshd -t fail).
    confd = tmp_path / "sshd_config.d"
    confd.mkdir()
    (confd / "litellm-tunnel.conf").write_text(SNIPPET.read_text())
    host_key = keygen(tmp_path / "host_key")
    main = tmp_path / "sshd_config"
    main.write_text(f"Include {confd}/*.conf\nHostKey {host_key}\nPidFile {tmp_path}/sshd.pid\nUsePAM no\n"
                    "X11Forwarding yes\n")
    checked = subprocess.run([str(SSHD), "-t", "-f", str(main)], check=False, capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 0, checked.stderr
    tunnel = _sshd_T(main, "litellm-tunnel")
    assert tunnel["allowtcpforwarding"] == "remote"
    assert tunnel["authenticationmethods"] == "publickey"
    assert tunnel["forcecommand"] == "/usr/local/libexec/litellm-tunnel-session"
    assert tunnel["permitopen"] == "none" and tunnel["gatewayports"] == "no"
    assert tunnel["x11forwarding"] == "no" and tunnel["permittty"] == "no"
    # PermitListen admits exactly the ports the fleet manifest forwards, on loopback.
    wanted = {f"127.0.0.1:{f.remote_port}" for f in load_manifest(REPO / "fleet.yaml").tunnel_forwards()}
    assert set(tunnel["permitlisten"].split()) == wanted
    other = _sshd_T(main, "someone-else")
    assert other["forcecommand"] == "none" and other["x11forwarding"] == "yes"
