"""The fleet manifest (``fleet.yaml``): the one description of the GPU fleet.

Everything that names a GPU server is derived from it: the cloud proxy's ``config.yaml``, the LAN
proxy's ``config-local.yaml`` (both by ``render``) and the reverse tunnel forwards (``tunnel_forwards``).
Adding or draining a server is an edit here followed by ``litellm-cloud render``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pydantic

from .._yaml import load_model


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")


class Server(_Strict):
    """One vLLM server: where the LAN reaches it, and which cloud-host port its tunnel opens."""

    name: str = pydantic.Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    gpu: int = pydantic.Field(ge=1)
    host: str
    port: int = pydantic.Field(gt=0, lt=65536)
    tunnel_port: int = pydantic.Field(gt=0, lt=65536)
    drain: bool = False


class Group(_Strict):
    """A model group: servers that serve the same model, balanced by the router."""

    mode: Literal["chat", "embedding"]
    served_model: str = pydantic.Field(description="the model name the vLLM servers serve")
    timeout: float = pydantic.Field(gt=0, description="seconds for a whole non-streamed call")
    stream_timeout: float = pydantic.Field(gt=0, description="seconds a stream may wait for its next bytes")
    keepalive_seconds: float = pydantic.Field(
        default=15, ge=0, le=300,
        description="chat streams: an SSE comment after this many silent seconds (0: none); LiteLLM's own setting",
    )  # fmt: skip
    age_verified_only: bool = False
    # Content of an age-verified-only group stays out of traces unless the manifest says otherwise.
    redact_content: bool = pydantic.Field(
        default_factory=lambda data: bool(data.get("age_verified_only", False)),
        description="keep message content out of traces; default: the group's age_verified_only",
    )
    servers: tuple[Server, ...] = pydantic.Field(min_length=1)


class Router(_Strict):
    """Router policy (see docs/fleet.md for why each value)."""

    routing_strategy: str = "simple-shuffle"
    num_retries: int = pydantic.Field(default=2, ge=0)
    rate_limit_retries: int = pydantic.Field(default=6, ge=0)
    allowed_fails: int = pydantic.Field(default=0, ge=0)
    internal_error_allowed_fails: int = pydantic.Field(default=2, ge=0)
    cooldown_time: float = pydantic.Field(default=30, gt=0)
    health_check_interval: int = pydantic.Field(default=30, ge=0, description="0 disables background checks")
    queue_routing: bool = pydantic.Field(
        default=True, description="send each request to the server with the least queue (fleet/queue.py)"
    )
    metrics_interval: float = pydantic.Field(default=1.0, gt=0, description="seconds between /metrics scrapes")
    metrics_timeout: float = pydantic.Field(default=0.5, gt=0, description="seconds one scrape may take")
    vllm_priority: bool = pydantic.Field(
        default=False,
        description="the servers run vLLM with --scheduling-policy priority: send each request's tier priority",
    )


class Backend(_Strict):
    """The HeartCode backend as the on-prem side reaches it, and its port on the cloud host."""

    host: str
    port: int = pydantic.Field(gt=0, lt=65536)
    tunnel_port: int = pydantic.Field(gt=0, lt=65536)


class Deployment(_Strict):
    """A rendered proxy config: where the proxy runs decides how it reaches the GPU servers."""

    output: str
    reach: Literal["lan", "tunnel"]
    tunnel_host: str = "host.docker.internal"


class Manifest(_Strict):
    """The whole fleet."""

    backend: Backend
    groups: dict[str, Group] = pydantic.Field(min_length=1)
    aliases: dict[str, str] = {}
    router: Router = Router()
    deployments: dict[str, Deployment] = pydantic.Field(min_length=1)

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> Manifest:
        for alias, target in self.aliases.items():
            if target not in self.groups:
                raise ValueError(f"alias {alias!r} points to unknown group {target!r}")
            if alias in self.groups:
                raise ValueError(f"alias {alias!r} shadows a group of the same name")
        names = [s.name for g in self.groups.values() for s in g.servers]
        if len(names) != len(set(names)):
            raise ValueError("server names must be unique across groups")
        ports = [s.tunnel_port for g in self.groups.values() for s in g.servers] + [self.backend.tunnel_port]
        if len(ports) != len(set(ports)):
            raise ValueError("tunnel ports must be unique (backend included)")
        return self

    def resolve(self, model: str) -> str | None:
        """The model group a requested name reaches (a group name or an alias), or ``None``."""
        if model in self.groups:
            return model
        return self.aliases.get(model)

    def names_for(self, group: str) -> list[str]:
        """Every public name that reaches ``group``: the group itself and its aliases."""
        return [group, *sorted(a for a, g in self.aliases.items() if g == group)]

    def servers(self) -> list[tuple[str, Server]]:
        """Every (group, server) pair, drained ones included."""
        return [(name, s) for name, g in self.groups.items() for s in g.servers]

    def tunnel_forwards(self) -> list[Forward]:
        """The reverse forwards the on-prem tunnel opens on the cloud host: backend first, then servers."""
        forwards = [Forward("backend", self.backend.tunnel_port, self.backend.host, self.backend.port)]
        forwards += [Forward(s.name, s.tunnel_port, s.host, s.port) for _, s in self.servers()]
        return forwards


@dataclass(frozen=True, slots=True)
class Forward:
    """One reverse forward: cloud-host ``remote_port`` reaches ``target_host:target_port`` on-prem."""

    name: str
    remote_port: int
    target_host: str
    target_port: int


def load_manifest(path: Path) -> Manifest:
    """Load and validate ``fleet.yaml``; a mistake raises ``ConfigError`` naming the line."""
    return load_model(path, Manifest)
