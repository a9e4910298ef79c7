"""The chunk serializer cut (``_litellm_sse``) writes exactly the bytes LiteLLM's own function writes.

If an upgrade changes the function it mirrors (or pydantic's ``__getattr__``), ``fast_chunk_serialization``
refuses (logs an error) and ``test_active_on_the_pinned_versions`` fails: re-measure, then update
``_MEASURED`` or drop the cut.
"""

from __future__ import annotations

from typing import Any

import orjson
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from litellm.proxy import proxy_server
from litellm.types.utils import Delta, ModelResponseStream, StreamingChoices, Usage

from litellm_cloud import _litellm_sse

NAME = "_fast_serialize_simple_model_response_stream"


def original() -> Any:
    current = getattr(proxy_server, NAME)
    return getattr(current, _litellm_sse._MARK, current)


FAST = _litellm_sse._serializer(_litellm_sse._Reader(pydantic.BaseModel), orjson.dumps)


def test_active_on_the_pinned_versions() -> None:
    assert _litellm_sse.fast_chunk_serialization()
    assert _litellm_sse.fast_chunk_serialization()  # idempotent
    installed = getattr(proxy_server, NAME)
    assert getattr(installed, _litellm_sse._MARK) is original()
    chunk = ModelResponseStream(id="c1", model="m", choices=[StreamingChoices(delta=Delta(content="hi"))])
    assert proxy_server._serialize_streaming_chunk(chunk) == original()(chunk)


def test_refused_when_the_mirrored_function_changes(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def changed(chunk: Any) -> bytes | None:
        return orjson.dumps({"model": getattr(chunk, "model", None), "extra": str(chunk)})

    monkeypatch.setattr(proxy_server, NAME, changed)
    assert not _litellm_sse.fast_chunk_serialization()
    assert getattr(proxy_server, NAME) is changed
    assert "serializer changed" in caplog.text


TEXT = st.none() | st.text(max_size=8)
RARELY = st.sampled_from([False, False, False, True])
DELTA_EXTRAS = ["tool_calls", "reasoning_content", "refusal", "audio", "function_call", "annotations",
                "thinking_blocks", "provider_specific_fields", "images"]  # fmt: skip
DELTA_VALUES: dict[str, Any] = {
    "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    "function_call": {"name": "f", "arguments": "{}"}, "provider_specific_fields": {"k": 1},
    "thinking_blocks": [{"type": "thinking", "thinking": "t"}], "annotations": [], "images": [{"type": "image_url", "image_url": {"url": "data:,"}, "index": 0}],
    "audio": {"id": "a", "data": "", "expires_at": 0, "transcript": ""},
}  # fmt: skip


@st.composite
def chunks(draw: st.DrawFn) -> Any:
    delta_kwargs: dict[str, Any] = {"content": draw(TEXT)}
    if draw(st.booleans()):
        delta_kwargs["role"] = draw(st.sampled_from(["assistant", "tool", None]))
    for field in draw(st.lists(st.sampled_from(DELTA_EXTRAS), max_size=2, unique=True)):
        delta_kwargs[field] = draw(st.none() | st.just(DELTA_VALUES.get(field, "x")))
    choice_kwargs: dict[str, Any] = {"delta": Delta(**delta_kwargs)}
    if draw(st.booleans()):
        choice_kwargs["finish_reason"] = draw(st.sampled_from(["stop", "length", None]))
    if draw(st.booleans()):
        choice_kwargs["index"] = draw(st.integers(0, 2))
    if draw(st.booleans()):
        choice_kwargs["logprobs"] = draw(st.none() | st.just({"content": []}))
    kwargs: dict[str, Any] = {"choices": [StreamingChoices(**choice_kwargs)] * draw(st.sampled_from([1, 1, 1, 0, 2]))}
    for field, values in (("id", TEXT), ("model", TEXT), ("system_fingerprint", st.none() | st.just("fp")),
                          ("provider_specific_fields", st.none() | st.just({"k": 1})), ("created", st.integers(0, 9))):  # fmt: skip
        if draw(st.booleans() if field in ("id", "model", "created") else RARELY):
            kwargs[field] = draw(values)
    if draw(RARELY):
        kwargs["usage"] = Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)
    if draw(st.booleans()):
        kwargs["service_tier"] = "default"  # an extra field
    chunk = ModelResponseStream(**kwargs)
    if draw(st.booleans()) and chunk.choices:
        chunk.choices[0].delta.__dict__.pop("content", None)  # a field deleted after construction
    return chunk


@settings(max_examples=400, deadline=None)
@given(chunks())
def test_same_bytes_as_litellm(chunk: Any) -> None:
    assert FAST(chunk) == original()(chunk)


@pytest.mark.parametrize("field", DELTA_EXTRAS)
def test_a_delta_beyond_text_is_left_to_model_dump(field: str) -> None:
    chunk = ModelResponseStream(id="c", model="m", choices=[StreamingChoices(delta=Delta(content="a", **{field: DELTA_VALUES.get(field, "x")}))])
    assert FAST(chunk) is None and original()(chunk) is None


@pytest.mark.parametrize("chunk", [
    ModelResponseStream(id="c", model="m", choices=[StreamingChoices(delta=Delta(content="a"))]),
    ModelResponseStream(id="c", model="m", choices=[StreamingChoices(delta=Delta(role="assistant", content=""))]),
    ModelResponseStream(id="c", model="m", choices=[StreamingChoices(delta=Delta(), finish_reason="stop")]),
])  # fmt: skip
def test_plain_chunks_take_the_fast_path(chunk: Any) -> None:
    """The cases the cut is for: answered here, not left to ``model_dump_json`` (the test above would
    pass with a serializer that always answers None)."""
    out = FAST(chunk)
    assert out is not None and out == original()(chunk)
