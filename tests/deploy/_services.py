"""Real local services for the deployment tests: the development key backend and redis-server."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tests.support import PYTHON, ManagedProcess, free_port, port_open

KEY = "hc-sk-deploy-admin-0000000000000000"


def start_backend(log_dir: Path) -> tuple[ManagedProcess, str]:
    """The development key backend (litellm_cloud/sim/backend.py) knowing ``KEY`` as an admin-tier key."""
    keys = log_dir / "keys.yaml"
    keys.write_text(yaml.safe_dump([{"key": KEY, "user_id": "deploy-test", "key_id": "k-deploy", "tier": "admin",
                                     "age_verified": True}]))
    port = free_port()
    proc = ManagedProcess("backend", [PYTHON, "-m", "litellm_cloud.sim.backend", "--port", str(port), "--keys", str(keys)],
                          log_dir=log_dir, ready=lambda: port_open(port), ready_timeout=30)
    proc.start()
    return proc, f"http://127.0.0.1:{port}"


def start_redis(log_dir: Path, *, appendonly: bool = True) -> tuple[ManagedProcess, str]:
    """A redis-server on a free loopback port, its files under ``log_dir``."""
    port = free_port()
    data = log_dir / f"redis-{port}"
    data.mkdir()
    argv = [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(data), "--save", "", "--appendonly", "yes" if appendonly else "no"]
    proc = ManagedProcess(f"redis-{port}", argv, log_dir=log_dir, ready=lambda: port_open(port), ready_timeout=15)
    proc.start()
    return proc, f"redis://127.0.0.1:{port}/0"
