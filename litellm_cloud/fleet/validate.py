"""Check the shape of an inference request before it is routed.

LiteLLM passes a malformed body on to the provider client, whose exceptions look like an upstream
failure; without this check ``"messages": "hi"`` would be answered as a fleet outage. Only what the
router and our limits rely on is checked; the GPU server still judges the rest (and its 400 passes
through).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._errors import BadRequest


def _positive_int(data: Mapping[str, Any], name: str) -> None:
    value = data.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise BadRequest(f"'{name}' must be a positive integer.")


def _content(content: Any, i: int) -> None:
    # LiteLLM's own message handling raises on odd parts (a None in a list), which it then reports as
    # a connection error: a fleet outage to the client. Parts must be objects with a string type.
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise BadRequest(f"'messages[{i}].content' must be a string, an array of content parts or null.")
    for part in content:
        if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
            raise BadRequest(f"'messages[{i}].content' parts must be objects with a string 'type'.")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise BadRequest(f"'messages[{i}].content' text parts need a string 'text'.")


def _stream(data: Mapping[str, Any]) -> None:
    if "stream" in data and not isinstance(data["stream"], bool):
        raise BadRequest("'stream' must be true or false.")


#: The model-group mode each call type needs: a chat server has no embeddings route and an embedding
#: server no completions, and the 404 an upstream answers for a missing route cools that server down.
_MODE = {"completion": "chat", "acompletion": "chat", "text_completion": "chat", "atext_completion": "chat",
         "responses": "chat", "aresponses": "chat", "embeddings": "embedding", "aembedding": "embedding"}  # fmt: skip
#: Fields of another API that LiteLLM passes on as its own arguments (``"messages"`` on /v1/completions
#: is a ``TypeError`` inside LiteLLM, retried and reported as a connection error: a fleet outage).
_FOREIGN = {"text_completion": ("messages",), "atext_completion": ("messages",), "responses": ("messages",),
            "aresponses": ("messages",), "embeddings": ("messages",), "aembedding": ("messages",)}  # fmt: skip


def validate_request(call_type: str, data: Mapping[str, Any], mode: str | None = None) -> None:
    """Raise ``BadRequest`` when ``data`` cannot be a valid ``call_type`` request to a group of ``mode``."""
    if not isinstance(data.get("model"), str) or not data["model"]:
        raise BadRequest("'model' is required and must be a string.")
    wanted = _MODE.get(call_type)
    if mode is not None and wanted is not None and mode != wanted:
        route = "/v1/embeddings" if mode == "embedding" else "/v1/chat/completions, /v1/completions or /v1/responses"
        raise BadRequest(f"The model '{data['model'][:100]}' is {'an embedding' if mode == 'embedding' else 'a chat'} model; use {route}.")
    foreign = [f for f in _FOREIGN.get(call_type, ()) if f in data]
    if foreign:
        raise BadRequest(f"This route does not take {', '.join(repr(f) for f in foreign)}.")
    if call_type in ("completion", "acompletion"):
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty array of message objects.")
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
                raise BadRequest(f"'messages[{i}]' must be an object with a string 'role'.")
            _content(message.get("content"), i)
        _positive_int(data, "max_tokens")
        _positive_int(data, "max_completion_tokens")
        _stream(data)
    elif call_type in ("text_completion", "atext_completion"):
        prompt = data.get("prompt")
        if not (isinstance(prompt, str) or (isinstance(prompt, list) and prompt)):
            raise BadRequest("'prompt' must be a string or a non-empty array.")
        _positive_int(data, "max_tokens")
        _stream(data)
    elif call_type in ("responses", "aresponses"):
        given = data.get("input")
        if not (isinstance(given, str) or (isinstance(given, list) and given and all(isinstance(i, Mapping) for i in given))):
            raise BadRequest("'input' must be a string or a non-empty array of input items.")
        _positive_int(data, "max_output_tokens")
        _stream(data)
    elif call_type in ("embeddings", "aembedding"):
        given = data.get("input")
        ok = isinstance(given, str) or (
            isinstance(given, list) and given and all(isinstance(i, str | int | list) for i in given)
        )
        if not ok:
            raise BadRequest("'input' must be a string or a non-empty array.")
