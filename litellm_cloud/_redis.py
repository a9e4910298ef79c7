"""Redis clients from URLs, one place for every part that talks to Redis (limits, revocation, doctor).

Two forms:

- ``redis://[:password@]host:port/db``, ``rediss://...``, ``unix://...``: one server (redis-py's own forms);
- ``redis+sentinel://[:password@]host:port[,host:port...]/<service>[/db]``: the master of ``service`` as
  Redis Sentinel reports it (the form alisaifee/limits uses). The client asks the sentinels for the master
  address on every new connection, so after a failover the next connection reaches the promoted replica;
  connections to the old master fail once and are replaced. Query parameters (``?socket_timeout=1``)
  apply to the Redis connections; the password, if any, is the data servers' (sentinels are asked
  without one unless ``sentinel_password`` is given in the query).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as asentinel
import redis.sentinel as ssentinel

from ._errors import ConfigError

SENTINEL_SCHEME = "redis+sentinel://"
#: Every URL prefix these clients accept.
SCHEMES: tuple[str, ...] = ("redis://", "rediss://", "unix://", SENTINEL_SCHEME)  # Sentinel's last
SENTINEL_PORT = 26379
# Query values that are numbers or booleans for redis-py (the rest stay strings).
_FLOATS = {"socket_timeout", "socket_connect_timeout", "health_check_interval"}
_INTS = {"max_connections"}


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    options: Mapping[str, Any] = field(default_factory=dict)


def is_sentinel(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME)


def _option(name: str, value: str) -> Any:
    if name in _FLOATS:
        return float(value)
    if name in _INTS:
        return int(value)
    return value


def parse_sentinel_url(url: str) -> SentinelURL:
    """Split ``redis+sentinel://[:pw@]h:p[,h:p]/service[/db]``; a malformed one is a ``ConfigError``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        password = unquote(userinfo.split(":", 1)[1] if ":" in userinfo else userinfo) or None
    sentinels = []
    for item in filter(None, netloc.split(",")):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", str(SENTINEL_PORT))
        try:
            sentinels.append((host.strip("[]"), int(port)))
        except ValueError:
            raise ConfigError(f"{redacted(url)}: sentinel port {port!r} is not a number") from None
    path = [p for p in parts.path.split("/") if p]
    if not sentinels or not path or len(path) > 2:
        raise ConfigError(
            f"{redacted(url)}: expected redis+sentinel://host:26379[,host:26379]/<service>[/db]"
        )
    try:
        db = int(path[1]) if len(path) == 2 else 0
    except ValueError:
        raise ConfigError(f"{redacted(url)}: database {path[1]!r} is not a number") from None
    query = dict(parse_qsl(parts.query))
    sentinel_password = query.pop("sentinel_password", None)
    try:
        options = {k: _option(k, v) for k, v in query.items()}
    except ValueError as exc:
        raise ConfigError(f"{redacted(url)}: bad query parameter: {exc}") from None
    return SentinelURL(tuple(sentinels), unquote(path[0]), db, password, sentinel_password, options)


def check_url(setting: str, url: str) -> None:
    """Raise a ``ConfigError`` naming ``setting`` unless ``url`` is a Redis URL these clients take."""
    if not url.startswith(SCHEMES):
        raise ConfigError(
            f"{setting}={redacted(url)!r}: unknown scheme; use redis://host:port/db (one server) or "
            "redis+sentinel://host:26379[,host:26379]/<service>[/db] (Sentinel)"
        )
    if is_sentinel(url):
        try:
            parse_sentinel_url(url)
        except ConfigError as exc:
            raise ConfigError(f"{setting}: {exc}") from None


def _sentinel_kwargs(parsed: SentinelURL, defaults: Mapping[str, Any]) -> dict[str, Any]:
    # The sentinels answer address questions: short timeouts, so one dead sentinel costs little.
    kwargs = {k: v for k, v in {**defaults, **parsed.options}.items() if k.startswith("socket_")}
    if parsed.sentinel_password:
        kwargs["password"] = parsed.sentinel_password
    return kwargs


class _BlockingSentinelPool(asentinel.SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """A Sentinel pool that makes a burst wait for a free connection (as ``redis://`` storages do)."""


def async_client(url: str, *, blocking_timeout: float | None = None, **defaults: Any) -> aioredis.Redis:
    """An asyncio client for ``url``; ``defaults`` (timeouts, retry, pool size) yield to the URL's query.

    With ``blocking_timeout`` the pool is bounded by ``max_connections`` and a caller waits up to that
    many seconds for a connection instead of failing at once.
    """
    if not is_sentinel(url):
        given = dict(parse_qsl(urlsplit(url).query))
        kwargs = {k: v for k, v in defaults.items() if k not in given}
        if blocking_timeout is None:
            return aioredis.Redis.from_url(url, **kwargs)
        pool = aioredis.BlockingConnectionPool.from_url(url, timeout=blocking_timeout, **kwargs)
        return aioredis.Redis(connection_pool=pool)
    parsed = parse_sentinel_url(url)
    manager = asentinel.Sentinel(list(parsed.sentinels), sentinel_kwargs=_sentinel_kwargs(parsed, defaults))
    options: dict[str, Any] = {**defaults, **parsed.options, "db": parsed.db, "password": parsed.password}
    if blocking_timeout is not None:
        options["timeout"] = blocking_timeout
        return manager.master_for(parsed.service, connection_pool_class=_BlockingSentinelPool, **options)
    return manager.master_for(parsed.service, **options)


def sync_client(url: str, **defaults: Any) -> redis.Redis:
    """A blocking client for ``url`` (the doctor's checks)."""
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **defaults)
    parsed = parse_sentinel_url(url)
    manager = ssentinel.Sentinel(list(parsed.sentinels), sentinel_kwargs=_sentinel_kwargs(parsed, defaults))
    return manager.master_for(
        parsed.service, **{**defaults, **parsed.options, "db": parsed.db, "password": parsed.password}
    )


def redacted(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and errors)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return url.replace(parts.netloc, "***@" + parts.netloc.rsplit("@", 1)[1], 1)


__all__ = ["SCHEMES", "SentinelURL", "async_client", "check_url", "is_sentinel", "parse_sentinel_url", "redacted", "sync_client"]
