"""Response metering: how many tokens a response or a stream used, read from what the upstream sent.

LiteLLM hands the hooks responses as objects or dicts (``ModelResponse``, stream chunks), so every read
goes through ``_get``. The upstream's ``usage`` is preferred; without it, the text is estimated
(``estimate.text_tokens``) or, for a stream, each chunk that carried a token counts one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def usage_tokens(response: Any) -> int | None:
    """Prompt + completion tokens the upstream reported in a response or stream chunk, if it did."""
    usage = _get(response, "usage")
    if usage is None:
        return None
    prompt, completion, total = (
        _get(usage, "prompt_tokens"),
        _get(usage, "completion_tokens"),
        _get(usage, "total_tokens"),
    )
    if isinstance(prompt, int) or isinstance(completion, int):
        return int(prompt or 0) + int(completion or 0)
    return int(total) if isinstance(total, int) else None


def response_text(response: Any) -> str:
    parts = []
    for choice in _get(response, "choices") or []:
        message = _get(choice, "message") or _get(choice, "delta")
        content = _get(message, "content") if message is not None else _get(choice, "text")
        if isinstance(content, str):
            parts.append(content)
    return "".join(parts)


# Delta fields that carry generated tokens (reasoning models stream reasoning_content first).
_PRODUCED_FIELDS = ("content", "tool_calls", "reasoning_content", "function_call")


class StreamMeter:
    """Counts a stream: the upstream's usage chunk when one comes, else the prompt plus one token a chunk.

    A stream cut short (upstream error, cancellation, client gone) before its first content chunk and
    without a usage chunk produced nothing anyone can see: it is charged 0, like a failed call. Once
    content was sent, the prompt was processed and the chunks delivered: both are charged.
    """

    def __init__(self, prompt: int) -> None:
        self.prompt = prompt
        self.chunks = 0
        self.reported: int | None = None
        self.finished = False  # the upstream's stream ended normally

    def observe(self, chunk: Any) -> None:
        """Count one chunk the client is sent."""
        reported = usage_tokens(chunk)
        if reported:
            self.reported = reported
        for choice in _get(chunk, "choices") or []:
            delta = _get(choice, "delta")
            if delta is not None and any(_get(delta, f) for f in _PRODUCED_FIELDS):
                self.chunks += 1

    @property
    def tokens(self) -> int:
        """What the stream costs so far."""
        if self.reported is not None:
            return self.reported
        if self.chunks == 0 and not self.finished:
            return 0
        return self.prompt + self.chunks
