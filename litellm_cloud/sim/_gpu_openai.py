"""The OpenAI/vLLM wire format of the simulator: request checks, a toy tokenizer, answers and chunks.

Tokenizer: a token is a run of up to four non-space characters (``re.findall(r"\\S{1,4}")``), so
"hi there" is 3 tokens (``hi``, ``ther``, ``e``). It is deterministic and close to the ~4 characters
per token of real BPE vocabularies, which is all that prompt counting and token limits need. A chat message costs its text's tokens plus one for its role.

Completion text: token 0 names the server (``gpu-3:``), the rest are short words chosen from the
prompt's hash, each with a leading space; one token is one streamed chunk.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
import time
import zlib
from collections.abc import Sequence
from typing import Any

try:  # optional, ~3x faster; the simulator works without it
    import orjson

    def dumps(obj: Any) -> bytes:
        """Compact JSON bytes."""
        return orjson.dumps(obj)
except ImportError:  # pragma: no cover - depends on the environment
    def dumps(obj: Any) -> bytes:
        """Compact JSON bytes."""
        return json.dumps(obj, separators=(",", ":")).encode()

loads = json.loads

_TOKEN = re.compile(r"\S{1,4}")
WORDS = ("the", "cat", "sat", "on", "a", "warm", "mat", "and", "then", "it", "saw", "blue", "sky",
         "over", "red", "hill", "so", "we", "all", "sing", "soft", "song", "now", "by", "sea")
_ENCODED_WORDS = tuple(json.dumps(" " + w).encode() for w in WORDS)


class BadRequest(Exception):
    """A request the simulator refuses with 400 (or ``status``), as vLLM would."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param


_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 429: "RateLimitError",
                500: "InternalServerError", 503: "ServiceUnavailableError"}


def error_body(status: int, message: str, param: str | None = None) -> bytes:
    """The OpenAI error shape vLLM uses: ``{"error": {"message", "type", "param", "code"}}``."""
    return dumps({"error": {"message": message, "type": _ERROR_TYPES.get(status, "APIError"),
                            "param": param, "code": status}})


def count_tokens(text: str) -> int:
    """Tokens in ``text`` under the simulator's tokenizer."""
    return len(_TOKEN.findall(text))


def parse_json(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or BadRequest."""
    try:
        data = loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def _message_text(content: Any, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise BadRequest(f"messages[{index}].content parts must be objects with a type", param="messages")
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise BadRequest(f"messages[{index}].content text part needs a string 'text'", param="messages")
                texts.append(part["text"])
        return " ".join(texts)
    raise BadRequest(f"messages[{index}].content must be a string, a list of parts or null", param="messages")


def prompt_tokens(messages: Any) -> tuple[int, str]:
    """``(token count, prompt text)`` of a chat request's ``messages``, checked like vLLM does."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list", param="messages")
    total = 0
    texts = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a string 'role'", param="messages")
        text = _message_text(msg.get("content"), i)
        texts.append(text)
        total += 1 + count_tokens(text)
    return total, "\n".join(texts)


def positive_int(data: dict[str, Any], *names: str) -> int | None:
    """The first of ``names`` present in ``data`` as an int >= 1 (None when absent)."""
    for name in names:
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequest(f"'{name}' must be an integer >= 1, got {value!r}", param=name)
        return value
    return None


def completion_tokens(server: str, prompt: str, n: int) -> list[bytes]:
    """``n`` completion tokens, each a JSON-encoded string; token 0 names the server."""
    start = zlib.crc32(prompt.encode())
    out = [json.dumps(f"{server}:").encode()]
    out.extend(_ENCODED_WORDS[(start + i) % len(WORDS)] for i in range(n - 1))
    return out[:n]


def join_tokens(tokens: Sequence[bytes]) -> str:
    """The completion text of JSON-encoded ``tokens``."""
    return "".join(json.loads(t) for t in tokens)


def chat_completion(rid: str, created: int, model: str, text: str, finish: str, prompt: int,
                    completion: int) -> bytes:
    """A non-streaming ``chat.completion`` body."""
    return dumps({
        "id": rid, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "tool_calls": []},
                     "logprobs": None, "finish_reason": finish, "stop_reason": None}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    })


def text_completion(rid: str, created: int, model: str, text: str, finish: str, prompt: int,
                    completion: int) -> bytes:
    """A non-streaming ``text_completion`` body (``/v1/completions``)."""
    return dumps({
        "id": rid, "object": "text_completion", "created": created, "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    })


class ChunkWriter:
    """Builds the SSE events of one streamed chat completion (or, with ``text``, text completion) as
    bytes, cheaply per token."""

    __slots__ = ("_head", "_text")

    def __init__(self, rid: str, created: int, model: str, *, text: bool = False) -> None:
        kind = b"text_completion" if text else b"chat.completion.chunk"
        self._text = text
        self._head = b'data: {"id":%s,"object":"%s","created":%d,"model":%s,"choices":' % (
            json.dumps(rid).encode(), kind, created, json.dumps(model).encode())

    def role(self) -> bytes:
        """The first event: the assistant role with empty content (text completions have none)."""
        if self._text:
            return b""
        return self._head + (b'[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,'
                             b'"finish_reason":null}]}\n\n')

    def token(self, encoded: bytes) -> bytes:
        """One event carrying one JSON-encoded token."""
        if self._text:
            return self._head + b'[{"index":0,"text":%s,"logprobs":null,"finish_reason":null}]}\n\n' % encoded
        return self._head + b'[{"index":0,"delta":{"content":%s},"logprobs":null,"finish_reason":null}]}\n\n' % encoded

    def finish(self, reason: str) -> bytes:
        """The event that ends the choice."""
        if self._text:
            return self._head + b'[{"index":0,"text":"","logprobs":null,"finish_reason":"%s","stop_reason":null}]}\n\n' % (
                reason.encode())
        return self._head + b'[{"index":0,"delta":{},"logprobs":null,"finish_reason":"%s","stop_reason":null}]}\n\n' % (
            reason.encode())

    def usage(self, prompt: int, completion: int) -> bytes:
        """The ``stream_options.include_usage`` event: no choices, the usage."""
        return self._head + b'[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}\n\n' % (
            prompt, completion, prompt + completion)


DONE = b"data: [DONE]\n\n"


def embedding_inputs(data: dict[str, Any]) -> list[str | list[int]]:
    """The ``input`` of an embeddings request as a list of strings or token-id lists."""
    raw = data.get("input")
    if isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw)):
        items: list[Any] = [raw]
    elif isinstance(raw, list) and raw:
        items = raw
    else:
        raise BadRequest("'input' must be a non-empty string, list of strings, or token arrays", param="input")
    for item in items:
        if isinstance(item, str):
            if not item:
                raise BadRequest("'input' strings must not be empty", param="input")
        elif not (isinstance(item, list) and item and all(
                isinstance(t, int) and not isinstance(t, bool) for t in item)):
            raise BadRequest("'input' items must be non-empty strings or lists of token ids", param="input")
    return items


def embedding_vector(model: str, item: str | list[int], dim: int) -> list[float]:
    """A unit vector of ``dim`` floats that depends only on ``model`` and ``item``."""
    key = (model + "\0" + (item if isinstance(item, str) else ",".join(map(str, item)))).encode()
    raw = bytearray()
    counter = 0
    while len(raw) < dim:
        raw += hashlib.blake2b(key + counter.to_bytes(4, "little"), digest_size=64).digest()
        counter += 1
    values = [(b - 127.5) / 127.5 for b in raw[:dim]]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def embedding_tokens(item: str | list[int]) -> int:
    """Tokens of one embeddings input."""
    return count_tokens(item) if isinstance(item, str) else len(item)


def embeddings_body(rid: str, created: int, model: str, vectors: list[list[float]], encoding: str,
                    prompt: int) -> bytes:
    """An ``/v1/embeddings`` answer; ``encoding`` "base64" packs little-endian float32 as OpenAI does."""
    data = []
    for i, vec in enumerate(vectors):
        emb: Any = (base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
                    if encoding == "base64" else vec)
        data.append({"index": i, "object": "embedding", "embedding": emb})
    return dumps({"id": rid, "object": "list", "created": created, "model": model, "data": data,
                  "usage": {"prompt_tokens": prompt, "total_tokens": prompt, "completion_tokens": 0}})


def model_list(model: str, max_model_len: int) -> bytes:
    """vLLM's ``GET /v1/models`` body for a server serving ``model``."""
    return dumps({"object": "list", "data": [{
        "id": model, "object": "model", "created": int(time.time()), "owned_by": "vllm",
        "root": model, "parent": None, "max_model_len": max_model_len, "permission": []}]})  # fmt: skip
