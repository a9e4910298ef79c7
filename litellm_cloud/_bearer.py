"""The one reading of ``Authorization: Bearer <token>`` for the routes that check their caller themselves
(``POST /hc/keys/revoke``, ``GET /metrics``): LiteLLM's custom auth guards only LiteLLM's own routes."""

from __future__ import annotations

from collections.abc import Mapping


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of a ``Bearer`` authorization header (scheme case-insensitive), or ``None`` if absent."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
