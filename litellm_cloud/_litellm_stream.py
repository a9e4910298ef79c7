"""One cut in LiteLLM's per-chunk work: the middle of a stream built from a template, not rebuilt.

A py-spy profile of one worker relaying streams (bench/README.md, "Streaming capacity") put about 60% of
the worker's CPU in ``CustomStreamWrapper.chunk_creator``: for every chunk LiteLLM 1.103.7 builds a
``ModelResponseStream`` twice over (``model_response_creator``, then ``return_processed_chunk_logic``
rebuilds the choices from ``model_dump()``), with a ``Delta`` and two ``StreamingChoices``, each through
LiteLLM's custom ``__init__`` and pydantic's ``__setattr__``. For the chunks between the first and the
last of an OpenAI-compatible stream (one choice, a non-empty ``content`` delta, nothing else set), that
work yields the same object every time except for the text and the ``created_at`` stamp in its hidden
params.

So ``middle_chunks_from_template()`` wraps ``chunk_creator``: the first middle chunk of each stream goes
through LiteLLM, and the result is kept as that stream's template (a copy of its pydantic state, taken
before anyone downstream sees the object). A later chunk whose every field except ``delta.content``
equals the template chunk's (same id, model, fingerprint, index; no role, finish reason, logprobs,
tool calls, usage or extra fields), met while the stream is in the same state (first chunk sent, no
finish reason, nothing held back, no reasoning merge), gets a copy of the template with its own text.
LiteLLM's repetition check still runs for it, and its errors are raised the way ``chunk_creator``
raises them. Everything else (the first chunk, the finish, usage, tool calls, other providers) goes
through LiteLLM unchanged.

**Guard.** The wrapper checks that the LiteLLM functions whose result it reproduces still refer to the
names measured on 1.103.7 (``_MEASURED``); after an upgrade that changes them it logs an error and
changes nothing. tests/core/test_litellm_stream.py fails in that case, and compares patched and
unpatched streams object by object (hypothesis over chunk sequences).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from ._litellm_speed import _MARK, referenced_names

log = logging.getLogger("litellm_cloud.stream")

_TEMPLATE = "_litellm_cloud_template"
_SCALARS = (str, int, float, bool, type(None))
#: What ``chunk_creator`` sets on the wrapper for a middle chunk (the template replays the values it left).
_SETS = frozenset({"response_id", "_provider_response_model", "system_fingerprint", "intermittent_finish_reason"})

#: The ``CustomStreamWrapper`` methods whose outcome a template copy reproduces for a plain middle chunk,
#: and a digest of the names each refers to (``names_digest``), measured on LiteLLM 1.103.7.
_MEASURED: dict[str, str] = {
    "chunk_creator": "aa523fc2ae6a5a02",
    "_dispatch_provider_chunk": "1cdd1c404e41db00",
    "handle_openai_chat_completion_chunk": "b0803273c145a509",
    "model_response_creator": "6e1048551f1838cb",
    "set_model_id": "3cb32df9e6da1c49",
    "return_processed_chunk_logic": "49daad399661d2b4",
    "is_chunk_non_empty": "25421b8d0da3b3b5",
    "check_special_tokens": "20c825b20d9d8474",
    "strip_role_from_delta": "7e6f59e424d00487",
    "_optional_combine_thinking_block_in_choices": "615e880cc854f156",
}


def names_digest(func: Any) -> str:
    """A short digest of the names ``func``'s code refers to (the original's, if ``func`` is our wrapper)."""
    return hashlib.sha256(" ".join(sorted(referenced_names(getattr(func, _MARK, func)))).encode()).hexdigest()[:16]


def changed_methods() -> list[str]:
    """The measured methods whose code no longer refers to the names measured (empty on the pinned version)."""
    from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper

    return [name for name, digest in _MEASURED.items()
            if names_digest(getattr(CustomStreamWrapper, name, None)) != digest]  # fmt: skip


def _copy(model: Any, **changes: Any) -> Any:
    """A new pydantic object with ``model``'s state, ``changes`` replacing fields (wherever they live)."""
    values = dict(model.__dict__)
    extra = None if model.__pydantic_extra__ is None else dict(model.__pydantic_extra__)
    for name, value in changes.items():
        if name in values:
            values[name] = value
        elif extra is not None and name in extra:
            extra[name] = value
        else:
            raise KeyError(name)
    private = model.__pydantic_private__
    cls: Any = type(model)
    new = cls.__new__(cls)
    object.__setattr__(new, "__dict__", values)
    object.__setattr__(new, "__pydantic_extra__", extra)
    object.__setattr__(new, "__pydantic_fields_set__", set(model.__pydantic_fields_set__))
    object.__setattr__(new, "__pydantic_private__", None if private is None else dict(private))
    return new


def _flat(model: Any, skip: str) -> tuple[Any, ...] | None:
    """Every field of ``model`` but ``skip`` as (name, value) pairs, or None if one is not a plain scalar."""
    pairs: list[Any] = [frozenset(model.__pydantic_fields_set__)]
    for state in (model.__dict__, model.__pydantic_extra__ or {}):
        for name, value in state.items():
            if name == skip:
                continue
            if not isinstance(value, _SCALARS):
                return None
            pairs.append((name, value))
    return tuple(pairs)


def plain_middle_text(chunk: Any) -> str | None:
    """The text of a plain middle chunk of an OpenAI stream (see the module docstring), else None."""
    from openai.types.chat.chat_completion_chunk import ChatCompletionChunk

    if type(chunk) is not ChatCompletionChunk or chunk.__pydantic_extra__:
        return None
    choices = chunk.__dict__.get("choices")
    if type(choices) is not list or len(choices) != 1:
        return None
    choice = choices[0]
    delta = choice.__dict__.get("delta")
    if choice.__pydantic_extra__ or delta is None or delta.__pydantic_extra__:
        return None
    content = delta.__dict__.get("content")
    if type(content) is not str or not content:
        return None
    parts = (_flat(chunk, "choices"), _flat(choice, "delta"), _flat(delta, "content"))
    unset = (("usage",), ("logprobs", "finish_reason"), ("tool_calls", "function_call", "refusal", "role"))
    for part, names in zip(parts, unset, strict=True):
        if part is None or any(pair[1] is not None for pair in part[1:] if pair[0] in names):
            return None
    return content


def _shape(model: Any, skip: str) -> tuple[dict[str, Any], frozenset[str]]:
    return {**model.__dict__, skip: None}, frozenset(model.__pydantic_fields_set__)


class _Template:
    """The first plain middle chunk of one stream, and what LiteLLM built from it."""

    def __init__(self, chunk: Any, result: Any, wrapper: Any) -> None:
        choice = chunk.__dict__["choices"][0]
        delta = choice.__dict__["delta"]
        self.kinds = (type(chunk), type(choice), type(delta))
        self.shape = (_shape(chunk, "choices"), _shape(choice, "delta"), _shape(delta, "content"))
        self.state = {name: getattr(wrapper, name) for name in _SETS}
        built = result.choices[0]
        self.response = _copy(result)
        self.choice = _copy(built)
        self.delta = _copy(built.delta)

    def text_of(self, chunk: Any) -> str | None:
        """The text of ``chunk`` if everything else in it equals the template chunk, else None."""
        if type(chunk) is not self.kinds[0] or chunk.__pydantic_extra__:
            return None
        choices = chunk.__dict__.get("choices")
        if type(choices) is not list or len(choices) != 1:
            return None
        choice = choices[0]
        if type(choice) is not self.kinds[1] or choice.__pydantic_extra__:
            return None
        delta = choice.__dict__.get("delta")
        if type(delta) is not self.kinds[2] or delta.__pydantic_extra__:
            return None
        text = delta.__dict__.get("content")
        if type(text) is not str or not text:
            return None
        if (_shape(chunk, "choices"), _shape(choice, "delta"), _shape(delta, "content")) != self.shape:
            return None
        return text

    @staticmethod
    def fits(result: Any, content: str) -> bool:
        """True if ``result`` has the shape the template copies: one choice with this text, plain values."""
        choices = getattr(result, "choices", None)
        if type(choices) is not list or len(choices) != 1:
            return False
        choice = choices[0]
        delta = getattr(choice, "delta", None)
        private = result.__pydantic_private__ or {}
        return (
            delta is not None
            and getattr(delta, "content", None) == content
            and _flat(result, "choices") is not None
            and _flat(choice, "delta") is not None
            and _flat(delta, "content") is not None
            and choice.__pydantic_private__ is None
            and delta.__pydantic_private__ is None
            and set(private) <= {"_hidden_params", "_response_headers"}
            and private.get("_response_headers") is None
            and type(private.get("_hidden_params")) is dict
        )

    def build(self, wrapper: Any, content: str) -> Any:
        wrapper.__dict__.update(self.state)
        delta = _copy(self.delta, content=content)
        choice = _copy(self.choice, delta=delta)
        response = _copy(self.response, choices=[choice])
        private = response.__pydantic_private__
        private["_hidden_params"] = {**private["_hidden_params"], "created_at": time.time()}
        return response


def _steady(wrapper: Any, custom_providers: list[str], logger: logging.Logger) -> bool:
    """The stream state in which LiteLLM treats every plain middle chunk alike."""
    return (
        wrapper.sent_first_chunk is True
        and wrapper.received_finish_reason is None
        and wrapper.holding_chunk == ""
        and not wrapper.merge_reasoning_content_in_choices
        and wrapper.custom_llm_provider == "openai"
        and wrapper.custom_llm_provider not in custom_providers
        and not logger.isEnabledFor(logging.DEBUG)
    )


def middle_chunks_from_template() -> bool:
    """Wrap ``CustomStreamWrapper.chunk_creator`` (module docstring); True if active."""
    import litellm
    from litellm import exception_type
    from litellm._logging import verbose_logger
    from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper

    current = CustomStreamWrapper.chunk_creator
    original: Callable[..., Any] = getattr(current, _MARK, current)
    changed = changed_methods()
    if changed:
        log.error("LiteLLM's stream code changed (%s): every stream chunk keeps its full cost", ", ".join(changed))
        return False
    if current is not original:
        return True  # installed already

    def chunk_creator(self: Any, chunk: Any) -> Any:
        if not _steady(self, litellm._custom_providers, verbose_logger):
            return original(self, chunk)
        template: _Template | None = self.__dict__.get(_TEMPLATE)
        if template is not None:
            text = template.text_of(chunk)
            if text is None:
                return original(self, chunk)
            try:
                self.raise_on_model_repetition()
            except Exception as e:  # noqa: BLE001 - re-raised as chunk_creator raises what happens inside it
                e.message = str(e)  # type: ignore[attr-defined]
                raise exception_type(
                    model=self.model, custom_llm_provider=self.custom_llm_provider, original_exception=e
                )
            return template.build(self, text)
        text = plain_middle_text(chunk)
        before = dict(self.__dict__) if text is not None else None
        result = original(self, chunk)
        if before is not None and result is not None and text is not None and _Template.fits(result, text):
            changed = {k for k, v in self.__dict__.items() if k not in before or before[k] is not v}
            if changed <= _SETS and all(isinstance(getattr(self, k), _SCALARS) for k in _SETS):
                self.__dict__[_TEMPLATE] = _Template(chunk, result, self)
        return result

    setattr(chunk_creator, _MARK, original)
    CustomStreamWrapper.chunk_creator = chunk_creator  # type: ignore[method-assign]
    return True
