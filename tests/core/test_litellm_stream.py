"""Middle chunks built from a template (``_litellm_stream``) are the objects LiteLLM would have built.

Each case runs one chunk sequence through two real ``CustomStreamWrapper``s: one with LiteLLM's own
``chunk_creator``, one with ours, and compares every chunk they return (type, fields, fields set,
extras, private state, hidden params but their ``created_at`` stamp), what they raise, and the
wrapper's state after each chunk. If a LiteLLM upgrade changes the code the template reproduces,
``install`` refuses and ``test_active_on_the_pinned_versions`` fails: re-measure, then update
``_MEASURED`` or drop the cut.
"""

from __future__ import annotations

import asyncio
import datetime
import types
import uuid
from typing import Any

import litellm
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litellm.litellm_core_utils.litellm_logging import Logging
from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper
from openai._models import construct_type
from openai.types.chat.chat_completion_chunk import ChatCompletionChunk

from litellm_cloud import _litellm_speed, _litellm_stream

from .test_litellm_speed import same

HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "heartcode-chat"}
SKIP_STATE = {
    "chunk_creator",
    "completion_stream",
    "logging_obj",
    "chunks",
    "_stream_created_time",
    "rules",
    _litellm_stream._TEMPLATE,
}


def first() -> dict[str, Any]:
    return {**HEAD, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                 "finish_reason": None}]}  # fmt: skip


def middle(text: str, **changes: Any) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}
    chunk: dict[str, Any] = {**HEAD, "choices": [choice]}
    for name, value in changes.items():
        where, _, field = name.partition("__")
        {"chunk": chunk, "choice": choice, "delta": choice["delta"]}[where][field] = value
    return chunk


def finish() -> dict[str, Any]:
    return {
        **HEAD,
        "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop", "stop_reason": None}],
    }


def usage(n: int) -> dict[str, Any]:
    return {**HEAD, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": n + 7}}


VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "other id": {"chunk__id": "chatcmpl-2"},
    "fingerprint": {"chunk__system_fingerprint": "fp-1"},
    "role again": {"delta__role": "assistant"},
    "index 1": {"choice__index": 1},
    "logprobs": {"choice__logprobs": {"content": [{"token": "x", "logprob": -0.1, "bytes": [120], "top_logprobs": []}]}},
    "extra field": {"chunk__prompt_token_ids": [1, 2]},
    "extra choice field": {"choice__stop_reason": None},
    "reasoning": {"delta__reasoning_content": "hmm"},
    "tool call": {"delta__tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
    "refusal": {"delta__refusal": "no"},
    "service tier": {"chunk__service_tier": "default"},
    "early finish": {"choice__finish_reason": "length"},
}  # fmt: skip


def _wrapper(data: list[dict[str, Any]], ours: bool, provider: str = "openai", **params: Any) -> CustomStreamWrapper:
    log = Logging(model="heartcode-chat", messages=[{"role": "user", "content": "hi"}], stream=True,
                  call_type="acompletion", start_time=datetime.datetime.now(), litellm_call_id=str(uuid.uuid4()),
                  function_id="1")  # fmt: skip
    log.update_environment_variables(model="heartcode-chat", user=None, optional_params={},
                                     litellm_params={"api_base": "http://gpu-1/v1", **params}, custom_llm_provider=provider)  # fmt: skip

    async def stream() -> Any:
        for item in data:
            yield construct_type(type_=ChatCompletionChunk, value=item)

    wrapper = CustomStreamWrapper(completion_stream=stream(), model="heartcode-chat", logging_obj=log,
                                  custom_llm_provider=provider, stream_options={"include_usage": True})  # fmt: skip
    wrapper.created = HEAD["created"]  # else each wrapper stamps its first chunk with its own second
    if not ours:
        original = getattr(CustomStreamWrapper.chunk_creator, _litellm_speed._MARK)
        wrapper.chunk_creator = types.MethodType(original, wrapper)  # type: ignore[method-assign]
    return wrapper


def _without_stamp(chunk: Any) -> Any:
    hidden = getattr(chunk, "_hidden_params", None)
    if isinstance(hidden, dict):
        assert isinstance(hidden.pop("created_at", 0.0), float)
    return chunk


async def _run(wrapper: CustomStreamWrapper) -> list[Any]:
    """Each chunk returned (or the exception raised), with the wrapper's state after it."""
    steps: list[Any] = []
    while True:
        try:
            chunk = await wrapper.__anext__()
        except StopAsyncIteration:
            return steps
        except Exception as e:  # noqa: BLE001 - compared by type and message
            steps.append((type(e), str(e)))
            return steps
        state = {k: v for k, v in vars(wrapper).items() if k not in SKIP_STATE}
        steps.append((_without_stamp(chunk), state, len(wrapper.chunks), wrapper.response_uptil_now))


def both(data: list[dict[str, Any]], **params: Any) -> tuple[list[Any], list[Any], CustomStreamWrapper]:
    assert _litellm_stream.middle_chunks_from_template()
    theirs, ours = _wrapper(data, False, **params), _wrapper(data, True, **params)
    return asyncio.run(_run(theirs)), asyncio.run(_run(ours)), ours


def assert_same(a: list[Any], b: list[Any]) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert type(x[0]) is type(y[0]), i
        if isinstance(x[0], type):
            assert x == y, i
            continue
        assert same(x[0], y[0]), (i, x[0], y[0])
        assert x[0].model_dump() == y[0].model_dump(), i
        assert x[1].keys() == y[1].keys() and all(same(x[1][k], y[1][k]) for k in x[1]), i
        assert x[2:] == y[2:], i


def test_active_on_the_pinned_versions() -> None:
    assert _litellm_stream.changed_methods() == [], "a LiteLLM upgrade changed the stream code (see the log)"
    assert _litellm_stream.middle_chunks_from_template()
    assert _litellm_stream.middle_chunks_from_template()  # idempotent: no second wrapper
    assert not hasattr(getattr(CustomStreamWrapper.chunk_creator, _litellm_speed._MARK), _litellm_speed._MARK)


def test_a_plain_stream_is_built_from_the_template() -> None:
    data = [first(), *(middle(f" tok{i}") for i in range(40)), finish(), usage(40)]
    theirs, ours, wrapper = both(data)
    assert_same(theirs, ours)
    assert _litellm_stream._TEMPLATE in vars(wrapper)  # the fast path ran (not only LiteLLM's)
    assert (
        "".join(step[0].choices[0].delta.content or "" for step in ours if step[0].choices)
        == wrapper.response_uptil_now
    )


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_chunk_unlike_the_template_is_built_by_litellm(variant: str) -> None:
    data = [first(), middle("a1"), middle("b2"), middle("c3", **VARIANTS[variant]), middle("d4"), finish(), usage(4)]
    theirs, ours, _ = both(data)
    assert_same(theirs, ours)


def test_repetition_is_refused_alike() -> None:
    data = [first(), *(middle(" same") for _ in range(litellm.REPEATED_STREAMING_CHUNK_LIMIT + 5)), finish()]
    theirs, ours, _ = both(data)
    assert isinstance(theirs[-1][0], type) and "repeating" in theirs[-1][1]
    assert_same(theirs, ours)


def test_reasoning_merge_and_other_providers_are_left_to_litellm() -> None:
    data = [first(), *(middle(f"t{i}") for i in range(5)), finish()]
    for params in ({"merge_reasoning_content_in_choices": True},):
        theirs, ours, wrapper = both(data, **params)
        assert_same(theirs, ours)
        assert _litellm_stream._TEMPLATE not in vars(wrapper)
    theirs_w, ours_w = _wrapper(data, False, provider="hosted_vllm"), _wrapper(data, True, provider="hosted_vllm")
    assert_same(asyncio.run(_run(theirs_w)), asyncio.run(_run(ours_w)))
    assert _litellm_stream._TEMPLATE not in vars(ours_w)


_text = st.text(st.characters(codec="utf-8"), max_size=6)
_step = st.one_of(_text.map(lambda t: ("text", t)), st.sampled_from(sorted(VARIANTS)).map(lambda v: ("variant", v)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_step, max_size=25), st.booleans())
def test_any_chunk_sequence_is_built_alike(steps: list[tuple[str, str]], ended: bool) -> None:
    data = [first()]
    for kind, value in steps:
        data.append(middle(value) if kind == "text" else middle("v", **VARIANTS[value]))
    if ended:
        data += [finish(), usage(len(steps))]
    theirs, ours, _ = both(data)
    assert_same(theirs, ours)
