"""The tunnel's configuration: one frozen ``TunnelConfig`` built once from a YAML file (and the fleet
manifest), then passed in.

The file names the cloud host, the key, the pinned known_hosts file and, unless ``fleet`` points at the
fleet manifest, the forwards themselves (``load_config``: one host, the original format)::

    host: cloud.example.com
    port: 22
    user: tunnel
    identity_file: credential:tunnel-key     # $CREDENTIALS_DIRECTORY/tunnel-key (systemd LoadCredential=)
    known_hosts: credential:tunnel-known-hosts  # also a credential: a DynamicUser= service reads it there
    fleet: /etc/litellm-cloud/fleet.yaml     # forwards from the manifest ...
    forwards:                                # ... and/or listed here
      - {name: backend, remote_port: 8000, target: "127.0.0.1:8000"}

Several cloud hosts (``load_tunnels``; one ``TunnelConfig`` and one supervised connection each, every
host gets every forward) are listed under ``hosts:`` instead of the top-level ``host``/``port``/
``known_hosts``; ``user`` and ``identity_file`` at the top level are defaults an entry may override::

    user: tunnel
    identity_file: credential:tunnel-key
    hosts:
      - {name: cloud-a, host: a.example.com, known_hosts: credential:known-hosts-a}
      - {name: cloud-b, host: b.example.com, port: 2222, known_hosts: credential:known-hosts-b}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pydantic

from .._errors import ConfigError
from .._yaml import load_model
from ..fleet.manifest import Forward

CREDENTIAL_PREFIX = "credential:"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
LISTEN_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):\d{1,5}$"


@dataclass(frozen=True, slots=True)
class Keepalive:
    """Like OpenSSH's ``ServerAliveInterval``/``ServerAliveCountMax``: a dead link is noticed within
    ``interval * count`` seconds."""

    interval: float = 15.0
    count: int = 3

    @property
    def deadline(self) -> float:
        """Seconds without a keepalive reply after which the connection is declared dead."""
        return self.interval * self.count


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Backoff settings, in seconds.

    ``unreachable_*`` applies while the server refuses or drops TCP connections (cheap to retry, and
    what brings the tunnel back within ``unreachable_cap`` plus a handshake once the server is back);
    ``initial``/``cap`` apply to failed or dropped SSH sessions; ``auth_*`` to host-key and
    authentication refusals, which a retry will not fix until someone changes a file.
    """

    initial: float = 0.5
    cap: float = 30.0
    unreachable_initial: float = 0.05
    unreachable_cap: float = 0.25
    auth_initial: float = 30.0
    auth_cap: float = 600.0
    stable_after: float = 60.0
    forward_retry: float = 1.0
    forward_retry_cap: float = 10.0
    jitter: float = 0.2


@dataclass(frozen=True, slots=True)
class TunnelConfig:
    """Everything the supervisor needs; built once by ``load_config``."""

    host: str
    user: str
    identity_file: Path
    known_hosts: Path
    forwards: tuple[Forward, ...]
    port: int = 22
    bind_address: str = "127.0.0.1"
    client_id: str = "onprem"
    session_command: str = "litellm-tunnel session {client_id}"
    strict: bool = False
    connect_timeout: float = 5.0
    target_connect_timeout: float = 5.0
    ready_timeout: float = 30.0
    keepalive: Keepalive = field(default_factory=Keepalive)
    reconnect: Reconnect = field(default_factory=Reconnect)
    status_file: Path | None = None
    # None: the keepalive deadline (interval x count); 0: off (the keepalive alone decides).
    tcp_user_timeout: float | None = None
    # (host, port) to serve Prometheus ``/metrics`` on; None: no HTTP listener.
    metrics_listen: tuple[str, int] | None = None
    # The host's name in status rows, logs and the metrics' ``host`` label; "": ``host_label``.
    name: str = ""

    @property
    def label(self) -> str:
        """The name this host goes by in status, logs and metrics."""
        return self.name or self.host_label

    @property
    def host_label(self) -> str:
        """``host`` as known_hosts spells it: ``[host]:port`` unless the port is 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    @property
    def user_timeout(self) -> float:
        """TCP_USER_TIMEOUT in seconds (0: not set)."""
        return self.keepalive.deadline if self.tcp_user_timeout is None else self.tcp_user_timeout

    def command(self) -> str | None:
        """The command run once on connect (the cloud-side helper), or ``None`` for none."""
        text = self.session_command.strip()
        return text.format(client_id=self.client_id) if text else None

    def with_forwards(self, forwards: Iterable[Forward]) -> TunnelConfig:
        """A copy with ``forwards`` (checked for duplicate ports and names)."""
        return replace(self, forwards=check_forwards(tuple(forwards)))


@dataclass(frozen=True, slots=True)
class TunnelSet:
    """One ``TunnelConfig`` per cloud host, built once by ``load_tunnels``. The process-wide settings
    (status file, metrics listener, READY timeout) are file-level, so every host carries the same."""

    hosts: tuple[TunnelConfig, ...]

    @property
    def status_file(self) -> Path | None:
        """Where the combined status of every host is written."""
        return self.hosts[0].status_file

    @property
    def metrics_listen(self) -> tuple[str, int] | None:
        """Where the process serves ``/metrics`` for every host."""
        return self.hosts[0].metrics_listen

    @property
    def ready_timeout(self) -> float:
        """Seconds after which READY is sent even if some host is not up."""
        return self.hosts[0].ready_timeout


def check_forwards(forwards: tuple[Forward, ...]) -> tuple[Forward, ...]:
    """Refuse two forwards on one remote port (only one could win) or with one name."""
    seen_ports: dict[int, str] = {}
    seen_names: set[str] = set()
    for fwd in forwards:
        if not 0 < fwd.remote_port < 65536 or not 0 < fwd.target_port < 65536:
            raise ConfigError(f"forward {fwd.name}: ports must be 1-65535")
        if fwd.remote_port in seen_ports:
            raise ConfigError(
                f"forwards {seen_ports[fwd.remote_port]} and {fwd.name} both use remote port {fwd.remote_port}"
            )
        if fwd.name in seen_names:
            raise ConfigError(f"two forwards are named {fwd.name}")
        seen_ports[fwd.remote_port] = fwd.name
        seen_names.add(fwd.name)
    return forwards


class _ForwardModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    name: str
    remote_port: int = pydantic.Field(gt=0, lt=65536)
    target: str = pydantic.Field(pattern=r"^\[?[^\s\]]+\]?:\d{1,5}$", description="host:port")

    def to_forward(self) -> Forward:
        return Forward(self.name, self.remote_port, *_split_host_port(self.target))


def _defaults(cls: type) -> dict[str, Any]:
    """The defaults a config dataclass states: the file models below take theirs from here, so each
    default is written once (the models add only the bounds a file's value must keep)."""
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


_KEEPALIVE, _RECONNECT, _TUNNEL = _defaults(Keepalive), _defaults(Reconnect), _defaults(TunnelConfig)


class _KeepaliveModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    interval: float = pydantic.Field(default=_KEEPALIVE["interval"], gt=0)
    count: int = pydantic.Field(default=_KEEPALIVE["count"], ge=1)


class _ReconnectModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    initial: float = pydantic.Field(default=_RECONNECT["initial"], gt=0)
    cap: float = pydantic.Field(default=_RECONNECT["cap"], gt=0)
    unreachable_initial: float = pydantic.Field(default=_RECONNECT["unreachable_initial"], gt=0)
    unreachable_cap: float = pydantic.Field(default=_RECONNECT["unreachable_cap"], gt=0)
    auth_initial: float = pydantic.Field(default=_RECONNECT["auth_initial"], gt=0)
    auth_cap: float = pydantic.Field(default=_RECONNECT["auth_cap"], gt=0)
    stable_after: float = pydantic.Field(default=_RECONNECT["stable_after"], ge=0)
    forward_retry: float = pydantic.Field(default=_RECONNECT["forward_retry"], gt=0)
    forward_retry_cap: float = pydantic.Field(default=_RECONNECT["forward_retry_cap"], gt=0)
    jitter: float = pydantic.Field(default=_RECONNECT["jitter"], ge=0, le=1)


class _HostModel(pydantic.BaseModel):
    """One entry of ``hosts:``: its own address and pinned host key (required: no host goes unpinned)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    name: str | None = pydantic.Field(default=None, pattern=r"^[A-Za-z0-9_.:\[\]-]{1,64}$")
    host: str
    port: int = pydantic.Field(default=_TUNNEL["port"], gt=0, lt=65536)
    known_hosts: str
    user: str | None = None
    identity_file: str | None = None
    bind_address: str | None = None  # where its listeners bind on that host; default the top-level one


class _FileModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    # Required in the one-host form; with hosts: each entry names its own (checked in _cloud_hosts).
    host: str | None = None
    port: int | None = pydantic.Field(default=None, gt=0, lt=65536)
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    hosts: list[_HostModel] | None = pydantic.Field(default=None, min_length=1)
    bind_address: str = _TUNNEL["bind_address"]
    client_id: str = _TUNNEL["client_id"]
    session_command: str = _TUNNEL["session_command"]
    strict: bool = _TUNNEL["strict"]
    connect_timeout: float = pydantic.Field(default=_TUNNEL["connect_timeout"], gt=0)
    target_connect_timeout: float = pydantic.Field(default=_TUNNEL["target_connect_timeout"], gt=0)
    ready_timeout: float = pydantic.Field(default=_TUNNEL["ready_timeout"], ge=0)
    keepalive: _KeepaliveModel = _KeepaliveModel()
    reconnect: _ReconnectModel = _ReconnectModel()
    status_file: str | None = None
    tcp_user_timeout: float | None = pydantic.Field(default=_TUNNEL["tcp_user_timeout"], ge=0)
    metrics_listen: str | None = pydantic.Field(default=None, pattern=LISTEN_PATTERN,
                                                description="host:port, e.g. 127.0.0.1:9470")
    fleet: str | None = None
    forwards: list[_ForwardModel] = []


def _split_host_port(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (already matched against its pattern) as (host, port)."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` as a (host, port) pair; a bad value is a ``ConfigError``."""
    if not re.match(LISTEN_PATTERN, text):
        raise ConfigError(f"metrics_listen {text!r}: want host:port, e.g. 127.0.0.1:9470")
    host, port = _split_host_port(text)
    if not 0 <= port < 65536:
        raise ConfigError(f"metrics_listen {text!r}: port must be 0-65535")
    return host, port


def _resolve_path(raw: str, base: Path, env: Mapping[str, str], what: str) -> Path:
    if raw.startswith(CREDENTIAL_PREFIX):
        creds = env.get("CREDENTIALS_DIRECTORY")
        if not creds:
            raise ConfigError(
                f"{what} {raw!r} names a systemd credential but CREDENTIALS_DIRECTORY is not set; "
                "run under systemd with LoadCredential= or give a file path"
            )
        return Path(creds) / raw[len(CREDENTIAL_PREFIX) :]
    path = Path(raw).expanduser()
    return path if path.is_absolute() else base / path


def _cloud_hosts(path: Path, model: _FileModel) -> list[_HostModel]:
    """The file's cloud hosts: the ``hosts:`` entries, or the one host of the top-level keys."""
    if model.hosts is None:
        missing = [k for k in ("host", "user", "identity_file", "known_hosts") if getattr(model, k) is None]
        if missing:
            raise ConfigError(f"{path}: {', '.join(missing)}: required (or list the cloud hosts under hosts:)")
        assert model.host is not None and model.known_hosts is not None
        return [_HostModel(host=model.host, port=model.port or _TUNNEL["port"], known_hosts=model.known_hosts,
                           user=model.user, identity_file=model.identity_file)]
    given = [k for k in ("host", "port", "known_hosts") if getattr(model, k) is not None]
    if given:
        raise ConfigError(f"{path}: {', '.join(given)}: give them in each entry of hosts: instead "
                          "(each cloud host has its own address and pinned key)")
    for i, entry in enumerate(model.hosts):
        for key in ("user", "identity_file"):
            if getattr(entry, key) is None and getattr(model, key) is None:
                raise ConfigError(f"{path}: hosts.{i}.{key}: not set there nor at the top level")
    return model.hosts


def load_config(
    path: Path,
    *,
    env: Mapping[str, str],
    fleet: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TunnelConfig:
    """The config of a one-host file (``load_tunnels`` for any number of hosts)."""
    tunnels = load_tunnels(path, env=env, fleet=fleet, overrides=overrides)
    if len(tunnels.hosts) != 1:
        raise ConfigError(f"{path}: lists {len(tunnels.hosts)} cloud hosts; load it with load_tunnels")
    return tunnels.hosts[0]


def load_tunnels(
    path: Path,
    *,
    env: Mapping[str, str],
    fleet: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TunnelSet:
    """Build one config per cloud host from ``path``; forwards come from ``fleet`` (or the file's
    ``fleet:``) plus the file's ``forwards:``, the same for every host. ``env`` supplies
    ``CREDENTIALS_DIRECTORY``; ``overrides`` replaces fields of every host's config."""
    model = load_model(path, _FileModel)
    hosts = _cloud_hosts(path, model)
    base = path.resolve().parent
    if not _CLIENT_ID.match(model.client_id):
        raise ConfigError(f"{path}: client_id must match {_CLIENT_ID.pattern}")
    forwards = [f.to_forward() for f in model.forwards]
    fleet_path = fleet or (_resolve_path(model.fleet, base, env, "fleet") if model.fleet else None)
    if fleet_path is not None:
        from ..fleet.manifest import load_manifest  # the lead's module; imported only when used

        forwards = load_manifest(fleet_path).tunnel_forwards() + forwards
    if not forwards:
        raise ConfigError(f"{path}: no forwards: list them under forwards: or point fleet: at fleet.yaml")
    # Everything but the host's own address, user, key and pin: the same for every host.
    shared = TunnelConfig(
        host="", user="", identity_file=Path(), known_hosts=Path(),
        forwards=check_forwards(tuple(forwards)),
        bind_address=model.bind_address,
        client_id=model.client_id,
        session_command=model.session_command,
        strict=model.strict,
        connect_timeout=model.connect_timeout,
        target_connect_timeout=model.target_connect_timeout,
        ready_timeout=model.ready_timeout,
        keepalive=Keepalive(**model.keepalive.model_dump()),
        reconnect=Reconnect(**model.reconnect.model_dump()),
        status_file=_resolve_path(model.status_file, base, env, "status_file") if model.status_file else None,
        tcp_user_timeout=model.tcp_user_timeout,
        metrics_listen=parse_listen(model.metrics_listen) if model.metrics_listen else None,
    )
    configs: list[TunnelConfig] = []
    for entry in hosts:
        user, identity = entry.user or model.user, entry.identity_file or model.identity_file
        assert user is not None and identity is not None  # _cloud_hosts checked
        config = replace(
            shared, host=entry.host, port=entry.port, user=user, name=entry.name or "",
            bind_address=entry.bind_address or model.bind_address,
            identity_file=_resolve_path(identity, base, env, "identity_file"),
            known_hosts=_resolve_path(entry.known_hosts, base, env, "known_hosts"),
        )
        configs.append(replace(config, **dict(overrides)) if overrides else config)
    _check_hosts(path, configs)
    return TunnelSet(tuple(configs))


def _check_hosts(path: Path, configs: list[TunnelConfig]) -> None:
    """Two entries for one server (or one name) would fight over the same ports and status rows."""
    labels: set[str] = set()
    addresses: set[tuple[str, int]] = set()
    for config in configs:
        if (config.host, config.port) in addresses:
            raise ConfigError(f"{path}: {config.host_label} is listed twice under hosts:")
        if config.label in labels:
            raise ConfigError(f"{path}: two cloud hosts are named {config.label}")
        labels.add(config.label)
        addresses.add((config.host, config.port))
