"""When to try again: immediately after a stable connection drops, then exponential backoff with jitter.

Three streaks are kept apart because they cost different things. A refused TCP connect costs the server
nothing, so it is retried every ``unreachable_cap`` (0.25) seconds at most: that is what brings the tunnel
back within about a second of the server returning, even after a long outage (autossh sleeps up to minutes
there). A failed SSH session costs the server a handshake, so it backs off up to ``cap``. A refused key
or host key will not fix itself, so it backs off long.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import Reconnect


def exp_delay(initial: float, cap: float, attempt: int, jitter: float, rand: Callable[[], float]) -> float:
    """``initial * 2**attempt`` capped at ``cap``, shortened by up to ``jitter`` (a fraction) at random.

    Jitter only shortens, so the cap holds and many clients restarted together spread out.
    """
    base = min(cap, initial * (2 ** min(attempt, 62)))
    return base * (1.0 - jitter * rand())


class Backoff:
    """The reconnect schedule. Not thread-safe: only the supervisor's loop calls it."""

    def __init__(self, policy: Reconnect, rand: Callable[[], float]) -> None:
        self.policy = policy
        self._rand = rand
        self._session = 0
        self._unreachable = 0
        self._operator = 0
        self._up_since: float | None = None

    def connected(self, now: float) -> None:
        """The SSH session is up; the TCP and credential streaks end here."""
        self._unreachable = 0
        self._operator = 0
        self._up_since = now

    def tcp_connected(self) -> None:
        """A TCP connect succeeded: the server is reachable again."""
        self._unreachable = 0

    def stable(self, now: float) -> bool:
        """Whether the current connection has been up long enough to forget past failures."""
        return self._up_since is not None and now - self._up_since >= self.policy.stable_after

    def failed(self, kind: str, now: float) -> float:
        """Record a failure of ``kind`` (``unreachable``, ``session``, ``operator``); return the delay."""
        p = self.policy
        if self._up_since is not None:
            if self.stable(now):
                self._session = 0
            self._up_since = None
        if kind == "unreachable":
            delay = exp_delay(p.unreachable_initial, p.unreachable_cap, self._unreachable, p.jitter, self._rand)
            self._unreachable += 1
        elif kind == "operator":
            delay = exp_delay(p.auth_initial, p.auth_cap, self._operator, p.jitter, self._rand)
            self._operator += 1
        else:
            # The first failure after a stable period is retried at once: most drops are one-offs.
            delay = 0.0 if self._session == 0 else exp_delay(
                p.initial, p.cap, self._session - 1, p.jitter, self._rand
            )
            self._session += 1
        return delay
