"""Simulated backends for tests, benchmarks and ``litellm-cloud dev``.

``litellm_cloud.sim.gpu`` is the vLLM-compatible GPU fleet (``python -m litellm_cloud.sim``). The names
below load lazily, so importing another module of this package (the dev key backend) costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["SimConfig", "SimHandle", "SimServer", "Simulator", "run", "serve", "start_in_thread"]

if TYPE_CHECKING:
    from ._gpu_config import SimConfig, SimServer
    from .gpu import SimHandle, Simulator, run, serve, start_in_thread


def __getattr__(name: str) -> Any:
    if name in ("SimConfig", "SimServer"):
        from . import _gpu_config

        return getattr(_gpu_config, name)
    if name in __all__:
        from . import gpu

        return getattr(gpu, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
