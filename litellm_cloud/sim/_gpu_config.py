"""Configuration of the GPU simulator: frozen specs for start-up, a mutable fault state per server.

``SimConfig`` (process) holds ``SimServer`` specs (one per port). A spec file says the same in YAML or
JSON::

    host: 127.0.0.1
    admin_port: 9000            # optional: the control port for the whole process
    seed: 1                     # optional: makes error_rate draws repeatable
    defaults: {ttft_ms: 5, tokens_per_s: 500}
    servers:
      - {name: gpu-1, port: 8080, model: heartcode-chat-sfw}
      - {name: embed-1, port: 8090, model: heartcode-embed, embedding_dim: 64}

``Faults`` is what ``POST /sim/control`` (or the admin port's ``POST /servers/<name>/control``) changes
at run time; ``parse_control`` checks such a request body.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from ._batch import check_batch_values

MODES = ("ok", "error", "hang", "busy", "crash", "down")
"""ok: serve. error: 500 on inference. busy: 429 on inference. hang: hold every request unanswered.
crash: reset connections (after ``fault_after_tokens`` streamed tokens). down: refuse connections."""


@dataclass(frozen=True)
class SimServer:
    """One simulated vLLM server: a name, a port (0 = any free port) and its behaviour."""

    name: str
    port: int = 0
    model: str = "sim-model"
    ttft_ms: float = 5.0
    """Time to first token (and the whole latency of an embeddings request)."""
    tokens_per_s: float = 500.0
    """Generation speed after the first token; 0 means instant."""
    embedding_dim: int = 64
    default_max_tokens: int = 16
    """Completion length when a request gives no ``max_tokens`` (finish_reason "stop")."""
    max_model_len: int = 32768
    """Prompt plus completion tokens above this are refused with 400, as vLLM does."""
    mode: str = "ok"
    error_rate: float = 0.0
    retry_after_s: float | None = None
    """Sent as ``Retry-After`` on 429s in busy mode; None sends no header."""
    fault_after_tokens: int = 0
    """In hang and crash modes, a stream first sends this many tokens."""
    hold_headers: bool = False
    """Streams: send the response headers with the first token, not at once (servers that withhold them)."""
    # Saturation like vLLM (see _batch.py); the defaults keep a server unsaturated.
    max_num_seqs: int = 0
    batch_tokens_per_s: float = 0.0
    kv_cache_tokens: int = 0
    scheduling_policy: str = "fcfs"
    metrics: str = "ok"
    """``/metrics`` alone: ok, error (500) or hang."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or not self.name.isprintable() or " " in self.name:
            raise ConfigError(f"server name {self.name!r}: use letters, digits and dashes, e.g. gpu-1")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"server {self.name}: port {self.port} is not in 0..65535")
        if self.embedding_dim < 1 or self.default_max_tokens < 1 or self.max_model_len < 1:
            raise ConfigError(f"server {self.name}: embedding_dim, default_max_tokens and max_model_len must be >= 1")
        try:
            _check_faults(self.fault_values())
        except ValueError as exc:
            raise ConfigError(f"server {self.name}: {exc}") from None

    def fault_values(self) -> dict[str, Any]:
        """The run-time-changeable part of this spec."""
        return {f.name: getattr(self, f.name) for f in fields(Faults)}


@dataclass
class Faults:
    """The behaviour of one server right now; changed by the control endpoints."""

    mode: str = "ok"
    error_rate: float = 0.0
    ttft_ms: float = 5.0
    tokens_per_s: float = 500.0
    retry_after_s: float | None = None
    fault_after_tokens: int = 0
    hold_headers: bool = False
    max_num_seqs: int = 0
    batch_tokens_per_s: float = 0.0
    kv_cache_tokens: int = 0
    scheduling_policy: str = "fcfs"
    metrics: str = "ok"


def _number(name: str, value: Any, low: float, high: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"'{name}' must be a number in [{low}, {high}], got {value!r}")


def _check_faults(values: Mapping[str, Any]) -> None:
    if "mode" in values and values["mode"] not in MODES:
        raise ValueError(f"'mode' must be one of {', '.join(MODES)}, got {values['mode']!r}")
    if "error_rate" in values:
        _number("error_rate", values["error_rate"], 0.0, 1.0)
    for name in ("ttft_ms", "tokens_per_s"):
        if name in values:
            _number(name, values[name], 0.0)
    if values.get("retry_after_s") is not None:
        _number("retry_after_s", values["retry_after_s"], 0.0)
    if "fault_after_tokens" in values:
        value = values["fault_after_tokens"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"'fault_after_tokens' must be an integer >= 0, got {value!r}")
    if "hold_headers" in values and not isinstance(values["hold_headers"], bool):
        raise ValueError(f"'hold_headers' must be true or false, got {values['hold_headers']!r}")
    check_batch_values(values)


CONTROL_KEYS = frozenset(f.name for f in fields(Faults)) | {"reset_stats"}


def parse_control(data: Any) -> dict[str, Any]:
    """The changes a control request asks for; ValueError (a 400) names what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("control body must be a JSON object")  # noqa: TRY004 - ValueError means a 400 here
    unknown = set(data) - CONTROL_KEYS
    if unknown:
        raise ValueError(f"unknown control keys {sorted(unknown)}; known: {sorted(CONTROL_KEYS)}")
    _check_faults(data)
    if "reset_stats" in data and not isinstance(data["reset_stats"], bool):
        raise ValueError("'reset_stats' must be true or false")
    return dict(data)


@dataclass(frozen=True)
class SimConfig:
    """The whole simulator process: its servers, the interface and the optional admin port."""

    servers: tuple[SimServer, ...]
    host: str = "127.0.0.1"
    admin_port: int | None = None
    """Control port for the whole process (0 = any free port; None = no admin port)."""
    seed: int | None = None
    """Seed for error_rate draws; None draws differently each run."""
    strict_model: bool = False
    """Refuse a request whose ``model`` is not the served name with 404, as vLLM does."""
    use_uvloop: bool = True
    """Run on uvloop when it is installed (measurably faster); ``run`` only."""

    def __post_init__(self) -> None:
        if not self.servers:
            raise ConfigError("the simulator needs at least one server (--server NAME=PORT)")
        names = [s.name for s in self.servers]
        if len(set(names)) != len(names):
            raise ConfigError(f"server names must be unique: {names}")
        ports = [s.port for s in self.servers if s.port] + ([self.admin_port] if self.admin_port else [])
        if len(set(ports)) != len(ports):
            raise ConfigError(f"ports must be unique: {sorted(ports)}")

    def server(self, name: str) -> SimServer:
        """The spec of server ``name``."""
        for spec in self.servers:
            if spec.name == name:
                return spec
        raise KeyError(name)


_SERVER_FIELDS = {f.name for f in fields(SimServer)}


def config_from_mapping(data: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                        source: str = "spec") -> SimConfig:
    """A SimConfig from a parsed spec file; ``overrides`` (server fields) beat the file's values."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: must be a mapping with a 'servers' list")
    unknown = set(data) - {"host", "admin_port", "seed", "strict_model", "defaults", "servers"}
    if unknown:
        raise ConfigError(f"{source}: unknown keys {sorted(unknown)}")
    defaults = dict(data.get("defaults") or {})
    servers = []
    for i, item in enumerate(data.get("servers") or []):
        if not isinstance(item, Mapping) or "name" not in item:
            raise ConfigError(f"{source}: servers[{i}] must be a mapping with a name")
        values = {**defaults, **item, **(overrides or {})}
        bad = set(values) - _SERVER_FIELDS
        if bad:
            raise ConfigError(f"{source}: servers[{i}]: unknown keys {sorted(bad)}; known: {sorted(_SERVER_FIELDS)}")
        try:
            servers.append(SimServer(**values))
        except TypeError as exc:
            raise ConfigError(f"{source}: servers[{i}]: {exc}") from None
    kwargs = {k: data[k] for k in ("host", "admin_port", "seed", "strict_model") if k in data}
    return SimConfig(servers=tuple(servers), **kwargs)


def load_spec(path: Path, overrides: Mapping[str, Any] | None = None) -> SimConfig:
    """A SimConfig from a YAML or JSON spec file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read simulator spec {path}: {exc}") from None
    if path.suffix == ".json":
        data = json.loads(text)
    else:
        import yaml  # only spec files need it

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return config_from_mapping(data or {}, overrides, source=str(path))


def with_overrides(config: SimConfig, **changes: Any) -> SimConfig:
    """``config`` with ``changes`` applied to every server (unknown fields raise TypeError)."""
    return replace(config, servers=tuple(replace(s, **changes) for s in config.servers))
