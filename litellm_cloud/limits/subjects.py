"""Who a request counts against, and under which tier: one policy for the hook and ``GET /v1/usage``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..identity import Identity
from ..tiers import Tier, Tiers


@dataclass(frozen=True)
class Subjects:
    """The tier table and the scope setting (``HEARTCODE_LIMITS_SCOPE``): account or key."""

    tiers: Tiers
    scope: Literal["account", "key"] = "account"

    def subject(self, ident: Identity) -> str:
        """The counter a request counts against: the account, or the key with ``scope == "key"``."""
        return f"key:{ident.key_hash}" if self.scope == "key" else f"acct:{ident.user_id}"

    def tier_of(self, ident: Identity) -> Tier:
        """The tier of ``ident``.

        The authenticator makes identities only for tiers this same table has (``TierNotConfigured``
        otherwise), so the lookup cannot miss; were it to, the ``KeyError`` fails the request closed.
        """
        return self.tiers[ident.tier]
