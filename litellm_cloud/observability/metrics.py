"""Gateway metrics. The method names are the interface other parts call; label values stay bounded.

PLACEHOLDER until issue 7 lands: every method records nothing.
"""

from __future__ import annotations


class Metrics:
    """The gateway's Prometheus metrics (one instance per process, built by the gateway)."""

    @classmethod
    def create(cls) -> Metrics:
        return cls()

    # auth
    def auth_cache(self, result: str) -> None:
        """``result``: hit | miss | negative_hit | stale (served while the backend is down) | coalesced."""

    def backend_validation(self, seconds: float, outcome: str) -> None:
        """One backend call: ``outcome`` valid | invalid | unavailable | timeout | error."""

    # limits
    def limiter_refusal(self, kind: str, tier: str) -> None:
        """``kind``: rate_limited | daily_quota_exceeded | concurrency_limited."""

    def limiter_storage_fallback(self, mode: str) -> None:
        """The limiter store failed; ``mode``: open (served with per-process limits) | closed (refused)."""

    # requests
    def request_finished(self, model_group: str, tier: str, code: str) -> None:
        """A request ended with ``code`` (ok or an error code)."""

    def tokens(self, model_group: str, tier: str, prompt: int, completion: int) -> None:
        """Tokens used by a finished request."""

    def deployment_call(self, deployment: str, seconds: float, ok: bool) -> None:
        """One upstream call to a GPU deployment."""
