"""The LiteLLM edge: the one place a ``GatewayError`` becomes LiteLLM's HTTP error.

LiteLLM answers a raised ``ProxyException`` with ``{"error": {...}}``, its status and headers; anything
else it may turn into a 500 or a generic 401. Two entry points, because LiteLLM treats paths differently:

- ``to_proxy_exception(err)``: raise it from the auth function and from pre-call hooks. It must *not* be
  an ``HTTPException``: LiteLLM's auth wrapper re-wraps those and loses our ``code``.
- ``to_replacement_exception(err)``: return it from ``async_post_call_failure_hook``. LiteLLM only takes
  an ``HTTPException`` there, and its error handler keeps a ``ProxyException`` as is: this one is both.

Routes and middleware of our own, which answer without LiteLLM's error handler, use ``to_response(err)``.

Some LiteLLM handlers drop both forms: ``POST /v1/completions`` (1.103.7, ``proxy_server.completion``)
ignores a failure hook's replacement and rebuilds any error as a new ``ProxyException`` from the
exception's ``code``/``status_code``, so our 403 ``model_not_allowed`` would answer 500 ``"500"``. So both
entry points also remember the request's first refusal in ``refusal_slot()``, which the front
(``front/restore.py``) opens per request and uses to restore our answer over LiteLLM's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse
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


_REFUSAL: ContextVar[list[GatewayError] | None] = ContextVar("litellm_cloud_refusal", default=None)


@contextlib.contextmanager
def refusal_slot() -> Iterator[list[GatewayError]]:
    """For one request: a list that will hold its first refusal made through this edge (or stay empty)."""
    slot: list[GatewayError] = []
    token = _REFUSAL.set(slot)
    try:
        yield slot
    finally:
        _REFUSAL.reset(token)


def _remember(err: GatewayError) -> None:
    slot = _REFUSAL.get()
    if slot is not None and not slot:  # the first wins, as in LiteLLM's failure hooks
        slot.append(err)


def to_proxy_exception(err: GatewayError) -> GatewayProxyException:
    """What auth and pre-call hooks raise for ``err``."""
    _remember(err)
    return GatewayProxyException(err)


def to_replacement_exception(err: GatewayError) -> GatewayHTTPException:
    """What ``async_post_call_failure_hook`` returns to replace an error with ``err``."""
    _remember(err)
    return GatewayHTTPException(err)


def to_response(err: GatewayError) -> JSONResponse:
    """The HTTP answer for ``err`` where no LiteLLM handler is in between (our routes, our middleware)."""
    return JSONResponse(err.to_openai(), status_code=err.status, headers=err.headers())
