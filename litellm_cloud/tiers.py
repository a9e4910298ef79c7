"""Subscription tiers: what each tier may use, loaded once from ``tiers.yaml`` and validated.

The backend tells us a key's tier by name; this table says what that name means. An unknown name is
never guessed at (``Tiers.get`` returns ``None`` and auth refuses the key).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pydantic

from ._yaml import load_model


class Tier(pydantic.BaseModel):
    """The limits and model access of one subscription tier."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    name: str = ""
    rpm: int = pydantic.Field(gt=0, description="requests per rolling minute")
    tpm: int = pydantic.Field(gt=0, description="prompt + completion tokens per rolling minute")
    daily_tokens: int = pydantic.Field(gt=0, description="tokens per UTC day")
    max_parallel: int = pydantic.Field(gt=0, description="requests in flight at once")
    model_groups: tuple[str, ...] = pydantic.Field(
        min_length=1, description="model groups this tier may call (age checks apply on top)"
    )
    fleet_busy_at: float | None = pydantic.Field(
        default=None,
        gt=0,
        description="refuse with 503 fleet_busy once the group's queue (requests in flight or waiting per "
        "server) reaches this; absent = never refused for a full fleet",
    )
    priority: int = pydantic.Field(
        default=0, description="vLLM's request priority (lower is served first) when fleet.yaml says vllm_priority"
    )


class _TiersFile(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    tiers: dict[str, Tier] = pydantic.Field(min_length=1)

    @pydantic.field_validator("tiers")
    @classmethod
    def _names(cls, tiers: dict[str, Tier]) -> dict[str, Tier]:
        return {name: tier.model_copy(update={"name": name}) for name, tier in tiers.items()}


class Tiers(Mapping[str, Tier]):
    """The tier table, by name."""

    def __init__(self, tiers: Mapping[str, Tier]) -> None:
        self._tiers = dict(tiers)

    @classmethod
    def load(cls, path: Path) -> Tiers:
        """Load and validate a tiers file; a bad file raises ``ConfigError`` naming the line."""
        return cls(load_model(path, _TiersFile).tiers)

    def __getitem__(self, name: str) -> Tier:
        return self._tiers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tiers)

    def __len__(self) -> int:
        return len(self._tiers)

    def __repr__(self) -> str:
        return f"Tiers({sorted(self._tiers)})"
