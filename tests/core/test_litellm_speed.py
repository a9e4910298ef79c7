"""The per-chunk cuts (``_litellm_speed``) give LiteLLM exactly what the code they replace gave.

If a LiteLLM or openai upgrade changes the code a cut mirrors, ``install()`` refuses (logs an error) and
``test_active_on_the_pinned_versions`` fails: re-measure, then update ``_MEASURED`` or drop the cut.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from litellm.litellm_core_utils.streaming_chunk_builder_utils import ChunkProcessor
from litellm.types.utils import Delta, ModelResponseStream, StreamingChoices, Usage
from openai import OpenAI
from openai._models import BaseModel, construct_type
from openai.types.chat.chat_completion_chunk import ChatCompletionChunk

from litellm_cloud import _litellm_speed

HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "heartcode-chat"}
CHUNKS: list[dict[str, Any]] = [
    {**HEAD, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]},
    {**HEAD, "choices": [{"index": 0, "delta": {"content": " tok"}, "logprobs": None, "finish_reason": None}]},
    {**HEAD, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop", "stop_reason": None}]},
    {**HEAD, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 400, "total_tokens": 407}},
    {**HEAD, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11,
                                      "completion_tokens_details": {"reasoning_tokens": 2},
                                      "prompt_tokens_details": {"cached_tokens": 3}}},
    {**HEAD, "choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}, "finish_reason": None}]},
    {**HEAD, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                "function": {"name": "f", "arguments": "{}"}}]}, "finish_reason": None}]},
    {**HEAD, "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None,
                          "logprobs": {"content": [{"token": "x", "logprob": -0.1, "bytes": [120], "top_logprobs": []}]}}]},
    {**HEAD, "system_fingerprint": "fp", "service_tier": "default", "prompt_token_ids": [1, 2],
     "choices": [{"index": "0", "delta": {"content": 5, "role": "tool"}, "finish_reason": "length"}]},
    {**HEAD, "choices": None, "created": 1.5},
    {"choices": [{"delta": None}]},
]  # fmt: skip


def same(a: Any, b: Any) -> bool:
    """Equal values, types, fields set, extras and private state, all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, BaseModel):
        return (
            a.__pydantic_fields_set__ == b.__pydantic_fields_set__
            and a.__pydantic_private__ == b.__pydantic_private__
            and same(a.__pydantic_extra__, b.__pydantic_extra__)
            and same(a.__dict__, b.__dict__)
        )
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    return bool(a == b)


def test_active_on_the_pinned_versions() -> None:
    assert _litellm_speed.install(), "a LiteLLM/openai upgrade changed code a cut mirrors (see the log)"
    assert _litellm_speed.install()  # idempotent: no second wrapper
    original = _litellm_speed._MARK
    assert not hasattr(getattr(ChunkProcessor._calculate_usage_per_chunk, original), original)


@pytest.mark.parametrize("data", CHUNKS, ids=range(len(CHUNKS)))
def test_chunks_built_as_the_sdk_builds_them(data: dict[str, Any]) -> None:
    plan = _litellm_speed.chunk_plan()
    assert plan is not None
    fast = _litellm_speed._build(plan, copy.deepcopy(data))
    assert same(fast, construct_type(type_=ChatCompletionChunk, value=copy.deepcopy(data)))


def test_the_client_uses_the_plan_for_chunks_only() -> None:
    _litellm_speed.install()
    client = OpenAI(api_key="none", base_url="http://127.0.0.1:9/v1")
    built = client._process_response_data(data=copy.deepcopy(CHUNKS[1]), cast_to=ChatCompletionChunk, response=None)  # type: ignore[arg-type]
    assert same(built, construct_type(type_=ChatCompletionChunk, value=copy.deepcopy(CHUNKS[1])))
    assert client._process_response_data(data={"a": 1}, cast_to=object, response=None) == {"a": 1}  # type: ignore[arg-type]


def _stream(usage: str, provider: str = "openai", n: int = 30) -> list[Any]:
    chunks: list[Any] = []
    for i in range(n):
        chunk = ModelResponseStream(choices=[StreamingChoices(index=0, delta=Delta(content=f"t{i}"))])
        chunk._hidden_params = {"custom_llm_provider": provider}
        chunks.append(chunk)
    chunks[-1].choices[0].finish_reason = "stop"
    counted = Usage(prompt_tokens=7, completion_tokens=n, total_tokens=7 + n)
    if usage == "last":
        chunks.append(ModelResponseStream(choices=[], usage=counted))
    elif usage == "hidden":
        chunks[-1]._hidden_params = {"custom_llm_provider": provider, "usage": counted}
    elif usage == "dict":
        chunks.append({"choices": [], "usage": counted.model_dump()})
    elif usage == "middle":
        chunks[n // 2].usage = Usage(prompt_tokens=7, completion_tokens=1, total_tokens=8)
    return chunks


@pytest.mark.parametrize("usage", ["last", "hidden", "dict", "middle", "none"])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_usage_as_litellm_computes_it(usage: str, provider: str) -> None:
    _litellm_speed.install()
    chunks = _stream(usage, provider)
    processor = ChunkProcessor(chunks)
    original = getattr(ChunkProcessor._calculate_usage_per_chunk, _litellm_speed._MARK)
    assert processor._calculate_usage_per_chunk(chunks=chunks) == original(processor, chunks=chunks)
    full = processor.calculate_usage(chunks=chunks, model="openai/heartcode-chat", completion_output="x")
    if usage != "none":
        assert full.prompt_tokens == 7


def test_trace_routing_skipped_only_where_it_cannot_import() -> None:
    from litellm.proxy._types import UserAPIKeyAuth
    from litellm.proxy.auth import user_api_key_auth as auth

    original = auth._seed_request_destinations
    try:
        import litellm.integrations.otel.logger  # noqa: F401
    except ImportError:
        usable = False
    else:
        usable = True
    assert _litellm_speed.skip_unusable_trace_routing() is not usable
    assert (auth._seed_request_destinations is _litellm_speed._no_trace_routing) is not usable
    if not usable and original is not _litellm_speed._no_trace_routing:
        assert original(UserAPIKeyAuth(api_key="sk-x")) is None  # what the skip replaces: nothing
