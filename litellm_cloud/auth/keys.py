"""The shape of a HeartCode API key, checked before anything else (no backend call for junk).

A key is ``hc-sk-`` followed by 16 to 128 characters from ``A-Z a-z 0-9 _ -``. Anything else is refused
with 401 ``invalid_api_key`` at once: a typo, a key of another provider, an ``sk-...`` LiteLLM key or a
header full of garbage never reaches the backend, the cache or a log line.
"""

from __future__ import annotations

import hashlib
import re

from .._errors import InvalidApiKey

KEY_PREFIX = "hc-sk-"
MIN_BODY, MAX_BODY = 16, 128
_KEY_RE = re.compile(rf"{re.escape(KEY_PREFIX)}[A-Za-z0-9_-]{{{MIN_BODY},{MAX_BODY}}}")


def is_well_formed(api_key: object) -> bool:
    """Whether ``api_key`` has the shape of a HeartCode key (says nothing about its validity)."""
    return isinstance(api_key, str) and _KEY_RE.fullmatch(api_key) is not None


def check_format(api_key: object) -> str:
    """``api_key`` if it is well formed; otherwise raise ``InvalidApiKey`` (the message never echoes it)."""
    if api_key is None or api_key == "":
        raise InvalidApiKey(
            "Missing API key. Send it as 'Authorization: Bearer hc-sk-...'."
        )
    if not is_well_formed(api_key):
        raise InvalidApiKey(f"Invalid API key: a HeartCode key starts with '{KEY_PREFIX}'.")
    assert isinstance(api_key, str)
    return api_key


def key_digest(api_key: str) -> str:
    """The full SHA-256 of a key: the cache's index (collision-free, unlike the 12-hex ``key_hash``)."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()
