"""Where limit counters live, chosen by URI: ``memory://`` (this process) or ``redis://`` (every replica).

A storage does the window arithmetic of one subject atomically; the strategy (what to reserve, which
error to raise, what to do when the storage fails) is ``limiter.Limiter``'s. Both storages implement the
same algorithm, and one test suite runs against both:

- requests: admission times in the rolling minute (an entry counts for ``now`` in ``[t, t + 60 s)``);
- tokens: one entry per request (its reservation, replaced by the real count when settled) with the
  admission time, plus a running sum; a request settled after its entry left the window adds only what
  it used beyond its reservation, as a new entry at settlement time;
- the UTC day: one counter of reserved and settled tokens;
- in flight: leases with an expiry, renewed while the request runs, so a crashed proxy's slots return.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..._errors import ConfigError
from ..._redis import SCHEMES as REDIS_SCHEMES
from ._base import Storage, StorageError

#: Every storage URI scheme, and the module of this package whose storage serves it (the Redis ones are
#: ``_redis.SCHEMES``: one server or a Sentinel set). ``Settings``
#: checks ``HEARTCODE_LIMITS_STORAGE`` against it, so a URI the settings accept always has a storage.
SCHEMES: Mapping[str, str] = {"memory": "memory", **{s.removesuffix("://"): "redis" for s in REDIS_SCHEMES}}


def check_uri(uri: str, name: str = "limits storage") -> str:
    """``uri`` itself if its scheme names a storage; else a ``ConfigError`` saying what to use."""
    scheme, sep, _ = uri.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ConfigError(
            f"{name}={uri!r}: unknown scheme; use memory:// (one process), redis://host:port/db or "
            "redis+sentinel://host:26379[,host:26379]/<service>[/db] (shared by replicas)"
        )
    return uri


def storage_from_uri(uri: str) -> Storage:
    """The storage ``uri`` names; an unknown scheme is a ``ConfigError`` saying what to use."""
    if SCHEMES[check_uri(uri).partition("://")[0]] == "memory":
        from .memory import MemoryStorage

        return MemoryStorage()
    from .redis import RedisStorage

    return RedisStorage.from_url(uri)


__all__ = ["SCHEMES", "Storage", "StorageError", "check_uri", "storage_from_uri"]
