"""Process and port helpers shared by every test that starts a real server.

Tests start real programs (the LiteLLM proxy, redis-server, sshd, nginx, our simulator) on loopback,
each on a free port. ``ManagedProcess`` owns one child process: it starts it in its own process group,
waits until it is ready, and on stop terminates the whole group so nothing outlives the test.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx

from litellm_cloud._procs import ManagedProcess

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports (held open together while choosing, so they differ)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_ok(url: str) -> Callable[[], bool]:
    """A predicate: ``GET url`` answers 200."""

    def check() -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    return check


# --- The gateway's parts, started for real -------------------------------------------------------------

FLEET_FILE = REPO / "fleet.yaml"


class SimFleet:
    """The GPU simulator serving every server of ``fleet.yaml`` on free loopback ports (one process)."""

    def __init__(self, log_dir: Path, *, extra_args: Sequence[str] = ()) -> None:
        from litellm_cloud.fleet import load_manifest

        manifest = load_manifest(FLEET_FILE)
        self.servers = {s.name: (g, s) for g, s in manifest.servers()}
        ports = free_ports(len(self.servers) + 1)
        self.admin_port = ports[0]
        self.ports = dict(zip(self.servers, ports[1:], strict=True))
        from litellm_cloud.dev import sim_argv

        argv = sim_argv(manifest, "127.0.0.1", self.ports, self.admin_port)
        argv += list(extra_args)
        self._initial: dict[str, dict[str, object]] = {}  # server -> faults at start, for reset()
        self.process = ManagedProcess(
            "sim", argv, log_dir=log_dir, ready=lambda: all(port_open(p) for p in self.ports.values())
        )

    @property
    def endpoints(self) -> dict[str, str]:
        """Server name -> OpenAI base URL, for ``RenderOptions.endpoints``."""
        return {name: f"http://127.0.0.1:{port}/v1" for name, port in self.ports.items()}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def control(self, name: str, **settings: object) -> None:
        """Change one server's behaviour (mode=ok|error|hang|busy|crash|down, ...) through the admin port."""
        r = httpx.post(f"http://127.0.0.1:{self.admin_port}/servers/{name}/control", json=settings, timeout=5)
        r.raise_for_status()

    def stats(self) -> dict[str, dict[str, Any]]:
        """Server name -> its ``/sim/stats`` (mode, faults, request counts by endpoint and outcome)."""
        servers = httpx.get(f"http://127.0.0.1:{self.admin_port}/servers", timeout=5).json()["servers"]
        return {s["server"]: s for s in servers}

    def chat_requests(self) -> dict[str, int]:
        """Server name -> chat completions it has received, whatever their outcome."""
        return {name: sum(s["requests"].get("chat", {}).values()) for name, s in self.stats().items()}

    def reset(self) -> None:
        """Every server back to the behaviour it started with (mode, faults and speed)."""
        for name, faults in self._initial.items():
            self.control(name, **faults)

    def start(self) -> SimFleet:
        from litellm_cloud.sim._gpu_config import Faults

        self.process.start()
        names = [f.name for f in fields(Faults)]
        self._initial = {server: {k: s[k] for k in names} for server, s in self.stats().items()}
        return self

    def stop(self) -> None:
        self.process.stop()


def render_test_config(path: Path, endpoints: Mapping[str, str], **options: object) -> Path:
    """Render the local config pointed at ``endpoints`` with test-sized timeouts into ``path``."""
    from litellm_cloud.fleet import RenderOptions, load_manifest, render_text

    defaults: dict[str, object] = {
        "timeout": 5.0,
        "stream_timeout": 5.0,
        "cooldown_time": 5,
        "health_check_interval": 0,
    }
    defaults.update(options)
    text = render_text(load_manifest(FLEET_FILE), "local", RenderOptions(endpoints=dict(endpoints), **defaults))  # type: ignore[arg-type]
    path.write_text(text)
    return path


MASTER_KEY = "sk-test-master-0123456789"


def start_proxy(
    name: str,
    config: Path,
    log_dir: Path,
    env: Mapping[str, str],
    *,
    port: int | None = None,
    ready_timeout: float = 90.0,
    workers: int | None = None,
) -> tuple[ManagedProcess, str]:
    """Start the real LiteLLM proxy the way production does (``litellm-cloud proxy``); returns (process, base URL).

    ``env`` is added to this process's environment: set ``HEARTCODE_BACKEND_URL`` and whatever the test needs.
    """
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    full_env = {**os.environ, "LITELLM_MASTER_KEY": MASTER_KEY, **env}
    argv = [PYTHON, "-m", "litellm_cloud", "proxy", "--config", str(config), "--home", str(REPO),
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    if workers is not None:
        argv += ["--workers", str(workers)]
    proc = ManagedProcess(
        name,
        argv,
        log_dir=log_dir,
        env=full_env,
        ready=http_ok(f"{base}/health/liveliness"),
        ready_timeout=ready_timeout,
    )
    proc.start()
    return proc, base


def start_backend(
    log_dir: Path, keys: Sequence[Mapping[str, object]], *, name: str = "backend"
) -> tuple[ManagedProcess, str]:
    """The development key backend (the HeartCode contract) serving ``keys``; returns (process, base URL)."""
    keys_file = log_dir / f"{name}-keys.yaml"
    import yaml

    keys_file.write_text(yaml.safe_dump([dict(k) for k in keys]))
    port = free_port()
    proc = ManagedProcess(
        name,
        [
            PYTHON,
            "-m",
            "litellm_cloud.sim.backend",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--keys",
            str(keys_file),
        ],
        log_dir=log_dir,
        ready=lambda: port_open(port),
        ready_timeout=30,
    )
    proc.start()
    return proc, f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def simulated_gateway(
    log_dir: Path, keys: Sequence[Mapping[str, object]], **render_options: object
) -> Iterator[tuple[SimFleet, str, ManagedProcess]]:
    """The simulated fleet, the development key backend serving ``keys`` and one proxy on a config
    rendered with ``render_options``; yields (simulator, proxy base URL, proxy) and stops all of it."""
    sim = SimFleet(log_dir).start()
    procs = [sim.process]
    try:
        backend, url = start_backend(log_dir, keys)
        procs.append(backend)
        config = render_test_config(log_dir / "config.yaml", sim.endpoints, **render_options)
        proxy, base = start_proxy("proxy", config, log_dir, {"HEARTCODE_BACKEND_URL": url})
        procs.append(proxy)
        yield sim, base, proxy
    finally:
        for proc in reversed(procs):
            proc.stop()


def chat(model: str | None, content: str = "Hello there", **extra: Any) -> dict[str, Any]:
    """The one chat completion request body builder (``model=None``: a body without a model)."""
    body: dict[str, Any] = {"messages": [{"role": "user", "content": content}], **extra}
    if model is not None:
        body = {"model": model, **body}
    return body


class GatewayClient:
    """The one HTTP client for a proxy in tests: it fails the test if any answer echoes the raw
    ``hc-sk-`` key it sent (nothing after auth may see the key, errors included)."""

    def __init__(self, base: str, *, timeout: float = 30) -> None:
        self.base = base
        self.client = httpx.Client(base_url=base, timeout=timeout)

    def request(self, method: str, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        headers.update(kw.pop("headers", {}))
        r = self.client.request(method, path, headers=headers, **kw)
        if key and key.startswith("hc-sk-"):
            assert key not in r.text, f"{method} {path} echoed the raw key"
        return r

    def post(self, path: str, key: str | None, body: Mapping[str, Any], **kw: Any) -> httpx.Response:
        return self.request("POST", path, key, json=dict(body), **kw)

    def close(self) -> None:
        self.client.close()
