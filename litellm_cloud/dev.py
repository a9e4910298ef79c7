"""``litellm-cloud dev``: the whole gateway on one machine, with no GPU.

Starts the simulated fleet (every server of ``fleet.yaml``, one process), the development key backend
(the same contract as HeartCode's, keys from a YAML file) unless ``HEARTCODE_BACKEND_URL`` names a real
one, and the real LiteLLM proxy with the local config rendered against the simulators. Ctrl-C stops all
of it: each child runs in its own process group and is stopped as a group.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from ._procs import ManagedProcess, StartCancelled
from .fleet import Manifest, RenderOptions, load_manifest, render_text
from .proxy import proxy_argv, proxy_env, worker_env

DEFAULT_KEYS = Path("dev-keys.yaml")


def _free_ports(count: int, host: str) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def sim_argv(manifest: Manifest, host: str, ports: Mapping[str, int], admin_port: int) -> list[str]:
    """The simulator command serving every server of ``manifest`` on ``ports`` (server name -> port)."""
    argv = [sys.executable, "-m", "litellm_cloud.sim", "--host", host, "--admin-port", str(admin_port)]
    for group, server in manifest.servers():
        argv += ["--server", f"{server.name}={ports[server.name]}"]
        argv += ["--model", f"{server.name}={manifest.groups[group].served_model}"]
    return argv


@dataclass
class DevGateway:
    """The running development gateway: its children and where to reach it."""

    url: str
    master_key: str
    keys_file: Path | None
    children: list[ManagedProcess]

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()


def start_dev(
    *, home: Path, port: int, host: str, keys_file: Path, env: Mapping[str, str], work_dir: Path,
    cancel: Callable[[], bool] | None = None, workers: int | None = None,
) -> DevGateway:
    """Start simulator, development backend (unless ``HEARTCODE_BACKEND_URL`` is set) and proxy.

    ``cancel()`` turning true while a child gets ready raises ``StartCancelled``; whatever was started
    is stopped first. ``workers`` > 1 needs ``HEARTCODE_LIMITS_STORAGE`` and ``HEARTCODE_REDIS_URL`` on a
    Redis (``ConfigError`` otherwise, before anything starts).
    """  # fmt: skip
    env, workers = worker_env(env, home=home, workers=workers)
    manifest = load_manifest(home / "fleet.yaml")
    names = [server.name for _, server in manifest.servers()]
    ports = _free_ports(len(names) + 2, "127.0.0.1")
    sim_ports = dict(zip(names, ports[2:], strict=True))
    children: list[ManagedProcess] = []
    try:
        sim = ManagedProcess(
            "sim", sim_argv(manifest, "127.0.0.1", sim_ports, ports[0]), log_dir=work_dir, cwd=home, die_with_parent=True,
            ready=lambda: all(_port_open("127.0.0.1", p) for p in sim_ports.values()), ready_timeout=30,
        )  # fmt: skip
        children.append(sim.start(cancel))

        backend_url = env.get("HEARTCODE_BACKEND_URL", "")
        # With a real backend the development keys mean nothing: do not advertise them.
        shown_keys = None if backend_url else keys_file
        if not backend_url:
            backend_port = ports[1]
            backend = ManagedProcess(
                "backend",
                [sys.executable, "-m", "litellm_cloud.sim.backend", "--host", "127.0.0.1",
                 "--port", str(backend_port), "--keys", str(keys_file.resolve())],
                log_dir=work_dir, cwd=home, die_with_parent=True,
                ready=lambda: _port_open("127.0.0.1", backend_port), ready_timeout=30,
            )  # fmt: skip
            children.append(backend.start(cancel))
            backend_url = f"http://127.0.0.1:{backend_port}"

        # Router and health-check policy as in production (background checks: /health never fans out).
        options = RenderOptions(endpoints={n: f"http://127.0.0.1:{p}/v1" for n, p in sim_ports.items()})
        config = work_dir / "config-dev.yaml"
        config.write_text(render_text(manifest, "local", options))
        master_key = env.get("LITELLM_MASTER_KEY") or "sk-dev-" + secrets.token_urlsafe(18)
        proxy_environment = proxy_env({**env, "HEARTCODE_BACKEND_URL": backend_url, "LITELLM_MASTER_KEY": master_key})
        base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        proxy = ManagedProcess(
            "proxy", proxy_argv(config, host=host, port=port, workers=workers), log_dir=work_dir, env=proxy_environment, cwd=home,
            die_with_parent=True, ready=lambda: _http_ok(f"{base}/health/liveliness"), ready_timeout=120,
        )  # fmt: skip
        children.append(proxy.start(cancel))
    except BaseException:
        for child in reversed(children):
            child.stop()
        raise
    return DevGateway(url=base, master_key=master_key, keys_file=shown_keys, children=children)


def _demo_keys(keys_file: Path) -> list[dict[str, object]]:
    try:
        data = yaml.safe_load(keys_file.read_text()) or []
    except OSError:
        return []
    entries = data.get("keys", []) if isinstance(data, dict) else data
    return [e for e in entries if isinstance(e, dict) and "key" in e]


def banner(gw: DevGateway) -> str:
    """What a newcomer needs: where the gateway is, the demo keys, and curl lines to try."""
    lines = [
        f"litellm-cloud dev gateway ready at {gw.url}",
        f"Playground (paste a demo key, chat in the browser): {gw.url}/playground",
        "",
    ]
    keys = _demo_keys(gw.keys_file) if gw.keys_file else []
    if keys:
        lines.append("Demo keys (development backend only):")
        for entry in keys:
            verified = "age-verified" if entry.get("age_verified") else "not age-verified"
            lines.append(f"  {entry.get('tier', '?'):8} {verified:17} {entry['key']}")
        lines.append("")
    key = str(keys[0]["key"]) if keys else "$HC_KEY"
    lines += [
        "Try:",
        f"  curl -s {gw.url}/v1/models -H 'Authorization: Bearer {key}'",
        f"  curl -s {gw.url}/v1/chat/completions -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\",
        '       -d \'{"model": "heartcode-default", "messages": [{"role": "user", "content": "Hello!"}]}\'',
        f"  curl -sN {gw.url}/v1/chat/completions -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\",
        '       -d \'{"model": "heartcode-default", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}\'',
        f"  curl -s {gw.url}/v1/embeddings -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\",
        '       -d \'{"model": "heartcode-embed", "input": "hello"}\'',
        f"  curl -s {gw.url}/v1/usage -H 'Authorization: Bearer {key}'",
        "",
        f"Admin (master) key for this run: {gw.master_key}",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: the terminal closed


def _handler(args: argparse.Namespace) -> int:
    home = Path.cwd()
    stop = threading.Event()
    for sig in _STOP_SIGNALS:
        signal.signal(sig, lambda *_: stop.set())  # only a flag: start-up and the loop below look at it
    if not args.keys.is_file() and not os.environ.get("HEARTCODE_BACKEND_URL"):
        print(f"litellm-cloud dev: keys file {args.keys} not found (--keys FILE)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="litellm-cloud-dev-") as tmp:
        work_dir = Path(tmp)
        try:
            gw = start_dev(
                home=home, port=args.port, host=args.host, keys_file=args.keys, env=os.environ, work_dir=work_dir,
                cancel=stop.is_set, workers=args.workers,
            )  # fmt: skip
        except StartCancelled:
            print("stopped while starting", file=sys.stderr)
            return 130
        try:
            print(banner(gw), flush=True)
            print(f"(logs in {work_dir})", flush=True)
            while not stop.wait(1.0):
                dead = [c.name for c in gw.children if not c.alive()]
                if dead:
                    print(f"stopping: {', '.join(dead)} exited", file=sys.stderr)
                    for child in gw.children:
                        if not child.alive():
                            print(child.log_tail(), file=sys.stderr)
                    return 1
        finally:
            gw.stop()
            print("stopped", flush=True)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``litellm-cloud dev``."""
    dev = sub.add_parser("dev", help="run the whole gateway locally on simulated GPUs")
    dev.add_argument("--port", type=int, default=4000)
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--workers", type=int, default=None, help="proxy workers (default: HEARTCODE_WORKERS; >1 needs Redis)")
    dev.add_argument("--keys", type=Path, default=DEFAULT_KEYS, help="keys file of the development backend")
    dev.set_defaults(func=_handler)
