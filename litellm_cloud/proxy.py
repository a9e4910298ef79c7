"""How the LiteLLM proxy process is run: the one definition shared by docker, ``dev`` and the tests.

The container's command is ``litellm-cloud proxy --config /app/config.yaml --host 0.0.0.0 --port 4000``;
``litellm-cloud dev`` and the test fixtures build their command with ``proxy_argv`` and their
environment with ``proxy_env``. So the proxy that tests exercise is started exactly as production's.

The command is ``python -m litellm_cloud._serve ARGS``: LiteLLM's own proxy CLI (``run_server``) with a
graceful-shutdown timeout (``HEARTCODE_SHUTDOWN_GRACE``); see ``_serve``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

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


def exec_proxy(config: Path, *, home: Path, host: str, port: int, workers: int) -> None:
    """Replace this process with the proxy; ``home`` holds custom_auth.py, tiers.yaml and fleet.yaml.

    ``python -m`` puts the working directory first on ``sys.path``, so running from ``home`` is what
    makes ``custom_auth`` importable for configs that live elsewhere (dev and test configs).
    """
    os.chdir(home)
    argv = proxy_argv(config.resolve(), host=host, port=port, workers=workers)
    os.execve(sys.executable, argv, proxy_env(os.environ))
