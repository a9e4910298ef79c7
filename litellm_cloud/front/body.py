"""The body guard: a POST to an inference route must carry one JSON object, in UTF-8, under a size limit.

LiteLLM parses the body inside its auth dependency, and a body that is valid JSON but not an object
(``[1]``, ``"x"``, ``null``) reaches ``request_data.get(...)`` there: an ``AttributeError``, a 500 with
two ERROR tracebacks, with or without a key (measured on 1.103.7). The guard reads the body first
(at most ``max_bytes``; a ``Content-Length`` over it is refused before reading) and answers
``400 invalid_request`` or ``413 request_too_large`` itself, through the error edge. A body that passes
is handed on unchanged, with ``Content-Type: application/json`` (LiteLLM would read a form body).

Refused: a body that is not UTF-8, not JSON (``NaN`` and ``Infinity`` included, which are not JSON),
nested deeper than the parser allows, not an object, sent compressed (``Content-Encoding``), with a
``model`` that is not a string (LiteLLM's pre-auth checks call ``model.split``: a 500), or without the
route's main field (``REQUIRED_FIELD``), or with a field LiteLLM handles itself of the wrong JSON type
(``FIELD_TYPES``). The last three were found by tests/api/test_fuzz.py.
"""

from __future__ import annotations

import json
from typing import Any

from .._edge import to_response
from .._errors import BadRequest, GatewayError, RequestTooLarge
from ._asgi import ASGIApp, Message, Receive, Scope, Send

#: The size limit, the same as nginx's default ``NGINX_BODY_LIMIT`` (10m), so both ports refuse alike.
MAX_BODY_BYTES = 10 * 1024 * 1024

#: The POST routes whose bodies the guard checks (the customer inference API).
GUARDED_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/chat/completions",
        "/v1/completions",
        "/completions",
        "/v1/embeddings",
        "/embeddings",
        "/v1/responses",
        "/responses",
    }
)


#: The field each route cannot do without. LiteLLM's ``/v1/completions`` handler reads ``data["prompt"]``
#: before any hook runs (a ``KeyError``: 500); the others are checked here too, for one answer everywhere.
REQUIRED_FIELD = {
    **dict.fromkeys(("/v1/chat/completions", "/chat/completions"), "messages"),
    **dict.fromkeys(("/v1/completions", "/completions"), "prompt"),
    **dict.fromkeys(("/v1/embeddings", "/embeddings", "/v1/responses", "/responses"), "input"),
}


#: Fields LiteLLM reads (iterates, indexes) before or around our hooks, with the JSON type they must
#: have. ``"tools": 1`` next to a refused field is a ``TypeError`` in LiteLLM's failure logging, a 500
#: and a reset connection (found by tests/api/test_fuzz.py).
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "messages": (list,),
    "tools": (list,),
    "functions": (list,),
    "metadata": (dict,),
    "litellm_metadata": (dict,),
    "stream_options": (dict,),
    "web_search_options": (dict,),
    "tool_choice": (str, dict),
}


class _Disconnected(Exception):
    """The client left before its body arrived."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def check_body(body: bytes, path: str = "") -> None:
    """Raise ``BadRequest`` unless ``body`` is one UTF-8 JSON object fit for ``path``."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("The request body must be UTF-8 encoded JSON.") from None
    if not text.strip():
        raise BadRequest("The request body is empty; send a JSON object.")
    try:
        data = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise BadRequest("The request body is nested too deeply.") from None
    except ValueError as exc:
        raise BadRequest(f"The request body is not valid JSON ({str(exc)[:120]}).") from None
    if not isinstance(data, dict):
        raise BadRequest(f"The request body must be a JSON object, not {_kind(data)}.")
    if "model" in data and not isinstance(data["model"], str):
        # LiteLLM's pre-auth body checks call model.split(): a non-string model is a 500 there.
        raise BadRequest(f"'model' must be a string, not {_kind(data['model'])}.")
    for name, types in FIELD_TYPES.items():
        if data.get(name) is not None and not isinstance(data[name], types):
            raise BadRequest(f"'{name}' must be {' or '.join(_kind(t()) for t in types)}, not {_kind(data[name])}.")
    required = REQUIRED_FIELD.get(path)
    if required is not None and required not in data:
        raise BadRequest(f"The request needs '{required}'.")
    if required == "input" and "embeddings" in path:
        _embeddings_input(data["input"])


def _embeddings_input(given: object) -> None:
    # LiteLLM's embeddings handler indexes into token lists before any hook: ``[[]]`` is an IndexError.
    if isinstance(given, str):
        return
    if not isinstance(given, list) or not given:
        raise BadRequest("'input' must be a string or a non-empty array.")
    for item in given:
        if isinstance(item, list) and not item:
            raise BadRequest("'input' token arrays must not be empty.")
        if not isinstance(item, str | int | list) or isinstance(item, bool):
            raise BadRequest("'input' items must be strings, token ids or token arrays.")


def _kind(value: object) -> str:
    kinds = {list: "an array", dict: "an object", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


class BodyGuard:
    """ASGI middleware: checks the bodies of ``GUARDED_PATHS`` POSTs before ``app`` sees them."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, paths: frozenset[str] = GUARDED_PATHS) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(scope, receive)
            check_body(body, scope["path"])
        except _Disconnected:
            return
        except GatewayError as err:
            await to_response(err)(scope, receive, send)
            return
        await self.app(_as_json(scope, len(body)), _replay(body, receive), send)

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding not in (b"", b"identity"):
            raise BadRequest("Compressed request bodies are not accepted; send plain JSON.")
        length = headers.get(b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_bytes:
            raise RequestTooLarge(self._too_large())
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise RequestTooLarge(self._too_large())
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self) -> str:
        return f"The request body is larger than {self.max_bytes} bytes."


def _as_json(scope: Scope, length: int) -> Scope:
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in (b"content-type", b"content-length")]
    extra = [(b"content-type", b"application/json"), (b"content-length", str(length).encode())]
    return {**scope, "headers": [*headers, *extra]}


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` once, then waits on the real one (for disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
