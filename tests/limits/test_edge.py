"""The pieces around the limiter, in process: estimates, headers, stream metering, and the hook's
bookkeeping across LiteLLM's hook order (no double release, no leaked records)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from litellm.proxy._types import UserAPIKeyAuth

from litellm_cloud._edge import GatewayProxyException
from litellm_cloud.identity import IDENTITY_KEY, Identity
from litellm_cloud.limits import Cost, Limiter, Limits, LimitsHook, estimate_cost
from litellm_cloud.limits._types import Usage
from litellm_cloud.limits.headers import duration, rate_limit_headers
from litellm_cloud.limits.hook import META_KEY
from litellm_cloud.limits.metering import StreamMeter, usage_tokens
from litellm_cloud.limits.storage.memory import MemoryStorage
from litellm_cloud.limits.subjects import Subjects
from litellm_cloud.tiers import Tier, Tiers

from .conftest import FakeClock, RecordingMetrics, dead_redis_storage

FREE = Limits(rpm=10, tpm=1000, daily_tokens=10_000, max_parallel=2)


def test_estimates() -> None:
    chat = {"messages": [{"role": "user", "content": "x" * 400}]}
    assert estimate_cost(chat, "acompletion", FREE) == Cost(need=105, want=120)  # 104 + 16 > fair share 100
    assert estimate_cost({**chat, "max_tokens": 50, "n": 2}, "acompletion", FREE) == Cost(need=105, want=204)
    short = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert estimate_cost(short, "acompletion", FREE) == Cost(need=6, want=100)  # the fair share
    assert estimate_cost({"input": ["abcd", "efgh"]}, "aembedding", FREE) == Cost(need=2, want=2)
    assert estimate_cost({"input": [[1, 2, 3], [4]]}, "aembedding", FREE) == Cost(need=4, want=4)
    with pytest.raises(ValueError):
        Cost(need=5, want=4)


def test_durations_and_headers() -> None:
    assert [duration(ms) for ms in (0, 20, 999, 1000, 1001, 6000, 60_000, 18_183_000)] == [
        "0s", "20ms", "999ms", "1s", "2s", "6s", "1m0s", "5h3m3s"]  # fmt: skip
    now = 86_400_000 * 20_000 + 3_600_000 * 23  # 23:00 UTC
    usage = Usage(now, requests=3, tokens=250, day_tokens=900, in_flight=1, oldest_request_ms=now - 54_000,
                  oldest_tokens_ms=now - 54_000)  # fmt: skip
    assert rate_limit_headers(FREE, usage) == {
        "x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "7",
        "x-ratelimit-reset-requests": "6s", "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "750", "x-ratelimit-reset-tokens": "6s",
        "x-ratelimit-limit-tokens-day": "10000", "x-ratelimit-remaining-tokens-day": "9100",
        "x-ratelimit-reset-tokens-day": "1h0m0s"}  # fmt: skip


def test_stream_meter_prefers_reported_usage_and_counts_chunks_without_it() -> None:
    meter = StreamMeter(prompt=7)
    for text in ("a", "", "b", "c"):
        meter.observe({"choices": [{"delta": {"content": text}}]})
    assert meter.tokens == 7 + 3
    meter.observe({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})
    assert meter.tokens == 8
    assert usage_tokens({"usage": {"total_tokens": 4}}) == 4 and usage_tokens({"id": "x"}) is None


def test_stream_meter_counts_reasoning_and_tool_chunks_as_produced() -> None:
    meter = StreamMeter(prompt=7)
    assert meter.tokens == 0  # cut short before anything was produced: free
    meter.observe({"choices": [{"delta": {"reasoning_content": "thinking"}}]})
    meter.observe({"choices": [{"delta": {"tool_calls": [{"index": 0}]}}]})
    meter.observe({"choices": [{"delta": {"role": "assistant"}}]})  # no token in it
    assert meter.tokens == 7 + 2


def _hook(clock: FakeClock, scope: str = "account") -> LimitsHook:
    tier = Tier(name="free", rpm=10, tpm=1000, daily_tokens=10_000, max_parallel=2, model_groups=("m",))
    limiter = Limiter(MemoryStorage(), RecordingMetrics(), clock=clock)
    return LimitsHook(limiter, Subjects(Tiers({"free": tier}), scope), RecordingMetrics())  # type: ignore[arg-type]


def _key(user: str = "u1", key: str = "key-1") -> UserAPIKeyAuth:
    ident = Identity(user_id=user, key_id=key, key_hash=key, tier="free", age_verified=False)
    return UserAPIKeyAuth(api_key=key, user_id=user, metadata={IDENTITY_KEY: ident.to_metadata()})


def _data() -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hello"}], "metadata": {}}


async def test_hook_settles_once_and_forgets_finished_requests() -> None:
    hook, key = _hook(FakeClock()), _key()
    data = _data()
    await hook.async_pre_call_hook(key, None, data, "acompletion")
    assert data["metadata"][META_KEY] and hook.limiter.in_flight == 1
    await hook.async_post_call_success_hook(data, key, {"usage": {"prompt_tokens": 3, "completion_tokens": 9}})
    await hook.async_post_call_failure_hook(data, RuntimeError("late"), key)  # must not release again
    headers = await hook.async_post_call_response_headers_hook(data, key, None)
    assert headers is not None and headers["x-ratelimit-remaining-tokens"] == "988"
    assert hook.limiter.in_flight == 0 and not hook._records
    assert (await hook.limiter.usage("acct:u1")).tokens == 12


async def test_refusal_is_not_released_and_still_reports_headers() -> None:
    hook, key = _hook(FakeClock()), _key()
    held = [_data(), _data()]
    for d in held:
        await hook.async_pre_call_hook(key, None, d, "acompletion")
    refused = _data()
    with pytest.raises(GatewayProxyException) as info:
        await hook.async_pre_call_hook(key, None, refused, "acompletion")
    assert info.value.gateway_error.code == "concurrency_limited"
    assert hook._metrics.refusals == [("concurrency_limited", "free")]  # type: ignore[attr-defined]
    await hook.async_post_call_failure_hook(refused, info.value, key)
    headers = await hook.async_post_call_response_headers_hook(refused, key, None)
    assert headers is not None and headers["x-ratelimit-remaining-requests"] == "8"
    assert hook.limiter.in_flight == 2 and len(hook._records) == 2


async def test_streams_settle_when_the_client_leaves() -> None:
    hook, key = _hook(FakeClock()), _key()
    data = {**_data(), "stream": True}
    await hook.async_pre_call_hook(key, None, data, "acompletion")
    assert data["stream_options"] == {"include_usage": True} and data["_litellm_strip_stream_usage"] is True
    await hook.async_post_call_response_headers_hook(data, key, object())

    async def upstream() -> Any:
        for _ in range(100):
            yield {"choices": [{"delta": {"content": "w"}}]}

    stream = hook.async_post_call_streaming_iterator_hook(key, upstream(), data)
    for _ in range(10):
        await stream.__anext__()
    await stream.aclose()  # what Starlette does when the client disconnects
    assert hook.limiter.in_flight == 0 and not hook._records
    assert (await hook.limiter.usage("acct:u1")).tokens == 6 + 10  # prompt estimate + chunks sent


async def _stream_until_it_fails(chunks: int, *, cancel: bool = False) -> tuple[LimitsHook, int]:
    """A stream whose upstream fails (or hangs and is cancelled) after ``chunks`` content chunks."""
    hook, key = _hook(FakeClock()), _key()
    data = {**_data(), "stream": True, "max_tokens": 500}
    await hook.async_pre_call_hook(key, None, data, "acompletion")
    await hook.async_post_call_response_headers_hook(data, key, object())

    async def upstream() -> Any:
        for _ in range(chunks):
            yield {"choices": [{"delta": {"content": "w"}}]}
        if cancel:
            await asyncio.Event().wait()
        raise RuntimeError("upstream went away")

    async def consume() -> int:
        got = 0
        async for _ in hook.async_post_call_streaming_iterator_hook(key, upstream(), data):
            got += 1
        return got

    task = asyncio.ensure_future(consume())
    if cancel:
        await asyncio.sleep(0.01)
        task.cancel()
    with pytest.raises(asyncio.CancelledError if cancel else RuntimeError):
        await task
    return hook, (await hook.limiter.usage("acct:u1")).tokens


@pytest.mark.parametrize("cancel", [False, True])
async def test_a_stream_cut_short_pays_only_for_what_it_produced(cancel: bool) -> None:
    # Nothing produced: nothing charged (not the 506-token reservation, not the prompt estimate).
    hook, tokens = await _stream_until_it_fails(0, cancel=cancel)
    assert tokens == 0 and hook.limiter.in_flight == 0 and not hook._records
    # Three chunks sent: the prompt was processed and three tokens delivered.
    hook, tokens = await _stream_until_it_fails(3, cancel=cancel)
    assert tokens == 6 + 3 and hook.limiter.in_flight == 0 and not hook._records


async def test_refusals_without_counters_still_carry_the_tier_limits() -> None:
    # The storage down (fail closed) and a request too large for the tier: no usage, the limits only.
    hook, key = _hook(FakeClock()), _key()
    hook.limiter.storage = dead_redis_storage()
    for data, code in ((_data(), "limiter_unavailable"),
                       ({**_data(), "messages": [{"role": "user", "content": "x" * 5000}]}, "rate_limited")):  # fmt: skip
        with pytest.raises(GatewayProxyException) as info:
            await hook.async_pre_call_hook(key, None, data, "acompletion")
        assert info.value.gateway_error.code == code
        await hook.async_post_call_failure_hook(data, info.value, key)
        headers = await hook.async_post_call_response_headers_hook(data, key, None)
        assert headers == {"x-ratelimit-limit-requests": "10", "x-ratelimit-limit-tokens": "1000",
                           "x-ratelimit-limit-tokens-day": "10000", "x-ratelimit-reset-tokens-day": "16h0m0s"}  # fmt: skip
    assert not hook._records
    await hook.limiter.aclose()


async def test_key_scope_counts_each_key_alone() -> None:
    clock = FakeClock()
    for scope, expected in (("account", "concurrency_limited"), ("key", None)):
        hook = _hook(clock, scope)
        for key in (_key(key="k1"), _key(key="k1"), _key(key="k2")):
            try:
                await hook.async_pre_call_hook(key, None, _data(), "acompletion")
                code = None
            except GatewayProxyException as exc:
                code = exc.gateway_error.code
        assert code == expected, scope


async def test_master_key_is_not_limited() -> None:
    hook = _hook(FakeClock())
    data = _data()
    assert await hook.async_pre_call_hook(UserAPIKeyAuth(api_key="m"), None, data, "acompletion") is None
    assert META_KEY not in data["metadata"] and hook.limiter.in_flight == 0


async def test_lost_ticket_is_settled_at_its_reservation() -> None:
    clock = FakeClock()
    limiter = Limiter(MemoryStorage(), RecordingMetrics(), clock=clock, max_request_ms=600_000)
    ticket = (await limiter.admit("a", "free", FREE, Cost(need=5, want=50))).ticket
    assert ticket is not None
    clock.advance(601)
    await limiter.renew_leases()
    assert ticket.settled and limiter.in_flight == 0
    assert (await limiter.usage("a")).day_tokens == 50
