"""The LiteLLM edge of auth: the ``custom_auth`` function and the access hook (first callback).

``make_auth_function`` builds what ``general_settings.custom_auth`` names. LiteLLM calls it on every
authenticated route with ``(request=..., api_key=...)``; ``api_key`` is ``None`` or ``""`` without a key.
Order: master key (constant-time compare) -> key format (401, no backend call) -> route gate (403, no
backend call) -> cache/backend (401/503/504) -> ``UserAPIKeyAuth`` carrying the key's short hash (never
the key), the user id, the identity in ``metadata[IDENTITY_KEY]`` and the allowed model names.

``AccessHook.async_pre_call_hook`` gates the model of each inference request (LiteLLM only enforces the
``models`` list with its costly common checks) and refuses request fields that would steer routing.
Every refusal is raised through ``to_proxy_exception``.
"""

from __future__ import annotations

import functools
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import HTTPException, Request
from litellm.proxy._types import LitellmUserRoles, SpecialModelNames, UserAPIKeyAuth
from litellm.proxy.auth.auth_utils import get_request_route

from .._config import Secret
from .._edge import to_proxy_exception, to_replacement_exception
from .._errors import BadRequest, GatewayError, InvalidApiKey
from .._litellm import GatewayHook, identity_of, is_master
from ..identity import IDENTITY_KEY, Identity, key_hash
from .authenticator import Authenticator
from .gates import ModelGate, check_fields, check_route
from .keys import check_format

log = logging.getLogger("litellm_cloud.auth")

AuthFunction = Callable[..., Awaitable[UserAPIKeyAuth]]

#: What ``UserAPIKeyAuth.models`` holds for a key that may use no model at all. LiteLLM reads an empty
#: list as "every model" (litellm/proxy/auth/model_checks.py, get_complete_model_list: an empty key list
#: falls back to the whole proxy list), so "nothing" must be said with its own marker, which it filters
#: out of every listing (measured on 1.103.7).
NO_MODELS = SpecialModelNames.no_default_models.value


class MasterKey:
    """The LiteLLM master key, compared in constant time."""

    def __init__(self, secret: Secret) -> None:
        self._value = secret.reveal().encode("utf-8", "surrogatepass") if secret else None
        self.name = key_hash(secret.reveal()) if secret else ""

    def matches(self, api_key: object) -> bool:
        if self._value is None or not isinstance(api_key, str) or not api_key:
            return False
        return hmac.compare_digest(api_key.encode("utf-8", "surrogatepass"), self._value)


def make_auth_function(authenticator: Authenticator, gate: ModelGate, master: MasterKey) -> AuthFunction:
    """The ``custom_auth`` callable LiteLLM invokes on every authenticated request."""

    # dataclasses.asdict costs ~15 us a call, a fifth of the whole hook: serialise each identity once and
    # give every request its own shallow copy (LiteLLM may write into the metadata it is handed).
    @functools.lru_cache(maxsize=4096)
    def metadata_items(identity: Identity) -> tuple[tuple[str, Any], ...]:
        return tuple(identity.to_metadata().items())

    async def user_api_key_auth(request: Request, api_key: str | None) -> UserAPIKeyAuth:
        if master.matches(api_key):
            return UserAPIKeyAuth(api_key=master.name, user_role=LitellmUserRoles.PROXY_ADMIN)
        try:
            check_format(api_key)
            check_route(get_request_route(request))
            identity = await authenticator.authenticate(api_key)
        except GatewayError as err:
            raise to_proxy_exception(err) from None
        return UserAPIKeyAuth(
            api_key=identity.key_hash,
            user_id=identity.user_id,
            user_role=LitellmUserRoles.INTERNAL_USER,
            models=gate.allowed_names(identity) or [NO_MODELS],
            metadata={IDENTITY_KEY: dict(metadata_items(identity))},
        )

    return user_api_key_auth


class AccessHook(GatewayHook):
    """Model access for each inference request; the master key passes untouched."""

    def __init__(self, gate: ModelGate) -> None:
        super().__init__()
        self._gate = gate

    async def async_pre_call_hook(
        self, user_api_key_dict: UserAPIKeyAuth, cache: Any, data: dict, call_type: Any
    ) -> None:
        if is_master(user_api_key_dict):
            return
        try:
            identity = identity_of(user_api_key_dict)
            if identity is None:
                # Not ours: fail closed rather than let an unknown caller past the model gate.
                raise InvalidApiKey("This request carries no HeartCode identity.")
            check_fields(data)
            self._gate.check(identity, data.get("model"))
        except GatewayError as err:
            raise to_proxy_exception(err) from None
        return

    async def on_failure(self, request_data: dict[str, Any], exc: Exception) -> HTTPException | None:
        err = litellm_refusal(exc)
        return to_replacement_exception(err) if err is not None else None


_FIELD = r"[A-Za-z0-9_.\-]{1,40}"
_FIELD_NAME = re.compile(_FIELD)
_REJECTED = "Rejected Request:"
_REJECTED_FIELD = re.compile(rf"{_REJECTED} ({_FIELD}) is not allowed")


def _field_message(field: str, *, url: bool = False) -> str:
    return f"The request field '{field}' " + ("may not be a URL." if url else "is not accepted.")


def rejected_message(litellm_message: str) -> str:
    """Our message for one of LiteLLM's "Rejected Request: ..." errors (it never echoes client values)."""
    match = _REJECTED_FIELD.match(litellm_message)
    if match:
        return _field_message(match.group(1))
    return "The request carries a field or value the gateway does not accept (routing or credentials)."


def litellm_refusal(exc: BaseException) -> BadRequest | None:
    """Our 400 for a client mistake LiteLLM refuses in its own words, or None for anything else.

    - Client-side routing fields (api_base, ...), refused before our auth runs with a bare ValueError
      that would become a 500 (``litellm_cloud._litellm_compat`` keeps our code on that path).
    - A URL-valued destination (``"model": "http://..."``), refused with an HTTPException whose detail
      is ``{"error": "invalid_request", "param": ...}``; it would answer code "400".
    """
    if isinstance(exc, ValueError) and str(exc).startswith(_REJECTED):
        return BadRequest(rejected_message(str(exc)))
    detail = exc.detail if isinstance(exc, HTTPException) and exc.status_code == 400 else None
    if not isinstance(detail, dict) or detail.get("error") != "invalid_request":
        return None
    param = str(detail.get("param") or "")
    field = param if _FIELD_NAME.fullmatch(param) else "a field"
    return BadRequest(_field_message(field, url=str(detail.get("message", "")).startswith("URL-valued")))
