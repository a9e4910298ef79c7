"""The LiteLLM edge of the limiter: admit before the call, settle after it, report in headers.

Per request, LiteLLM calls (measured on 1.103.7, see docs/limits.md):

- ``async_pre_call_hook``: admit and reserve, or raise a 429/503 (``to_proxy_exception``);
- non-streaming: ``async_post_call_success_hook`` (settle to ``usage``), then the headers hook;
- streaming: the headers hook first, then ``async_post_call_streaming_iterator_hook`` wraps the stream
  and settles in ``finally``: a finished stream by its usage chunk, a client that left by the chunks it
  was sent;
- failure (upstream error, or a refusal of any pre-call hook, ours included): the failure hook gives the
  reservation back, then the headers hook.

A request's state is a ``_Record`` held here, found through an unguessable id that the pre-call hook
writes into the request's LiteLLM metadata (``litellm_call_id`` is client-settable, so not a safe key).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import UserAPIKeyAuth

from .._edge import to_proxy_exception
from .._errors import LimitError
from ..identity import Identity
from ..observability import Metrics
from ..tiers import Tier, Tiers
from . import _keepalive
from ._types import Limits, Usage
from .estimate import estimate_cost, prompt_tokens, text_tokens
from .headers import limit_headers, rate_limit_headers
from .limiter import Limiter, Ticket

log = logging.getLogger("litellm_cloud.limits")

META_KEY = "hc_limits_ticket"
RECORD_MAX_AGE_S = 3600.0  # a record no hook finished (should not happen) is dropped after this


@dataclass(eq=False)
class _Record:
    limits: Limits
    prompt: int
    usage: Usage | None
    ticket: Ticket | None
    born: float
    headers_done: bool = False
    meter: StreamMeter | None = None

    @property
    def finished(self) -> bool:
        return self.ticket is None or self.ticket.settled


def _metadata(data: dict[str, Any]) -> dict[str, Any]:
    for name in ("litellm_metadata", "metadata"):
        meta = data.get(name)
        if isinstance(meta, dict):
            return meta
    meta = data["metadata"] = {}
    return meta


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def usage_tokens(response: Any) -> int | None:
    """Prompt + completion tokens the upstream reported in a response or stream chunk, if it did."""
    usage = _get(response, "usage")
    if usage is None:
        return None
    prompt, completion, total = (
        _get(usage, "prompt_tokens"),
        _get(usage, "completion_tokens"),
        _get(usage, "total_tokens"),
    )
    if isinstance(prompt, int) or isinstance(completion, int):
        return int(prompt or 0) + int(completion or 0)
    return int(total) if isinstance(total, int) else None


def _response_text(response: Any) -> str:
    parts = []
    for choice in _get(response, "choices") or []:
        message = _get(choice, "message") or _get(choice, "delta")
        content = _get(message, "content") if message is not None else _get(choice, "text")
        if isinstance(content, str):
            parts.append(content)
    return "".join(parts)


# Delta fields that carry generated tokens (reasoning models stream reasoning_content first).
_PRODUCED_FIELDS = ("content", "tool_calls", "reasoning_content", "function_call")


class StreamMeter:
    """Counts a stream: the upstream's usage chunk when one comes, else the prompt plus one token a chunk.

    A stream cut short (upstream error, cancellation, client gone) before its first content chunk and
    without a usage chunk produced nothing anyone can see: it is charged 0, like a failed call. Once
    content was sent, the prompt was processed and the chunks delivered: both are charged.
    """

    def __init__(self, prompt: int) -> None:
        self.prompt = prompt
        self.chunks = 0
        self.reported: int | None = None
        self.finished = False  # the upstream's stream ended normally

    def observe(self, chunk: Any) -> None:
        reported = usage_tokens(chunk)
        if reported:
            self.reported = reported
        for choice in _get(chunk, "choices") or []:
            delta = _get(choice, "delta")
            if delta is not None and any(_get(delta, f) for f in _PRODUCED_FIELDS):
                self.chunks += 1

    @property
    def tokens(self) -> int:
        if self.reported is not None:
            return self.reported
        if self.chunks == 0 and not self.finished:
            return 0
        return self.prompt + self.chunks


class LimitsHook(CustomLogger):
    """Tier limits at the LiteLLM edge; ``router`` serves ``GET /v1/usage``."""

    def __init__(
        self, limiter: Limiter, tiers: Tiers, metrics: Metrics, *, scope: Literal["account", "key"] = "account"
    ) -> None:
        super().__init__()
        self.limiter = limiter
        self.tiers = tiers
        self.scope = scope
        self._metrics = metrics
        self._records: dict[str, _Record] = {}
        from .usage import usage_router  # the route needs LiteLLM's auth dependency: import late

        self.router = usage_router(self)

    def subject(self, ident: Identity) -> str:
        """The counter a request counts against: the account, or the key with ``scope == "key"``."""
        return f"key:{ident.key_hash}" if self.scope == "key" else f"acct:{ident.user_id}"

    def tier_of(self, ident: Identity) -> Tier | None:
        return self.tiers.get(ident.tier)

    # --- records -----------------------------------------------------------------------------------

    def _record(self, data: dict[str, Any] | None) -> tuple[str, _Record] | None:
        if not isinstance(data, dict):
            return None
        for name in ("litellm_metadata", "metadata"):
            meta = data.get(name)
            if isinstance(meta, dict) and isinstance(meta.get(META_KEY), str):
                rec = self._records.get(meta[META_KEY])
                if rec is not None:
                    return meta[META_KEY], rec
        return None

    def _done(self, rid: str, rec: _Record) -> None:
        if rec.finished and rec.headers_done:
            self._records.pop(rid, None)

    def _sweep(self, now: float) -> None:
        # Records are kept in insertion order: the oldest come first.
        while self._records:
            rid, rec = next(iter(self._records.items()))
            if now - rec.born < RECORD_MAX_AGE_S:
                return
            del self._records[rid]

    async def _settle(self, rid: str, rec: _Record, tokens: int) -> None:
        if rec.ticket is not None and not rec.ticket.settled:
            await self.limiter.settle(rec.ticket, tokens)
        self._done(rid, rec)

    # --- LiteLLM hooks -----------------------------------------------------------------------------

    async def async_pre_call_hook(
        self, user_api_key_dict: UserAPIKeyAuth, cache: Any, data: dict, call_type: Any
    ) -> dict | None:
        ident = Identity.from_metadata(getattr(user_api_key_dict, "metadata", None))
        if ident is None:
            return None  # the master key: no tier, no limits
        tier = self.tier_of(ident)
        if tier is None:
            log.error("tier %r of %s is not in the tiers file; request not limited", ident.tier, ident.key_hash)
            return None
        limits = Limits.of(tier)
        now = time.monotonic()
        self._sweep(now)
        if data.get("stream") is True and "messages" in data:
            _ask_for_stream_usage(data)
        prompt = prompt_tokens(data)
        cost = estimate_cost(data, str(call_type), limits, prompt=prompt)
        self.limiter.ensure_heartbeat()
        decision = await self.limiter.admit(self.subject(ident), tier.name, limits, cost)
        rid = decision.ticket.id if decision.ticket else secrets.token_hex(8)
        self._records[rid] = _Record(limits, prompt, decision.usage, decision.ticket, now)
        _metadata(data)[META_KEY] = rid
        if decision.error is not None:
            if isinstance(decision.error, LimitError):
                self._metrics.limiter_refusal(decision.error.code, tier.name)
            raise to_proxy_exception(decision.error)
        usage = decision.ticket.usage if decision.ticket is not None else decision.usage
        if usage is not None and data.get("stream") is True:
            _keepalive.offer(rate_limit_headers(limits, usage))
        return None

    async def async_post_call_success_hook(self, data: dict, user_api_key_dict: UserAPIKeyAuth, response: Any) -> Any:
        found = self._record(data)
        if found is None or data.get("stream") is True:
            return None  # streams settle in the iterator hook
        rid, rec = found
        tokens = usage_tokens(response)
        if tokens is None:
            tokens = rec.prompt + text_tokens(_response_text(response))
        await self._settle(rid, rec, tokens)
        return None

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: UserAPIKeyAuth, response: Any, request_data: dict
    ) -> AsyncGenerator[Any, None]:
        found = self._record(request_data)
        if found is None:
            async for chunk in response:
                yield chunk
            return
        rid, rec = found
        meter = rec.meter = StreamMeter(rec.prompt)
        try:
            async for chunk in response:
                meter.observe(chunk)
                yield chunk
            meter.finished = True
        finally:
            # The end of the stream, or an upstream error: charge what was streamed (nothing, if nothing
            # was; see ``StreamMeter``). Shielded so a
            # cancellation cannot lose the settlement. (When the client leaves, LiteLLM closes only its
            # outermost generator; this one is closed when garbage-collected, so the disconnect is
            # settled earlier, by ``async_log_success_event``.)
            await asyncio.shield(self._settle(rid, rec, meter.tokens))

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        """Settle a stream whose client left, from LiteLLM's disconnect-time billing event.

        LiteLLM marks the request's metadata ``client_disconnected`` and, in its stream clean-up, awaits
        the success callbacks with the partial response: the first moment any hook of ours hears of a
        disconnect. What was streamed so far is final then.
        """
        params = kwargs.get("litellm_params") if isinstance(kwargs, dict) else None
        candidates = (kwargs.get("metadata") if isinstance(kwargs, dict) else None,
                      params.get("metadata") if isinstance(params, dict) else None)  # fmt: skip
        for meta in candidates:
            if isinstance(meta, dict) and meta.get("client_disconnected") and isinstance(meta.get(META_KEY), str):
                rid = meta[META_KEY]
                rec = self._records.get(rid)
                if rec is not None and rec.meter is not None:
                    await self._settle(rid, rec, rec.meter.tokens)
                return

    async def async_post_call_failure_hook(
        self,
        request_data: dict,
        original_exception: Exception,
        user_api_key_dict: UserAPIKeyAuth,
        traceback_str: str | None = None,
    ) -> None:
        found = self._record(request_data)
        if found is not None:
            rid, rec = found
            await self._settle(rid, rec, 0)  # no-op for our own refusals and already-settled streams

    async def async_post_call_response_headers_hook(
        self,
        data: dict,
        user_api_key_dict: UserAPIKeyAuth,
        response: Any,
        request_headers: dict[str, str] | None = None,
        litellm_call_info: dict[str, object] | None = None,
    ) -> dict[str, str] | None:
        found = self._record(data)
        if found is None:
            return None
        rid, rec = found
        rec.headers_done = True
        self._done(rid, rec)
        usage = rec.ticket.usage if rec.ticket is not None else rec.usage
        if usage is None:  # refused without counters (storage down, fail closed; request too large)
            return limit_headers(rec.limits, self.limiter.now_ms())
        return rate_limit_headers(rec.limits, usage)


def _ask_for_stream_usage(data: dict[str, Any]) -> None:
    """Ask the upstream for the final usage chunk, and have LiteLLM strip it if the client did not ask."""
    options = data.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return
    data["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    data["_litellm_strip_stream_usage"] = True
