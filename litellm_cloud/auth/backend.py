"""The HeartCode key backend, as the gateway calls it (the contract is in docs/backend-contract.md).

``POST {base_url}/api/v1/keys/validate`` with ``{"api_key": ...}`` answers one of::

    200 {"valid": true, "user_id", "key_id", "tier", "age_verified"}  -> BackendVerdict(valid=True, ...)
    200 {"valid": false, "reason"} | 401 | 404                         -> BackendVerdict(valid=False)
    5xx, 429, no connection, any other status, a malformed body       -> AuthUnavailable (503)
    no answer within ``timeout`` seconds (the whole exchange)         -> AuthTimeout (504)

``HttpKeyBackend`` takes an ``httpx.AsyncClient`` (tests pass one with a ``MockTransport``) and a clock,
and reports every call to ``Metrics.backend_validation``. It never puts the key in a log line or error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from .._config import Secret
from .._errors import AuthTimeout, AuthUnavailable
from ..identity import key_hash
from ..observability import Metrics

log = logging.getLogger("litellm_cloud.auth")

VALIDATE_PATH = "/api/v1/keys/validate"


@dataclass(frozen=True, slots=True)
class BackendVerdict:
    """What the backend said about one key."""

    valid: bool
    user_id: str = ""
    key_id: str = ""
    tier: str = ""
    age_verified: bool = False
    reason: str = ""


class KeyBackend(Protocol):
    """Anything that validates a key: the HTTP backend, or a stand-in in unit tests."""

    async def validate(self, api_key: str) -> BackendVerdict: ...


class BackendContractError(Exception):
    """The backend answered 200 with a body that breaks the contract."""


def parse_verdict(body: Any) -> BackendVerdict:
    """A ``BackendVerdict`` from a 200 body; ``BackendContractError`` when the body breaks the contract."""
    if not isinstance(body, dict) or not isinstance(body.get("valid"), bool):
        raise BackendContractError("expected a JSON object with a boolean 'valid'")
    if not body["valid"]:
        reason = body.get("reason")
        return BackendVerdict(valid=False, reason=reason if isinstance(reason, str) else "")
    fields = {}
    for name in ("user_id", "tier"):
        value = body.get(name)
        if not isinstance(value, str) or not value:
            raise BackendContractError(f"valid key without a string {name!r}")
        fields[name] = value
    key_id = body.get("key_id")
    if key_id is not None and not isinstance(key_id, (str, int)):
        raise BackendContractError("'key_id' must be a string")
    age_verified = body.get("age_verified", False)
    if not isinstance(age_verified, bool):
        raise BackendContractError("'age_verified' must be a boolean")
    return BackendVerdict(
        valid=True,
        user_id=fields["user_id"],
        key_id="" if key_id is None else str(key_id),
        tier=fields["tier"],
        age_verified=age_verified,
    )


class HttpKeyBackend:
    """The backend over HTTP, bounded by one deadline per validation."""

    def __init__(
        self,
        base_url: str,
        *,
        token: Secret,
        timeout: float,
        metrics: Metrics,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = base_url.rstrip("/") + VALIDATE_PATH
        self._timeout = timeout
        self._metrics = metrics
        self._clock = clock
        self._headers = {"content-type": "application/json"}
        if token:
            self._headers["authorization"] = f"Bearer {token.reveal()}"
        # The pool is shared by every validation of this process; the deadline below bounds the wait for it.
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    async def validate(self, api_key: str) -> BackendVerdict:
        start = self._clock()
        outcome = "error"
        try:
            verdict = await self._call(api_key)
            outcome = "valid" if verdict.valid else "invalid"
            return verdict
        except AuthTimeout:
            outcome = "timeout"
            raise
        except _Failed as failed:
            outcome = failed.outcome
            raise AuthUnavailable("The key service is unavailable; retry shortly.") from None
        finally:
            self._metrics.backend_validation(self._clock() - start, outcome)

    async def _call(self, api_key: str) -> BackendVerdict:
        who = key_hash(api_key)
        try:
            # One deadline for connect + send + wait + read: httpx's per-phase timeouts could add up.
            async with asyncio.timeout(self._timeout):
                response = await self._client.post(self._url, json={"api_key": api_key}, headers=self._headers)
        except (TimeoutError, httpx.TimeoutException):
            log.warning("key backend gave no answer within %.1fs for %s", self._timeout, who)
            raise AuthTimeout(
                f"The key service did not answer within {self._timeout:g}s; retry shortly."
            ) from None
        except httpx.HTTPError as exc:
            log.warning("key backend unreachable for %s: %s", who, type(exc).__name__)
            raise _Failed("unavailable") from None
        status = response.status_code
        if status in (401, 404):
            return BackendVerdict(valid=False, reason=f"backend answered {status}")
        if status != 200:
            outcome = "unavailable" if status >= 500 or status == 429 else "error"
            log.warning("key backend answered %d for %s", status, who)
            raise _Failed(outcome)
        try:
            return parse_verdict(response.json())
        except (ValueError, BackendContractError) as exc:
            log.error("key backend broke the contract for %s: %s", who, exc)
            raise _Failed("error") from None

    async def aclose(self) -> None:
        await self._client.aclose()


class _Failed(Exception):
    """Inside ``HttpKeyBackend``: the call failed; ``outcome`` is its metric label. ``validate`` turns it
    into the ``AuthUnavailable`` callers see."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome
