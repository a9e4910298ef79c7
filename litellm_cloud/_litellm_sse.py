"""One cut in how LiteLLM 1.103.7 writes a stream chunk as SSE, installed by ``gateway.build_gateway``.

For the plain text chunks of an OpenAI-compatible stream, ``proxy_server._serialize_streaming_chunk``
calls ``_fast_serialize_simple_model_response_stream``, which reads about twenty attributes with
``getattr(obj, name, None)`` to decide that the chunk is plain. Most of them are absent: LiteLLM's
``Delta`` and ``ModelResponseStream`` delete the fields a chunk does not carry, so each read misses the
instance, falls into pydantic's ``BaseModel.__getattr__`` and ends in a raised and caught
``AttributeError``: ~1 us each, about a third of the function, which a py-spy profile of a worker
relaying streams put at ~8% (bench/README.md, 3 Dec 2026).

``fast_chunk_serialization()`` replaces that function (looked up by name in its caller) with the same
logic reading attributes through ``_Reader``: what ``getattr`` would return, found in the instance's
``__dict__`` or ``__pydantic_extra__``, and None where pydantic would raise, without raising. A name
the class itself defines (a property, a method, a private attribute) still goes through ``getattr``.
The bytes are the same for every chunk, or the function answers None as the original does (the caller
then uses ``model_dump_json``); tests/core/test_litellm_sse.py compares both on real and generated chunks.

**Guard.** The original and pydantic's ``__getattr__`` must refer to exactly the names measured on
LiteLLM 1.103.7 / pydantic 2.14.3, and the caller must look the function up by name; otherwise the cut
logs an error and changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from ._litellm_speed import _MARK, referenced_names

log = logging.getLogger("litellm_cloud.stream")

_MEASURED = {
    "_fast_serialize_simple_model_response_stream": frozenset(
        {"any", "dumps", "getattr", "isinstance", "len", "list", "orjson", "pop"}
    ),
    "pydantic BaseModel.__getattr__": frozenset({
        "AttributeError", "KeyError", "__class__", "__get__", "__getattribute__", "__name__", "__pydantic_private__",
        "hasattr", "object", "super", "type",
    }),
}  # fmt: skip

_UNSUPPORTED_DELTA_FIELDS = (
    "function_call",
    "tool_calls",
    "audio",
    "images",
    "annotations",
    "reasoning_content",
    "thinking_blocks",
    "provider_specific_fields",
    "refusal",
)

#: Every name the serializer reads.
_NAMES = frozenset({
    "provider_specific_fields", "system_fingerprint", "usage", "choices", "logprobs", "enhancements", "delta",
    "role", "content", "index", "finish_reason", "model", "id", "object", "created", *_UNSUPPORTED_DELTA_FIELDS,
})  # fmt: skip


class _Reader:
    """``getattr(obj, name, default)`` for the serializer's names, without pydantic's raise on a miss."""

    def __init__(self, base_model: type) -> None:
        self._base = base_model
        self._getattr = base_model.__getattr__  # type: ignore[attr-defined]
        self._through_getattr: dict[type, frozenset[str] | None] = {}

    def _plan(self, cls: type) -> frozenset[str] | None:
        """The names ``cls`` resolves itself (None: read everything with ``getattr``)."""
        if not (issubclass(cls, self._base) and getattr(cls, "__getattr__", None) is self._getattr
                and cls.__getattribute__ is object.__getattribute__):  # fmt: skip
            return None
        private = getattr(cls, "__private_attributes__", {})
        return frozenset(n for n in _NAMES if n in private or hasattr(cls, n))

    def get(self, obj: Any, name: str, default: Any = None) -> Any:
        cls = type(obj)
        try:
            own = self._through_getattr[cls]
        except KeyError:
            own = self._through_getattr[cls] = self._plan(cls)
        if own is None or name in own:
            return getattr(obj, name, default)
        state = obj.__dict__
        if name in state:
            return state[name]
        extra = obj.__pydantic_extra__
        if extra and name in extra:
            return extra[name]
        return default  # where pydantic raises AttributeError and getattr answers the default


def _serializer(reader: _Reader, dumps: Any) -> Any:
    get = reader.get

    def _fast_serialize_simple_model_response_stream(chunk: Any) -> bytes | None:
        # LiteLLM 1.103.7's function, line for line, with ``get`` for ``getattr(obj, name, default)``.
        if (get(chunk, "provider_specific_fields") is not None or get(chunk, "system_fingerprint") is not None
                or get(chunk, "usage") is not None):  # fmt: skip
            return None
        choices = get(chunk, "choices")
        if not isinstance(choices, list) or len(choices) != 1:
            return None
        choice = choices[0]
        if get(choice, "logprobs") is not None or get(choice, "enhancements") is not None:
            return None
        delta = get(choice, "delta")
        if delta is None:
            return None
        if any(get(delta, field) is not None for field in _UNSUPPORTED_DELTA_FIELDS):
            return None
        delta_dict: dict[str, Any] = {}
        role = get(delta, "role")
        content = get(delta, "content")
        if role is not None:
            delta_dict["role"] = role
        if content is not None:
            delta_dict["content"] = content
        choice_dict: dict[str, Any] = {"index": get(choice, "index", 0), "delta": delta_dict}
        finish_reason = get(choice, "finish_reason")
        if finish_reason is not None:
            choice_dict["finish_reason"] = finish_reason
        model = get(chunk, "model")
        if model is None:
            return None
        payload: dict[str, Any] = {
            "id": get(chunk, "id"),
            "object": get(chunk, "object"),
            "created": get(chunk, "created"),
            "model": model,
            "choices": [choice_dict],
        }
        for top_level_key in ("id", "object", "created"):
            if payload[top_level_key] is None:
                payload.pop(top_level_key)
        return dumps(payload)  # type: ignore[no-any-return]

    return _fast_serialize_simple_model_response_stream


def fast_chunk_serialization() -> bool:
    """Install the serializer above in place of LiteLLM's (module docstring); True if active."""
    try:
        import orjson
        import pydantic
        from litellm.proxy import proxy_server
    except ImportError:  # pragma: no cover - LiteLLM without its proxy extras
        return False
    name = "_fast_serialize_simple_model_response_stream"
    current = getattr(proxy_server, name, None)
    original = getattr(current, _MARK, current)
    caller = getattr(proxy_server, "_serialize_streaming_chunk", None)
    if not (original is not None and referenced_names(original) == _MEASURED[name]
            and name in referenced_names(caller)
            and referenced_names(getattr(pydantic.BaseModel, "__getattr__", None)) == _MEASURED["pydantic BaseModel.__getattr__"]):  # fmt: skip
        log.error("LiteLLM's stream chunk serializer changed: chunks keep their full serialization cost")
        return False
    if current is not original:
        return True  # installed already
    fast = _serializer(_Reader(pydantic.BaseModel), orjson.dumps)
    setattr(fast, _MARK, original)
    setattr(proxy_server, name, fast)
    return True
