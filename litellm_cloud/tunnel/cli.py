"""``litellm-cloud tunnel [run|status]``: parse, build the config, call the library, map errors to exit
codes. The only place in the tunnel package that reads the process environment or installs signals.

Exit codes: 0 ok; 1 ``status``: tunnel running but not every forward of every cloud host is up; 2 configuration error;
3 ``status``: no running tunnel.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paramiko

from .._errors import ConfigError
from .config import TunnelSet, load_tunnels, parse_listen
from .connection import load_identity
from .errors import NeedsOperator
from .runner import Runner
from .sdnotify import Notifier
from .status import all_up, host_snapshots, read_status, render_prometheus, render_text

if TYPE_CHECKING:
    from ..observability.exposition import MetricsServer

DEFAULT_CONFIG = Path("/etc/litellm-cloud/tunnel.yaml")
DEFAULT_STATUS_FILE = Path("/run/litellm-tunnel/status.json")

EXIT_OK, EXIT_DEGRADED, EXIT_CONFIG, EXIT_NOT_RUNNING = 0, 1, 2, 3


def _common() -> argparse.ArgumentParser:
    # SUPPRESS: options may come before or after the action without one level clobbering the other.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                        help=f"tunnel config file (default {DEFAULT_CONFIG})")
    common.add_argument("--fleet", type=Path, default=argparse.SUPPRESS,
                        help="fleet manifest (fleet.yaml) to derive the forwards from")
    common.add_argument("--status-file", type=Path, default=argparse.SUPPRESS,
                        help=f"status file (default: the config's status_file, else {DEFAULT_STATUS_FILE})")
    common.add_argument("--log-level", default=argparse.SUPPRESS, choices=["debug", "info", "warning", "error"])
    return common


def _run_options() -> argparse.ArgumentParser:
    run = argparse.ArgumentParser(add_help=False)
    run.add_argument("--metrics-listen", default=argparse.SUPPRESS, metavar="HOST:PORT",
                     help="serve Prometheus /metrics here, e.g. 127.0.0.1:9470 (default: the config's "
                          "metrics_listen, else off)")
    return run


def add_parser(subparsers: Any) -> None:
    """Register ``tunnel`` (actions ``run``, the default, and ``status``) on the top-level CLI."""
    common, run_options = _common(), _run_options()
    parser = subparsers.add_parser(
        "tunnel", parents=[common, run_options], help="reverse SSH tunnels from on-prem to the cloud host",
        description="Keep the reverse SSH tunnels to the cloud host up (replaces autossh).",
    )
    # config=None means "not given": `status` then tolerates a missing default config file.
    parser.set_defaults(func=handler, tunnel_action="run", config=None, fleet=None,
                        status_file=None, log_level="info", format="text", metrics_listen=None)
    actions = parser.add_subparsers(dest="tunnel_action", metavar="{run,status}")
    actions.add_parser("run", parents=[common, run_options], help="run the tunnel supervisor (default)")
    status = actions.add_parser("status", parents=[common], help="show each forward, its state and bytes")
    status.add_argument("--format", choices=["text", "json", "prometheus"], default="text")


def handler(args: argparse.Namespace) -> int:
    """Run the chosen action; returns the exit code."""
    if args.tunnel_action == "status":
        return _status(args)
    return _run(args)


def _setup_logging(level: str) -> None:
    # Under systemd the journal stamps the time itself.
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") else (
        "%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr)
    logging.getLogger("paramiko").setLevel(logging.WARNING)


def _load(args: argparse.Namespace) -> TunnelSet:
    overrides: dict[str, Any] = {}
    if args.status_file is not None:
        overrides["status_file"] = args.status_file
    if args.metrics_listen is not None:
        overrides["metrics_listen"] = parse_listen(args.metrics_listen)
    return load_tunnels(args.config or DEFAULT_CONFIG, env=os.environ, fleet=args.fleet, overrides=overrides)


def _serve_metrics(tunnels: TunnelSet, snapshot: Callable[[], dict[str, Any]],
                   log: logging.Logger) -> MetricsServer | None:
    if tunnels.metrics_listen is None:
        return None
    host, port = tunnels.metrics_listen
    from ..observability.exposition import serve_metrics  # only when asked for (prometheus_client)

    try:
        server = serve_metrics(lambda: render_prometheus(snapshot()).encode(), host, port)
    except OSError as exc:
        # The tunnel matters more than its metrics: keep the forwards up, say so loudly (and the
        # scrape target shows down in Prometheus).
        log.error("cannot serve metrics on %s:%s: %s; running without /metrics", host, port, exc)
        return None
    log.info("metrics: http://%s:%s/metrics", host if ":" not in host else f"[{host}]", server.port)
    return server


def _run(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level)
    log = logging.getLogger("litellm_cloud.tunnel")
    try:
        tunnels = _load(args)
        identities: dict[Path, paramiko.PKey] = {}
        for host in tunnels.hosts:
            if host.identity_file not in identities:
                identities[host.identity_file] = load_identity(host.identity_file)
    except (ConfigError, NeedsOperator) as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    if tunnels.status_file is not None:
        tunnels.status_file.parent.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: closing the connection", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    notifier = Notifier.from_env(os.environ)
    runner = Runner(tunnels, identities, stop=stop, notifier=notifier)
    metrics = _serve_metrics(tunnels, runner.snapshot, log)
    try:
        return runner.run()
    finally:
        if metrics is not None:
            metrics.close()
        notifier.close()


def _status_path(args: argparse.Namespace) -> Path:
    """``--status-file``, else the config's ``status_file``, else the default. A config that was given
    (or exists at the default path) but does not load is an error, not a silent fall-back."""
    if args.status_file is not None:
        return Path(args.status_file)
    path = Path(args.config) if args.config is not None else DEFAULT_CONFIG
    if args.config is None and not path.exists():
        return DEFAULT_STATUS_FILE
    # `status` runs in an admin's shell, not under systemd: credential: paths only need to resolve,
    # they are never read here.
    env = {"CREDENTIALS_DIRECTORY": "/run/credentials/litellm-tunnel.service", **os.environ}
    return load_tunnels(path, env=env, fleet=args.fleet).status_file or DEFAULT_STATUS_FILE


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _status(args: argparse.Namespace) -> int:
    try:
        path = _status_path(args)
    except ConfigError as exc:
        print(f"cannot load the tunnel config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        snap = read_status(path)
    except FileNotFoundError:
        print(f"no status file at {path}: is the tunnel running?", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except (OSError, ValueError) as exc:
        print(f"cannot read status file {path}: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    running = snap["state"] != "stopped" and _pid_alive(int(snap["pid"]))
    if not running and snap["state"] != "stopped":
        for part in {id(snap): snap, **{id(h): h for h in host_snapshots(snap)}}.values():
            part["state"] = "stopped"
            part["last_error"] = f"process {snap['pid']} is gone (status file is stale)"
    if args.format == "json":
        print(json.dumps(snap, indent=1))
    elif args.format == "prometheus":
        print(render_prometheus(snap), end="")
    else:
        print(render_text(snap, time.time()))
    if not running:
        return EXIT_NOT_RUNNING
    return EXIT_OK if all_up(snap) else EXIT_DEGRADED
