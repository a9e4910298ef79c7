"""One adaptation of LiteLLM's early-SSE path, so a stream opened by a keepalive keeps our headers.

With ``keepalive_seconds`` on every server of a group (rendered from ``fleet.yaml``), LiteLLM 1.103.7
runs a streaming request inside ``common_request_processing.open_sse_before_first_byte``: when the
upstream has not even sent its response headers after one interval (a server that withholds them until
its first token), it opens the response itself, with fixed headers, and writes ``: ping`` comments
until the stream is ready. The response headers our limits hook computes would arrive too late and be
dropped (``x-ratelimit-*``).

``install()`` wraps that function (looked up by name in ``base_process_llm_request``): each request
gets a fresh holder in a context variable, which the task LiteLLM runs the request in inherits; the
limits hook ``offer``s its headers there as soon as it has admitted the request (well before one
interval passes), and an early response is given them before it is sent. A response that came in time
is left alone (it carries the headers the usual way). If an upgrade renames the function or stops
calling it by name, ``install()`` logs an error and changes nothing (tests/deploy/test_keepalive.py
then fails on the missing headers).

What no adaptation can change: once a ping is on the wire the status is 200, so a failure after it
(every server of the group down past one interval) reaches the client as an SSE error frame under that
200. LiteLLM builds that frame with ``sse_error_payload``, which puts the HTTP status in ``code``
(``"503"``); ``install()`` also wraps it (looked up by name inside the function above) so our errors
keep their stable code (``model_unavailable``).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable, Mapping
from types import CodeType
from typing import Any

from .._edge import GatewayProxyException

log = logging.getLogger("litellm_cloud.limits")

_MARK = "_litellm_cloud_keeps_early_headers"
_EARLY: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("litellm_cloud_early", default=None)


def offer(headers: Mapping[str, str]) -> None:
    """Headers for this request's response, should LiteLLM open it before the upstream answers."""
    holder = _EARLY.get()
    if holder is not None:
        holder.update(headers)


def _names(code: object) -> set[str]:
    """The global names ``code`` and the functions nested in it look up."""
    if not isinstance(code, CodeType):
        return set()
    names = set(code.co_names)
    for const in code.co_consts:
        names |= _names(const)
    return names


def _keep_our_code(original: Callable[[BaseException], tuple[int, Mapping[str, object]]]) -> Any:
    def sse_error_payload(exc: BaseException) -> tuple[int, Mapping[str, object]]:
        if isinstance(exc, GatewayProxyException):
            return exc.gateway_error.status, exc.to_dict()
        return original(exc)

    setattr(sse_error_payload, _MARK, True)
    return sse_error_payload


def install() -> bool:
    """Wrap LiteLLM's ``open_sse_before_first_byte``; idempotent. True if active."""
    try:
        from litellm.proxy import common_request_processing as crp
        from starlette.responses import StreamingResponse
    except ImportError:  # pragma: no cover - LiteLLM without its proxy extras
        return False
    original: Callable[..., Awaitable[Any]] | None = getattr(crp, "open_sse_before_first_byte", None)
    if getattr(original, _MARK, False):
        return True
    caller = getattr(getattr(crp, "ProxyBaseLLMRequestProcessing", None), "base_process_llm_request", None)
    payload = getattr(crp, "sse_error_payload", None)
    # Rebinding module attributes only works while the callers look the functions up by these names.
    looked_up = "open_sse_before_first_byte" in _names(getattr(caller, "__code__", None)) and "sse_error_payload" in _names(
        getattr(original, "__code__", None)
    )
    if original is None or payload is None or not looked_up:
        log.error(
            "LiteLLM's early-SSE path changed (common_request_processing.open_sse_before_first_byte): a stream "
            "opened by a keepalive before its first token will lack the x-ratelimit-* headers and a late failure "
            "our error code"
        )
        return False

    async def open_sse_before_first_byte(produce_response: Awaitable[Any], *args: Any, **kwargs: Any) -> Any:
        holder: dict[str, str] = {}
        answered = False

        async def produce() -> Any:
            nonlocal answered
            try:
                return await produce_response
            finally:
                answered = True

        token = _EARLY.set(holder)  # the request's task is created inside and copies this context
        try:
            response = await original(produce(), *args, **kwargs)
        finally:
            _EARLY.reset(token)
        if not answered and holder and isinstance(response, StreamingResponse):
            response.headers.update(holder)
        return response

    setattr(open_sse_before_first_byte, _MARK, True)
    crp.open_sse_before_first_byte = open_sse_before_first_byte  # type: ignore[attr-defined]
    crp.sse_error_payload = _keep_our_code(payload)  # type: ignore[attr-defined]
    return True
