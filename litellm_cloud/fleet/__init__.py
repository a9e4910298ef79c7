"""The GPU fleet: the manifest and the LiteLLM configs rendered from it."""

from .manifest import Forward, Group, Manifest, Server, load_manifest
from .render import RenderOptions, render_all, render_config, render_text

__all__ = [
    "Forward",
    "Group",
    "Manifest",
    "RenderOptions",
    "Server",
    "load_manifest",
    "render_all",
    "render_config",
    "render_text",
]
