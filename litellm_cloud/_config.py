"""Settings: one typed, frozen object built once from the environment and the files it names.

``Settings.from_env(mapping)`` takes the mapping to read (tests pass a dict; nothing patches
``os.environ``). Secrets are ``Secret`` values that hide themselves in ``repr`` and logs. Every setting,
its variable and its default is listed in the README's configuration table (``litellm-cloud settings``
prints it from ``FIELDS``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ._errors import ConfigError
from ._redis import check_url as check_redis_url
from .fleet.manifest import Manifest, load_manifest
from .tiers import Tiers


class Secret:
    """A string that does not show itself in ``repr``/``str`` (so not in logs or tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__


@dataclass(frozen=True)
class Field:
    """One environment variable: its name, default and meaning (for docs and ``settings``)."""

    env: str
    default: str
    help: str


FIELDS: tuple[Field, ...] = (
    Field("HEARTCODE_BACKEND_URL", "http://host.docker.internal:8000", "HeartCode key backend base URL"),
    Field("HEARTCODE_BACKEND_TOKEN", "", "service token sent as Bearer to the backend (optional)"),
    Field("HEARTCODE_BACKEND_TIMEOUT", "10", "seconds to wait for a key validation"),
    Field("HEARTCODE_AUTH_CACHE_TTL", "60", "seconds a valid key is cached"),
    Field("HEARTCODE_AUTH_NEGATIVE_TTL", "10", "seconds an invalid key is cached"),
    Field("HEARTCODE_AUTH_STALE_GRACE", "300", "seconds a cached key keeps working while the backend is down"),
    Field("HEARTCODE_AUTH_CACHE_SIZE", "100000", "valid keys cached at most; refused keys are held apart, up to a quarter of this"),
    Field("HEARTCODE_TIERS_FILE", "tiers.yaml", "tier table (limits and model access)"),
    Field("HEARTCODE_FLEET_FILE", "fleet.yaml", "fleet manifest (model groups, aliases)"),
    Field("HEARTCODE_LIMITS_STORAGE", "memory://", "limiter storage: memory://, redis://host:port/db or redis+sentinel://host:26379[,host:26379]/service[/db]"),
    Field("HEARTCODE_LIMITS_ON_STORAGE_ERROR", "closed", "when limiter storage fails: closed (503) or open"),
    Field("HEARTCODE_LIMITS_SCOPE", "account", "count limits per account (user_id) or per key"),
    Field("HEARTCODE_REDIS_URL", "", "Redis shared by replicas (key revocation; redis:// or redis+sentinel://); empty: this process only"),
    Field("LITELLM_MASTER_KEY", "", "LiteLLM admin key (admin routes); keep secret"),
    Field("LANGFUSE_PUBLIC_KEY", "", "Langfuse public key; tracing is on only when both keys are set"),
    Field("LANGFUSE_SECRET_KEY", "", "Langfuse secret key"),
    Field("LANGFUSE_HOST", "https://cloud.langfuse.com", "Langfuse base URL (cloud, or self-hosted v3.22+); traces go to its OTLP endpoint /api/public/otel/v1/traces"),
    Field("HEARTCODE_OTLP_ENDPOINT", "", "also send the traces to this OTLP/HTTP traces URL (Tempo, Jaeger, a collector: http://host:4318/v1/traces); empty: none"),
    Field("HEARTCODE_OTLP_HEADERS", "", "headers for HEARTCODE_OTLP_ENDPOINT, key=value,key2=value2 (secret)"),
    Field("HEARTCODE_METRICS_TOKEN", "", "Bearer token for /metrics; empty: master key only"),
    Field("HEARTCODE_SHUTDOWN_GRACE", "25", "seconds a stopping proxy lets requests and streams in flight finish"),
    Field("HEARTCODE_GC_FREEZE", "on", "on: after start-up, freeze what it built out of the garbage collector's reach, so a full collection walks only what serving allocated (pauses of ~1 s otherwise); off: to compare"),
    Field("HEARTCODE_GC_THRESHOLD", "2000,10,100", "the garbage collector's thresholds in each serving process, gen0,gen1,gen2: full collections a hundred times rarer than Python's 700,10,10, which ran a ~90 ms one every second of stream load; off: leave the interpreter's"),
    Field("HEARTCODE_WORKERS", "1", "proxy worker processes: a count, or auto (the CPUs this process may use); more than 1 needs redis:// limits and HEARTCODE_REDIS_URL"),
)
_DEFAULTS = {f.env: f.default for f in FIELDS}


def settings_table() -> str:
    """The README's configuration table rows (a test keeps the README in step with ``FIELDS``)."""
    return "\n".join(
        f"| `{f.env}` | `{f.default}` | {f.help} |" if f.default else f"| `{f.env}` | | {f.help} |" for f in FIELDS
    )


def _get(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    return _DEFAULTS[name] if value is None or value == "" else value


def _number(env: Mapping[str, str], name: str, *, minimum: float = 0.0) -> float:
    raw = _get(env, name)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number of seconds or a count") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r}: must be at least {minimum:g}")
    return value


def available_cpus() -> int:
    """The CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (containers)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def _workers(env: Mapping[str, str], cpus: Callable[[], int]) -> int:
    raw = _get(env, "HEARTCODE_WORKERS").strip().lower()
    if raw == "auto":
        return cpus()
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"HEARTCODE_WORKERS={raw!r}: expected a count of at least 1, or auto")
    return int(raw)


def check_workers(workers: int, *, limits_storage: str, redis_url: str) -> None:
    """Refuse settings that several workers would silently multiply (each worker counts alone)."""
    if workers <= 1:
        return
    if limits_storage.startswith("memory://"):
        raise ConfigError(
            f"HEARTCODE_WORKERS={workers} with HEARTCODE_LIMITS_STORAGE={limits_storage!r}: each worker would "
            f"count alone, multiplying every tier limit by {workers}; set HEARTCODE_LIMITS_STORAGE=redis://host:port/db "
            "(shared by the workers) or HEARTCODE_WORKERS=1"
        )
    if not redis_url:
        raise ConfigError(
            f"HEARTCODE_WORKERS={workers} without HEARTCODE_REDIS_URL: a key revocation would reach one worker "
            "only and the others would keep serving the key; set HEARTCODE_REDIS_URL=redis://host:port/db "
            "or HEARTCODE_WORKERS=1"
        )


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = _get(env, name).strip().lower()
    if value not in choices:
        raise ConfigError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


def _gc_threshold(env: Mapping[str, str]) -> tuple[int, int, int] | None:
    name = "HEARTCODE_GC_THRESHOLD"
    value = _get(env, name).strip().lower()
    if value == "off":
        return None
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or int(parts[0]) < 1:
        raise ConfigError(f"{name}={value!r}: expected three counts gen0,gen1,gen2 (gen0 at least 1), or off")
    return int(parts[0]), int(parts[1]), int(parts[2])


def shutdown_grace(env: Mapping[str, str]) -> float:
    """``HEARTCODE_SHUTDOWN_GRACE``, validated (the proxy command reads it before anything else)."""
    return _number(env, "HEARTCODE_SHUTDOWN_GRACE", minimum=0.0)


@dataclass(frozen=True)
class Settings:
    """Everything the gateway reads from its environment, validated, with files loaded."""

    backend_url: str
    backend_token: Secret
    backend_timeout: float
    auth_cache_ttl: float
    auth_negative_ttl: float
    auth_stale_grace: float
    auth_cache_size: int
    tiers: Tiers
    fleet: Manifest
    limits_storage: str
    limits_on_storage_error: Literal["closed", "open"]
    limits_scope: Literal["account", "key"]
    redis_url: str
    master_key: Secret
    langfuse_public_key: Secret
    langfuse_secret_key: Secret
    langfuse_host: str
    otlp_endpoint: str
    otlp_headers: Secret
    metrics_token: Secret
    shutdown_grace: float = 25.0
    workers: int = 1
    gc_freeze: bool = True
    gc_threshold: tuple[int, int, int] | None = (2000, 10, 100)
    base_dir: Path = field(default_factory=Path.cwd)

    def __post_init__(self) -> None:
        # The one check that the tiers and the fleet agree: every part built from these settings (the
        # model gate, the metrics' label sets) may rely on it, however the settings were made.
        for tier in self.tiers.values():
            unknown = sorted(set(tier.model_groups) - set(self.fleet.groups))
            if unknown:
                raise ConfigError(
                    f"tier {tier.name!r} allows model groups the fleet manifest does not have: {', '.join(unknown)}"
                )

    @property
    def langfuse_enabled(self) -> bool:
        return bool(self.langfuse_public_key) and bool(self.langfuse_secret_key)

    @property
    def tracing_enabled(self) -> bool:
        """Traces are built when they go somewhere: Langfuse (both keys) or an OTLP endpoint."""
        return self.langfuse_enabled or bool(self.otlp_endpoint)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], base_dir: Path | None = None, *, cpus: Callable[[], int] = available_cpus
    ) -> Settings:
        """Build settings from ``env``; relative file paths resolve against ``base_dir`` (default cwd).

        ``cpus`` counts the CPUs ``HEARTCODE_WORKERS=auto`` stands for.
        """
        base = base_dir or Path.cwd()
        backend_url = _get(env, "HEARTCODE_BACKEND_URL").rstrip("/")
        if not backend_url.startswith(("http://", "https://")):
            raise ConfigError(f"HEARTCODE_BACKEND_URL={backend_url!r}: expected an http:// or https:// URL")
        # Imported here: the limits package imports this module for ``Settings``.
        from .limits.storage import SCHEMES, check_uri

        storage = check_uri(_get(env, "HEARTCODE_LIMITS_STORAGE"), "HEARTCODE_LIMITS_STORAGE")
        otlp_endpoint = _get(env, "HEARTCODE_OTLP_ENDPOINT").strip()
        if otlp_endpoint and not otlp_endpoint.startswith(("http://", "https://")):
            raise ConfigError(
                f"HEARTCODE_OTLP_ENDPOINT={otlp_endpoint!r}: expected the http:// or https:// URL of an OTLP/HTTP "
                "traces endpoint, e.g. http://tempo:4318/v1/traces"
            )
        if SCHEMES[storage.partition("://")[0]] == "redis":
            check_redis_url("HEARTCODE_LIMITS_STORAGE", storage)
        if _get(env, "HEARTCODE_REDIS_URL"):
            check_redis_url("HEARTCODE_REDIS_URL", _get(env, "HEARTCODE_REDIS_URL"))
        workers = _workers(env, cpus)
        redis_url = _get(env, "HEARTCODE_REDIS_URL")
        check_workers(workers, limits_storage=storage, redis_url=redis_url)
        tiers = Tiers.load(base / _get(env, "HEARTCODE_TIERS_FILE"))
        fleet = load_manifest(base / _get(env, "HEARTCODE_FLEET_FILE"))
        return cls(
            backend_url=backend_url,
            backend_token=Secret(_get(env, "HEARTCODE_BACKEND_TOKEN")),
            backend_timeout=_number(env, "HEARTCODE_BACKEND_TIMEOUT", minimum=0.05),
            auth_cache_ttl=_number(env, "HEARTCODE_AUTH_CACHE_TTL"),
            auth_negative_ttl=_number(env, "HEARTCODE_AUTH_NEGATIVE_TTL"),
            auth_stale_grace=_number(env, "HEARTCODE_AUTH_STALE_GRACE"),
            auth_cache_size=int(_number(env, "HEARTCODE_AUTH_CACHE_SIZE", minimum=1)),
            tiers=tiers,
            fleet=fleet,
            limits_storage=storage,
            limits_on_storage_error=_choice(env, "HEARTCODE_LIMITS_ON_STORAGE_ERROR", ("closed", "open")),  # type: ignore[arg-type]
            limits_scope=_choice(env, "HEARTCODE_LIMITS_SCOPE", ("account", "key")),  # type: ignore[arg-type]
            redis_url=redis_url,
            master_key=Secret(_get(env, "LITELLM_MASTER_KEY")),
            langfuse_public_key=Secret(_get(env, "LANGFUSE_PUBLIC_KEY")),
            langfuse_secret_key=Secret(_get(env, "LANGFUSE_SECRET_KEY")),
            langfuse_host=_get(env, "LANGFUSE_HOST").rstrip("/"),
            otlp_endpoint=otlp_endpoint,
            otlp_headers=Secret(_get(env, "HEARTCODE_OTLP_HEADERS")),
            metrics_token=Secret(_get(env, "HEARTCODE_METRICS_TOKEN")),
            shutdown_grace=shutdown_grace(env),
            workers=workers,
            gc_freeze=_choice(env, "HEARTCODE_GC_FREEZE", ("on", "off")) == "on",
            gc_threshold=_gc_threshold(env),
            base_dir=base,
        )
