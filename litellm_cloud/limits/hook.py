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
import secrets
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from litellm.proxy._types import UserAPIKeyAuth

from .._edge import to_proxy_exception
from .._errors import LimitError
from .._litellm import GatewayHook, callback_metadata_dicts, identity_of, metadata_dicts, writable_metadata
from ..observability import Metrics
from . import _keepalive
from ._types import Limits, Usage
from .estimate import estimate_cost, prompt_tokens, text_tokens
from .headers import limit_headers, rate_limit_headers
from .limiter import Limiter, Ticket
from .metering import StreamMeter, response_text, usage_tokens
from .subjects import Subjects

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


class LimitsHook(GatewayHook):
    """Tier limits at the LiteLLM edge: admit, settle, report in headers."""

    def __init__(self, limiter: Limiter, subjects: Subjects, metrics: Metrics) -> None:
        super().__init__()
        self.limiter = limiter
        self.subjects = subjects
        self._metrics = metrics
        self._records: dict[str, _Record] = {}

    # --- records -----------------------------------------------------------------------------------

    def _record(self, data: dict[str, Any] | None) -> tuple[str, _Record] | None:
        for meta in metadata_dicts(data):
            rid = meta.get(META_KEY)
            if isinstance(rid, str) and rid in self._records:
                return rid, self._records[rid]
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
        ident = identity_of(user_api_key_dict)
        if ident is None:
            return None  # the master key: no tier, no limits
        tier = self.subjects.tier_of(ident)
        limits = Limits.of(tier)
        now = time.monotonic()
        self._sweep(now)
        if data.get("stream") is True and "messages" in data:
            _ask_for_stream_usage(data)
        prompt = prompt_tokens(data)
        cost = estimate_cost(data, str(call_type), limits, prompt=prompt)
        decision = await self.limiter.admit(self.subjects.subject(ident), tier.name, limits, cost)
        rid = decision.ticket.id if decision.ticket else secrets.token_hex(8)
        self._records[rid] = _Record(limits, prompt, decision.usage, decision.ticket, now)
        writable_metadata(data)[META_KEY] = rid
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
            tokens = rec.prompt + text_tokens(response_text(response))
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
        for meta in callback_metadata_dicts(kwargs):
            if meta.get("client_disconnected") and isinstance(meta.get(META_KEY), str):
                rid = meta[META_KEY]
                rec = self._records.get(rid)
                if rec is not None and rec.meter is not None:
                    await self._settle(rid, rec, rec.meter.tokens)
                return

    async def on_failure(self, request_data: dict[str, Any], exc: Exception) -> HTTPException | None:
        found = self._record(request_data)
        if found is not None:
            rid, rec = found
            await self._settle(rid, rec, 0)  # no-op for our own refusals and already-settled streams
        return None

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
