"""Cuts in LiteLLM's per-chunk and per-request work, installed once by ``gateway.build_gateway``.

A relayed stream costs LiteLLM 1.103.7 a fixed amount of Python per chunk; a py-spy profile of one worker
(bench/README.md, "Streaming capacity") put a quarter of it in the openai SDK turning each SSE event into
a ``ChatCompletionChunk`` and a tenth in rebuilding the finished stream's usage; a profile of plain
requests put 13% in one failing import repeated on every request. Each cut gives LiteLLM the same
objects, numbers and outcome as before, only sooner:

- ``fast_chunk_parsing()``: the openai SDK builds chunks with its generic ``construct_type``, which walks
  every field's type annotation for every chunk. For ``ChatCompletionChunk`` we build the same object
  from a per-class plan made once (the field names, their defaults, which fields hold a plain string or
  integer, which hold a nested chunk model). Whatever the plan does not cover (tool calls, logprobs,
  usage details, an unexpected type) still goes through the SDK's own ``_construct_field``.
- ``usage_from_usage_chunks()``: ``stream_chunk_builder`` recomputes usage by looking for ``usage`` on
  every chunk of the stream (``ChunkProcessor._calculate_usage_per_chunk``, several ``hasattr`` and
  ``typing.Protocol`` checks each). Only chunks that carry usage contribute, so the function is given
  those (and the first chunk, which names the provider); the text for traces is rebuilt as before.
- ``skip_unusable_trace_routing()``: after auth, LiteLLM's ``_seed_request_destinations`` imports its
  OTel V2 logger to route traces to per-tenant OTLP destinations. With the opentelemetry the project pins,
  that import fails (``opentelemetry._events`` is gone), so Python re-runs the failing module bodies on
  every request and the function ends in its own ``except`` having done nothing. When the import fails at
  install, the function is replaced by one that does nothing at once. (Our traces do not use it: the
  observability package exports with its own ``TracerProvider``.)

**Guards.** Each cut checks that the code it mirrors still refers to exactly the names measured on
LiteLLM 1.103.7 / openai 2.54.0 (``_MEASURED``). If an upgrade changes them, it logs an error and
changes nothing: streams then cost what they cost before. tests/core/test_litellm_speed.py fails in
that case and compares both cuts with the originals on real chunk objects.
"""

from __future__ import annotations

import logging
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("litellm_cloud.stream")

_MARK = "_litellm_cloud_original"

#: The names each mirrored function refers to (nested code included), measured on the pinned versions.
_MEASURED: dict[str, frozenset[str]] = {
    "openai BaseModel.construct": frozenset({
        "PYDANTIC_V1", "_ConfigProtocol", "__new__", "__setattr__", "_construct_field", "_get_extra_fields_type",
        "_init_private_attributes", "add", "alias", "allow_population_by_field_name", "construct_type",
        "field_get_default", "get", "get_model_config", "get_model_fields", "isinstance", "items", "object", "set",
    }),
    "openai BaseClient._process_response_data": frozenset({
        "APIResponseValidationError", "ModelBuilderProtocol", "ResponseT", "ValidationError",
        "_strict_response_validation", "build", "cast", "construct_type", "inspect", "isclass", "issubclass",
        "object", "pydantic", "validate_type",
    }),
    "ChunkProcessor._calculate_usage_per_chunk": frozenset({
        "ServerToolUse", "UsagePerChunk", "_extract_usage_chunk", "_last_provider_pricing_field",
        "_reset_anthropic_cursor_completion_tokens", "_usage_chunk_calculation_helper",
        "attach_cache_creation_token_details", "capture_cache_creation_token_details", "dict", "getattr",
        "hasattr", "isinstance", "litellm.types.litellm_core_utils.streaming_chunk_builder_utils",
        "model_validate", "server_tool_use",
    }),
    "ChunkProcessor._last_provider_pricing_field": frozenset({"_extract_usage_chunk", "getattr", "isinstance", "str"}),
}  # fmt: skip


def install() -> bool:
    """Every cut; True if the two stream cuts are active (the third applies only where it is useless)."""
    parsing = fast_chunk_parsing()
    usage = usage_from_usage_chunks()
    skip_unusable_trace_routing()
    return parsing and usage


def referenced_names(func: Any) -> frozenset[str]:
    """The global and attribute names ``func``'s code refers to, nested comprehensions included."""
    code = getattr(func, "__code__", None)
    names: set[str] = set()
    stack = [code] if isinstance(code, types.CodeType) else []
    while stack:
        current = stack.pop()
        names.update(current.co_names)
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return frozenset(names)


def _unchanged(what: str, func: Any) -> bool:
    if referenced_names(getattr(func, _MARK, func)) == _MEASURED[what]:
        return True
    log.error("LiteLLM/openai streaming code changed (%s): streams keep their full per-chunk cost", what)
    return False


# -- 1. chunk parsing ----------------------------------------------------------------------------------

_RAW_STR, _RAW_INT, _MODEL, _MODEL_LIST, _OTHER = range(5)
_Field = tuple[str, int, Any, Any, "_Plan | None"]  # name, kind, FieldInfo, default, nested plan


class _Plan:
    """How to build one openai model class from a dict the way ``BaseModel.construct`` does."""

    def __init__(self, cls: Any, fields: list[_Field]) -> None:
        self.cls = cls
        self.fields = fields
        self.names = frozenset(f[0] for f in fields)
        self.by_name = {f[0]: f for f in fields}
        self.defaults = {f[0]: f[3] for f in fields}  # in field order, as ``construct`` fills them


def _kind(annotation: Any, nested: dict[type, _Plan]) -> tuple[int, _Plan | None]:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is typing.Union and len(args) == 1:  # Optional[X]: the SDK validates, a str or int comes back as is
        annotation, origin = args[0], typing.get_origin(args[0])
    if annotation is str or (origin is typing.Literal and all(isinstance(a, str) for a in typing.get_args(annotation))):
        return _RAW_STR, None
    if annotation is int:
        return _RAW_INT, None
    if annotation in nested and origin is None:
        return _MODEL, nested[annotation]
    if origin is list and len(typing.get_args(annotation)) == 1 and typing.get_args(annotation)[0] in nested:
        return _MODEL_LIST, nested[typing.get_args(annotation)[0]]
    return _OTHER, None


def _plan(cls: type, nested: dict[type, _Plan]) -> _Plan | None:
    from openai._compat import field_get_default
    from openai._models import _get_extra_fields_type

    if _get_extra_fields_type(cls) is not None:  # type: ignore[arg-type]
        return None
    fields: list[_Field] = []
    for name, info in cls.model_fields.items():  # type: ignore[attr-defined]
        if info.alias is not None:
            return None
        kind, sub = _kind(info.annotation, nested) if not info.metadata else (_OTHER, None)
        # Optional[SomeModel] is validated by the SDK, not constructed: leave it to the SDK.
        if kind == _MODEL and typing.get_origin(info.annotation) is typing.Union:
            kind, sub = _OTHER, None
        default = field_get_default(info)
        if default is not None and not isinstance(default, (str, int)):
            return None
        fields.append((name, kind, info, default, sub))
    return _Plan(cls, fields)


def _build(plan: _Plan, values: dict[str, Any]) -> Any:
    from openai._models import _construct_field

    fields_values = dict(plan.defaults)
    fields_set: set[str] = set()
    extra: dict[str, Any] = {}
    for name, value in values.items():
        field = plan.by_name.get(name)
        if field is None:
            extra[name] = value
            continue
        fields_set.add(name)
        if value is None:
            continue  # the default stays
        _, kind, info, _default, sub = field
        if (kind == _RAW_STR and type(value) is str) or (kind == _RAW_INT and type(value) is int):
            fields_values[name] = value
        elif kind == _MODEL and type(value) is dict and sub is not None:
            fields_values[name] = _build(sub, value)
        elif kind == _MODEL_LIST and type(value) is list and sub is not None and all(type(v) is dict for v in value):
            fields_values[name] = [_build(sub, v) for v in value]
        else:
            fields_values[name] = _construct_field(value=value, field=info, key=name)
    model = plan.cls.__new__(plan.cls)
    object.__setattr__(model, "__dict__", fields_values)
    object.__setattr__(model, "__pydantic_private__", None)
    object.__setattr__(model, "__pydantic_extra__", extra)
    object.__setattr__(model, "__pydantic_fields_set__", fields_set)
    return model


def chunk_plan() -> _Plan | None:
    """The plan for ``ChatCompletionChunk`` (None if a class no longer fits the mirrored ``construct``)."""
    from openai._compat import PYDANTIC_V1
    from openai.types.chat.chat_completion_chunk import ChatCompletionChunk, Choice, ChoiceDelta

    if PYDANTIC_V1:
        return None
    nested: dict[type, _Plan] = {}
    for cls in (ChoiceDelta, Choice):
        plan = _plan(cls, nested)
        if plan is None:
            return None
        nested[cls] = plan
    return _plan(ChatCompletionChunk, nested)


def fast_chunk_parsing() -> bool:
    """Build ``ChatCompletionChunk`` from a per-class plan (see the module docstring); True if active."""
    from openai._base_client import BaseClient
    from openai._models import BaseModel
    from openai.types.chat.chat_completion_chunk import ChatCompletionChunk

    current = BaseClient._process_response_data
    original: Callable[..., Any] = getattr(current, _MARK, current)
    if not (_unchanged("openai BaseModel.construct", BaseModel.construct)
            and _unchanged("openai BaseClient._process_response_data", original)):  # fmt: skip
        return False
    if current is not original:
        return True  # installed already
    plan = chunk_plan()
    if plan is None:
        log.error("openai ChatCompletionChunk changed shape: streams keep their full per-chunk cost")
        return False

    def _process_response_data(self: Any, *, data: object, cast_to: Any, response: Any) -> Any:
        if cast_to is ChatCompletionChunk and type(data) is dict and not self._strict_response_validation:
            return _build(plan, data)
        return original(self, data=data, cast_to=cast_to, response=response)

    setattr(_process_response_data, _MARK, original)
    BaseClient._process_response_data = _process_response_data  # type: ignore[method-assign]
    return True


# -- 2. usage of a finished stream ---------------------------------------------------------------------


def _may_carry_usage(chunk: Any, stream_type: type) -> bool:
    """False only for a chunk in which ``ChunkProcessor._extract_usage_chunk`` finds no usage."""
    if type(chunk) is not stream_type:
        return True  # another shape: let LiteLLM look
    state: Any = chunk
    if "usage" in state.__dict__ or "usage" in (state.__pydantic_extra__ or {}):
        return True
    hidden = (state.__pydantic_private__ or {}).get("_hidden_params")
    return isinstance(hidden, dict) and hidden.get("usage") is not None


def usage_from_usage_chunks() -> bool:
    """Give ``_calculate_usage_per_chunk`` only the chunks that carry usage; True if active."""
    from litellm.litellm_core_utils.streaming_chunk_builder_utils import ChunkProcessor
    from litellm.types.utils import ModelResponseStream

    current = ChunkProcessor._calculate_usage_per_chunk
    original: Callable[..., Any] = getattr(current, _MARK, current)
    looked_up = "_calculate_usage_per_chunk" in referenced_names(ChunkProcessor.calculate_usage)
    if not (looked_up and _unchanged("ChunkProcessor._calculate_usage_per_chunk", original)
            and _unchanged("ChunkProcessor._last_provider_pricing_field", ChunkProcessor._last_provider_pricing_field)
            and "usage" not in ModelResponseStream.model_fields and not hasattr(ModelResponseStream, "usage")):  # fmt: skip
        if looked_up:
            return False
        log.error("LiteLLM no longer calls ChunkProcessor._calculate_usage_per_chunk: streams keep their cost")
        return False
    if current is not original:
        return True  # installed already

    def _calculate_usage_per_chunk(self: Any, chunks: Sequence[Any]) -> Any:
        # Anthropic's cursor reset looks at every chunk's finish reason: leave those streams alone.
        hidden = getattr(chunks[0], "_hidden_params", None) if chunks else None
        if (
            not chunks
            or isinstance(chunks[0], dict)
            or (isinstance(hidden, dict) and hidden.get("custom_llm_provider") == "anthropic")
        ):
            return original(self, chunks=chunks)
        kept = [chunks[0], *(c for c in chunks[1:] if _may_carry_usage(c, ModelResponseStream))]
        return original(self, chunks=kept)

    setattr(_calculate_usage_per_chunk, _MARK, original)
    ChunkProcessor._calculate_usage_per_chunk = _calculate_usage_per_chunk  # type: ignore[method-assign]
    return True


# -- 3. per-tenant trace routing that cannot import ----------------------------------------------------


def _no_trace_routing(user_api_key_dict: Any, request: Any = None) -> None:
    """What ``_seed_request_destinations`` achieves when LiteLLM's OTel V2 logger cannot be imported."""


def skip_unusable_trace_routing() -> bool:
    """Skip the per-request attempt at an import that fails (module docstring); True if skipped."""
    from litellm.proxy.auth import user_api_key_auth as auth

    if getattr(auth, "_seed_request_destinations", None) is _no_trace_routing:
        return True
    if "_seed_request_destinations" not in referenced_names(auth.user_api_key_auth):
        log.error("LiteLLM's auth no longer calls _seed_request_destinations by name: nothing skipped")
        return False
    try:
        from litellm.integrations.otel.logger import fan_out_provider  # noqa: F401
    except ImportError as exc:
        log.info("LiteLLM's OTel V2 trace routing cannot import (%s): skipped on every request", exc)
        auth._seed_request_destinations = _no_trace_routing  # type: ignore[attr-defined]
        return True
    return False  # it works here: leave it
