"""Why a tunnel connection failed; the class decides how long the supervisor waits before the next try.

::

    TunnelError                 (message)
    ├── Unreachable             TCP connect refused / timed out        -> short backoff, capped ~1 s
    ├── SessionLost             handshake failed or session dropped    -> exponential backoff
    ├── ForwardRefused          strict mode: a forward was denied      -> exponential backoff
    └── NeedsOperator           a retry will not help until a file changes -> long backoff, said loudly
        ├── HostKeyUnknown      the server's key is not in known_hosts
        ├── HostKeyChanged      the server's key differs from the pinned one
        └── AuthRefused         the server refused our key

None of these reaches an API client, so they are not ``GatewayError``s.
"""

from __future__ import annotations


class TunnelError(Exception):
    """A failed attempt to bring up or keep the tunnel."""

    kind: str = "session"


class Unreachable(TunnelError):
    """The server did not accept a TCP connection."""

    kind = "unreachable"


class SessionLost(TunnelError):
    """The SSH session failed to start, or died (keepalive misses, reset, server gone)."""

    kind = "session"


class ForwardRefused(TunnelError):
    """Strict mode: the server denied a forward, so the whole connection is given up."""

    kind = "session"


class NeedsOperator(TunnelError):
    """Retrying will not fix this until someone changes a file on one side."""

    kind = "operator"


class HostKeyUnknown(NeedsOperator):
    """The server's host key is not pinned in the known_hosts file."""


class HostKeyChanged(NeedsOperator):
    """The server presented a key other than the pinned one: possibly an attack."""


class AuthRefused(NeedsOperator):
    """The server refused our public key."""
