"""Who is calling: made once by auth, read by every later step (limits, metrics, traces).

The identity travels inside LiteLLM's ``UserAPIKeyAuth.metadata`` as a plain dict under ``IDENTITY_KEY``
(LiteLLM copies and serialises metadata, so it must stay JSON-friendly). Nothing after auth re-parses
the key; the raw key is never stored here, only ``key_hash``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

IDENTITY_KEY = "hc_identity"


def key_hash(api_key: str) -> str:
    """A short, stable, non-reversible name for a key, for logs, traces, metrics and errors."""
    return "key-" + hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated customer key."""

    user_id: str
    key_id: str
    key_hash: str
    tier: str
    age_verified: bool

    def to_metadata(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_metadata(cls, metadata: Any) -> Identity | None:
        """The identity stored by auth, or ``None`` (master key, public route, no auth ran, or a shape
        that is not ours: tolerated, because a hook that raises answers the client with a 500)."""
        raw = metadata.get(IDENTITY_KEY) if isinstance(metadata, Mapping) else None
        if not isinstance(raw, Mapping):
            return None
        try:
            return cls(
                user_id=str(raw["user_id"]),
                key_id=str(raw["key_id"]),
                key_hash=str(raw["key_hash"]),
                tier=str(raw["tier"]),
                age_verified=bool(raw["age_verified"]),
            )
        except KeyError:
            return None
