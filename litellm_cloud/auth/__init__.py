"""Authentication and access: who is calling, and what they may reach.

PLACEHOLDER until issue 3 lands: accepts any well-formed ``hc-sk-`` key as an admin-tier account.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import UserAPIKeyAuth

from .._config import Settings
from .._edge import to_proxy_exception
from .._errors import InvalidApiKey
from ..identity import IDENTITY_KEY, Identity, key_hash
from ..observability import Metrics


@dataclass(frozen=True)
class Auth:
    """What LiteLLM calls: the auth function and the access hook."""

    user_api_key_auth: Any
    access_hook: CustomLogger


def build_auth(settings: Settings, metrics: Metrics) -> Auth:
    async def user_api_key_auth(request: Request, api_key: str | None) -> UserAPIKeyAuth:
        if api_key and settings.master_key and api_key == settings.master_key.reveal():
            return UserAPIKeyAuth(api_key=api_key, user_role="proxy_admin")
        if not api_key or not api_key.startswith("hc-sk-"):
            raise to_proxy_exception(InvalidApiKey("Invalid API key."))
        ident = Identity(user_id="dev", key_id="dev", key_hash=key_hash(api_key), tier="admin", age_verified=True)
        return UserAPIKeyAuth(api_key=ident.key_hash, user_id=ident.user_id, metadata={IDENTITY_KEY: ident.to_metadata()})

    return Auth(user_api_key_auth=user_api_key_auth, access_hook=CustomLogger())
