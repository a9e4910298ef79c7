"""Request checks the simulator makes the way vLLM's OpenAI server does, so the gateway meets real 400s.

vLLM validates a request with pydantic (``ChatCompletionRequest``, ``CompletionRequest``) and then with
``SamplingParams``; either failure is a ``400`` in the OpenAI error shape (``_gpu_openai.error_body``).
Checked here: the message roles, the sampling fields' types and ranges, ``n``, ``stop``, and the
completions ``prompt``, and the context (prompt + completion past ``max_model_len``, once ``_gpu_server``
has counted the prompt's tokens).

Not simulated: ``n > 1`` (vLLM samples several choices; the simulator answers ``400`` rather than
pretend), tool schemas and chat templates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ._gpu_openai import BadRequest, count_tokens

#: The roles vLLM's chat request model accepts (OpenAI's message types, plus ``function``).
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

# name -> (low, high, low inclusive): the ranges SamplingParams enforces.
_RANGES: Mapping[str, tuple[float, float, bool]] = {
    "temperature": (0.0, math.inf, True),
    "top_p": (0.0, 1.0, False),
    "presence_penalty": (-2.0, 2.0, True),
    "frequency_penalty": (-2.0, 2.0, True),
    "repetition_penalty": (0.0, math.inf, False),
    "min_p": (0.0, 1.0, True),
}
_INTS = ("seed", "top_k", "min_tokens", "top_logprobs")
_BOOLS = ("stream", "logprobs", "echo", "ignore_eos", "skip_special_tokens")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_roles(messages: list[Any]) -> None:
    """Raise unless every message has one of ``ROLES`` (call after the shape check)."""
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role not in ROLES:
            raise BadRequest(
                f"1 validation error: messages.{i}.role: Input should be one of {', '.join(sorted(ROLES))} "
                f"(got {str(role)[:40]!r})",
                param="messages",
            )


def check_sampling(data: Mapping[str, Any]) -> None:
    """Raise for a sampling field of the wrong type or out of range, as vLLM's validation does."""
    for name, (low, high, inclusive) in _RANGES.items():
        value = data.get(name)
        if value is None:
            continue
        if not _is_number(value):
            raise BadRequest(f"1 validation error: {name}: Input should be a valid number", param=name)
        if value > high or value < low or (value == low and not inclusive):
            bound = f"[{low}, {high}]" if inclusive else f"({low}, {high}]"
            raise BadRequest(f"{name} must be in {bound}, got {value}.", param=name)
    for name in _INTS:
        value = data.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise BadRequest(f"1 validation error: {name}: Input should be a valid integer", param=name)
    for name in _BOOLS:
        value = data.get(name)
        if value is not None and not isinstance(value, bool):
            raise BadRequest(f"1 validation error: {name}: Input should be a valid boolean", param=name)
    n = data.get("n")
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int):
            raise BadRequest("1 validation error: n: Input should be a valid integer", param="n")
        if n < 1:
            raise BadRequest(f"n must be at least 1, got {n}.", param="n")
        if n > 1:
            raise BadRequest("n > 1 is not simulated (the simulator samples one choice).", param="n")
    stop = data.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
        isinstance(stop, list) and all(isinstance(s, str) for s in stop)
    ):
        raise BadRequest("1 validation error: stop: Input should be a string or a list of strings", param="stop")


def completion_prompt(prompt: Any) -> tuple[int, str]:
    """``(token count, prompt text)`` of a ``/v1/completions`` prompt: a string, a list of one string, or
    token ids (one list, or a list of one list)."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt:
            raise BadRequest("'prompt' must not be empty", param="prompt")
        return count_tokens(prompt), prompt
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        if any(t < 0 for t in prompt):
            raise BadRequest("'prompt' token ids must be >= 0", param="prompt")
        return len(prompt), " ".join(map(str, prompt))
    if isinstance(prompt, list) and len(prompt) > 1:
        raise BadRequest("batched prompts are not simulated: send one prompt per request", param="prompt")
    raise BadRequest("'prompt' must be a string or a list of token ids", param="prompt")


def check_context(n_prompt: int, n_completion: int, max_model_len: int) -> None:
    """vLLM's refusal of a prompt and completion that do not fit the model's context."""
    if n_prompt + n_completion > max_model_len:
        raise BadRequest(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{n_prompt + n_completion} tokens ({n_prompt} in the messages, {n_completion} in the completion). "
            "Please reduce the length of the messages or completion.",
            param="messages",
        )
