"""How the LiteLLM proxy process is run: the one definition shared by docker, ``dev`` and the tests.

The container's command is ``litellm-cloud proxy --config /app/config.yaml --host 0.0.0.0 --port 4000``;
``litellm-cloud dev`` and the test fixtures build their command with ``proxy_argv`` and their
environment with ``proxy_env``. So the proxy that tests exercise is started exactly as production's.

The command is ``python -m litellm_cloud._serve ARGS``: LiteLLM's own proxy CLI (``run_server``) with a
graceful-shutdown timeout (``HEARTCODE_SHUTDOWN_GRACE``); see ``_serve``.

Workers: ``HEARTCODE_WORKERS`` (or ``--workers``) worker processes share the port. ``worker_env`` refuses
settings that several workers would multiply (``memory://`` limits, revocation without Redis) and gives
the process group one ``PROMETHEUS_MULTIPROC_DIR``, emptied at start, so ``/metrics`` sums every worker.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ._config import Settings
from .observability.metrics import MULTIPROC_ENV

#: Environment every proxy process gets (unless the caller already set the variable).
PROXY_ENV_DEFAULTS: Mapping[str, str] = {
    # No network at start-up: use the cost map bundled with LiteLLM instead of downloading it.
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_OFFLINE_MODE": "true",
    # LiteLLM's INFO level writes ~5 lines per request (-15% throughput, measured); DEBUG prints bodies.
    "LITELLM_LOG": "WARNING",
    # LiteLLM's anonymous usage telemetry would try the internet.
    "LITELLM_TELEMETRY": "False",
    "PYTHONUNBUFFERED": "1",
}


def proxy_env(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` plus the proxy defaults (``base`` wins)."""
    return {**PROXY_ENV_DEFAULTS, **base}


def proxy_argv(config: Path, *, host: str = "0.0.0.0", port: int = 4000, workers: int = 1) -> list[str]:
    """The command that runs LiteLLM's proxy server with ``config`` (through ``_serve``: its CLI plus a
    graceful-shutdown timeout)."""
    return [
        sys.executable, "-m", "litellm_cloud._serve",
        "--config", str(config), "--host", host, "--port", str(port), "--num_workers", str(workers),
    ]  # fmt: skip


def worker_env(env: Mapping[str, str], *, home: Path, workers: int | None = None) -> tuple[dict[str, str], int]:
    """``env`` for a proxy of ``workers`` (default: ``HEARTCODE_WORKERS``) workers, and their count.

    Validates the settings first (``ConfigError`` says what to change). With more than one worker, the
    metrics directory is created (or, when ``PROMETHEUS_MULTIPROC_DIR`` is given, emptied of an earlier
    run's files, which would otherwise be added to this run's totals).
    """
    out = dict(env)
    if workers is not None:
        out["HEARTCODE_WORKERS"] = str(workers)
    count = Settings.from_env(out, base_dir=home).workers
    out["HEARTCODE_WORKERS"] = str(count)  # "auto" resolved once, for every worker alike
    if count > 1:
        directory = Path(out.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="litellm-cloud-metrics-"))
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        out[MULTIPROC_ENV] = str(directory)
    return out, count


def exec_proxy(config: Path, *, home: Path, host: str, port: int, workers: int | None = None) -> None:
    """Replace this process with the proxy; ``home`` holds custom_auth.py, tiers.yaml and fleet.yaml.

    ``python -m`` puts the working directory first on ``sys.path``, so running from ``home`` is what
    makes ``custom_auth`` importable for configs that live elsewhere (dev and test configs).
    """
    env, count = worker_env(os.environ, home=home, workers=workers)
    os.chdir(home)
    argv = proxy_argv(config.resolve(), host=host, port=port, workers=count)
    os.execve(sys.executable, argv, proxy_env(env))
