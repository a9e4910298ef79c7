"""The LiteLLM edge: the one place a ``GatewayError`` becomes LiteLLM's HTTP error.

LiteLLM answers a raised ``ProxyException`` with ``{"error": {...}}``, its status and headers; anything
else it may turn into a 500 or a generic 401. Two entry points, because LiteLLM treats paths differently:

- ``to_proxy_exception(err)``: raise it from the auth function and from pre-call hooks. It must *not* be
  an ``HTTPException``: LiteLLM's auth wrapper re-wraps those and loses our ``code``.
- ``to_replacement_exception(err)``: return it from ``async_post_call_failure_hook``. LiteLLM only takes
  an ``HTTPException`` there, and its error handler keeps a ``ProxyException`` as is: this one is both.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from litellm.proxy._types import ProxyException

from ._errors import GatewayError


class GatewayProxyException(ProxyException):
    """A ``ProxyException`` that answers with our stable ``code`` (LiteLLM's puts the status there)."""

    def __init__(self, err: GatewayError) -> None:
        super().__init__(
            message=err.message, type=err.type, param=None, code=err.status, headers=err.headers(), openai_code=err.code
        )
        self.gateway_error = err

    def to_dict(self) -> dict[str, Any]:
        return self.gateway_error.to_openai()["error"]


class GatewayHTTPException(GatewayProxyException, HTTPException):  # type: ignore[misc]  # both define headers; ours wins
    """The failure-hook form: also an ``HTTPException`` so LiteLLM accepts it as a replacement."""

    def __init__(self, err: GatewayError) -> None:
        GatewayProxyException.__init__(self, err)
        self.status_code = err.status
        self.detail = err.message


def to_proxy_exception(err: GatewayError) -> GatewayProxyException:
    """What auth and pre-call hooks raise for ``err``."""
    return GatewayProxyException(err)


def to_replacement_exception(err: GatewayError) -> GatewayHTTPException:
    """What ``async_post_call_failure_hook`` returns to replace an error with ``err``."""
    return GatewayHTTPException(err)
