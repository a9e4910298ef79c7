"""What a request may cost, before the upstream says what it did cost.

The prompt is estimated at four characters a token (plus a few tokens a message), which is cheap,
deterministic and close for English; the real count replaces it when the request settles. The
completion is ``max_tokens`` (times ``n``) when the client gives it; otherwise a *fair share* of the
minute (``tpm // rpm``), so ``rpm`` ordinary requests fit the minute at once and a small tier is never
refused for requests its limits allow. The limiter reserves ``min(want, what is left)``, and admits while
at least the prompt fits (``need``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ._types import Cost, Limits

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4  # role and separators, per message
MIN_COMPLETION = 16  # the smallest completion a default estimate allows for


def text_tokens(text: str) -> int:
    """Tokens in ``text`` at four characters a token (at least one for non-empty text)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return text_tokens(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                total += text_tokens(part["text"])
            elif isinstance(part, str):
                total += text_tokens(part)
        return total
    return 0


def _chat_prompt_tokens(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    total = 0
    for msg in messages:
        if isinstance(msg, Mapping):
            total += MESSAGE_OVERHEAD + _content_tokens(msg.get("content"))
    return total


def _input_tokens(value: Any) -> int:
    """Embeddings/completions input: a string, a list of strings, a token list, or a list of token lists."""
    if isinstance(value, str):
        return text_tokens(value)
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return len(value)
        return sum(_input_tokens(v) for v in value)
    return 0


def prompt_tokens(data: Mapping[str, Any]) -> int:
    """The estimated prompt (input) tokens of a request body, at least 1."""
    if "messages" in data:
        total = _chat_prompt_tokens(data["messages"])
        if data.get("tools"):
            total += text_tokens(str(data["tools"]))
    elif "input" in data:
        total = _input_tokens(data["input"])
    else:
        total = _input_tokens(data.get("prompt"))
    return max(1, total)


def _max_completion(data: Mapping[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = data.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            n = data.get("n")
            return value * (n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1)
    return None


def estimate_cost(data: Mapping[str, Any], call_type: str, limits: Limits, *, prompt: int | None = None) -> Cost:
    """The reservation a request asks for under ``limits`` (see the module docstring); ``prompt`` is
    ``prompt_tokens(data)`` when the caller has it already."""
    if prompt is None:
        prompt = prompt_tokens(data)
    if "embedding" in call_type:
        return Cost(need=prompt, want=prompt)
    completion = _max_completion(data)
    if completion is not None:
        return Cost(need=prompt + 1, want=prompt + completion)
    return Cost(need=prompt + 1, want=max(prompt + MIN_COMPLETION, limits.tpm // limits.rpm))
