"""Reverse SSH tunnels from on-prem to the cloud host, on paramiko: the autossh replacement.

``Runner`` runs one ``Supervisor`` per cloud host (``TunnelSet``); each keeps one SSH connection
carrying every ``Forward`` (from the fleet manifest or the tunnel config), pins its host's key, notices dead links with keepalives that want a reply, reconnects
with backoff, and reports to systemd and a status file. ``cli.add_parser`` wires
``litellm-cloud tunnel``.
"""

from __future__ import annotations

from .config import Forward, Keepalive, Reconnect, TunnelConfig, TunnelSet, load_config, load_tunnels
from .errors import (
    AuthRefused,
    ForwardRefused,
    HostKeyChanged,
    HostKeyUnknown,
    NeedsOperator,
    SessionLost,
    TunnelError,
    Unreachable,
)
from .runner import Runner
from .status import TunnelStatus, read_status, render_prometheus, render_text
from .supervisor import Supervisor

__all__ = [
    "AuthRefused",
    "Forward",
    "ForwardRefused",
    "HostKeyChanged",
    "HostKeyUnknown",
    "Keepalive",
    "NeedsOperator",
    "Reconnect",
    "Runner",
    "SessionLost",
    "Supervisor",
    "TunnelConfig",
    "TunnelError",
    "TunnelSet",
    "TunnelStatus",
    "Unreachable",
    "load_config",
    "load_tunnels",
    "read_status",
    "render_prometheus",
    "render_text",
]
