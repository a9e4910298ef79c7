"""The LiteLLM edge: the one place a ``GatewayError`` becomes LiteLLM's HTTP error.

LiteLLM turns a raised ``ProxyException`` into ``{"error": {"message", "type", "param", "code"}}`` with
the exception's status and headers; anything else it may turn into a 500. So every hook raises
``to_proxy_exception(err)`` and never a bare exception.
"""

from __future__ import annotations

from fastapi import HTTPException
from litellm.proxy._types import ProxyException

from ._errors import GatewayError


class GatewayProxyException(ProxyException, HTTPException):
    """A ``ProxyException`` that is also an ``HTTPException``.

    LiteLLM's failure hooks only accept an ``HTTPException`` as a replacement error, and its error
    handler keeps our ``code`` only for a ``ProxyException``: being both keeps the code on every path.
    """

    def __init__(self, err: GatewayError) -> None:
        ProxyException.__init__(
            self,
            message=err.message,
            type=err.type,
            param=None,
            code=err.status,
            headers=err.headers(),
            openai_code=err.code,
        )
        self.status_code = err.status
        self.detail = err.message
        self.gateway_error = err


def to_proxy_exception(err: GatewayError) -> GatewayProxyException:
    """The LiteLLM exception that answers ``err`` with its status, code and headers."""
    return GatewayProxyException(err)
