"""Process and port helpers shared by every test that starts a real server.

Tests start real programs (the LiteLLM proxy, redis-server, sshd, nginx, our simulator) on loopback,
each on a free port. ``ManagedProcess`` owns one child process: it starts it in its own process group,
waits until it is ready, and on stop terminates the whole group so nothing outlives the test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

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


class ManagedProcess:
    """One child process in its own process group, with its output in a log file.

    ``ready`` is a predicate polled after start; the process dying first fails the start with the tail
    of its log, so a broken config says why instead of timing out.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready: Callable[[], bool] | None = None,
        ready_timeout: float = 60.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd or REPO
        self.ready = ready
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
            start_new_session=True,
        )
        log.close()
        if self.ready is not None:
            deadline = time.monotonic() + self.ready_timeout
            while not self.ready():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"{self.name} not ready in {self.ready_timeout}s:\n{self.log_tail()}")
                time.sleep(0.1)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the whole process group."""
        if self.alive():
            assert self.proc is not None
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the group, SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        else:
            # The leader is gone; make sure no child of it is left behind.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the group at once (a crash, not a shutdown)."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(5)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
        argv = [PYTHON, "-m", "litellm_cloud.sim", "--host", "127.0.0.1", "--admin-port", str(self.admin_port)]
        for name, (group, _server) in self.servers.items():
            served = manifest.groups[group].served_model
            argv += ["--server", f"{name}={self.ports[name]}", "--model", f"{name}={served}"]
        argv += list(extra_args)
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

    def reset(self) -> None:
        for name in self.servers:
            self.control(name, mode="ok", error_rate=0.0)

    def start(self) -> SimFleet:
        self.process.start()
        return self

    def stop(self) -> None:
        self.process.stop()


def render_test_config(path: Path, endpoints: Mapping[str, str], **options: object) -> Path:
    """Render the local config pointed at ``endpoints`` with test-sized timeouts into ``path``."""
    from litellm_cloud.fleet import RenderOptions, load_manifest, render_text

    defaults: dict[str, object] = {"timeout": 5.0, "stream_timeout": 5.0, "cooldown_time": 5, "health_check_interval": 0}
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
) -> tuple[ManagedProcess, str]:
    """Start the real LiteLLM proxy the way production does (``litellm-cloud proxy``); returns (process, base URL).

    ``env`` is added to this process's environment: set ``HEARTCODE_BACKEND_URL`` and whatever the test needs.
    """
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    full_env = {**os.environ, "LITELLM_MASTER_KEY": MASTER_KEY, **env}
    argv = [PYTHON, "-m", "litellm_cloud", "proxy", "--config", str(config), "--home", str(REPO),
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    proc = ManagedProcess(
        name, argv, log_dir=log_dir, env=full_env, ready=http_ok(f"{base}/health/liveliness"),
        ready_timeout=ready_timeout,
    )
    proc.start()
    return proc, base
