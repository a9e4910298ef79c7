"""The LiteLLM adapter: the one module that knows where LiteLLM keeps things in the shapes it hands us.

Beside ``_edge.py`` (which turns our errors into LiteLLM's), this reads LiteLLM's shapes (measured on
1.103.7), so the hooks speak of identities, requests and errors instead of dict paths:

- a request body (``data`` of pre-call, success, failure, headers hooks and the router's
  ``request_kwargs``) carries LiteLLM's metadata under ``litellm_metadata`` or ``metadata``, depending on
  the call type: ``metadata_dicts`` yields both, ``writable_metadata`` the one to write into;
- a callback's ``kwargs`` (``async_log_*_event``) carry it under ``metadata`` and
  ``litellm_params.metadata``, where the caller's ``UserAPIKeyAuth.metadata`` is copied under
  ``user_api_key_metadata`` (or ``user_api_key_auth_metadata``);
- ``UserAPIKeyAuth.metadata`` holds the identity auth made (``identity.IDENTITY_KEY``) and
  ``UserAPIKeyAuth.user_role`` is an enum or, after a copy, its string value;
- an exception we raised carries our error as ``gateway_error`` (``_edge.GatewayProxyException``);
- ``async_post_call_failure_hook`` has a four-argument signature of which our hooks need two:
  ``GatewayHook`` writes it once and hands over to ``on_failure(request_data, exc)``.

Everything here is tolerant: a shape it does not recognise reads as "absent", never as an exception,
because a hook that raises turns a client's request into a 500.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from fastapi import HTTPException
from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import LitellmUserRoles

from ._errors import GatewayError
from .identity import Identity

#: Where a request body keeps LiteLLM's metadata, in the order LiteLLM prefers them.
METADATA_FIELDS = ("litellm_metadata", "metadata")
#: Where LiteLLM copies ``UserAPIKeyAuth.metadata`` inside the request's metadata.
_AUTH_METADATA_HOLDERS = ("user_api_key_metadata", "user_api_key_auth_metadata")
_MASTER_ROLE = LitellmUserRoles.PROXY_ADMIN.value


def metadata_dicts(data: Mapping[str, Any] | None) -> Iterator[dict[str, Any]]:
    """Each metadata dict a request body carries (``litellm_metadata`` first, then ``metadata``)."""
    if not isinstance(data, Mapping):
        return
    for name in METADATA_FIELDS:
        meta = data.get(name)
        if isinstance(meta, dict):
            yield meta


def writable_metadata(data: dict[str, Any]) -> dict[str, Any]:
    """The metadata dict of a request body to write our own marks into (made if there is none)."""
    for meta in metadata_dicts(data):
        return meta
    meta = data["metadata"] = {}
    return meta


def callback_metadata_dicts(kwargs: Any) -> Iterator[dict[str, Any]]:
    """Each metadata dict of a logging callback's ``kwargs`` (``metadata``, then ``litellm_params.metadata``)."""
    if not isinstance(kwargs, Mapping):
        return
    params = kwargs.get("litellm_params")
    for meta in (kwargs.get("metadata"), params.get("metadata") if isinstance(params, Mapping) else None):
        if isinstance(meta, dict):
            yield meta


def identity_of(user_api_key_auth: Any) -> Identity | None:
    """The identity auth stored in a ``UserAPIKeyAuth``, or ``None`` (master key, no auth, not ours)."""
    return Identity.from_metadata(getattr(user_api_key_auth, "metadata", None))


def identity_in(metadata: Any) -> Identity | None:
    """The identity in a request's LiteLLM metadata (where LiteLLM copied the caller's auth metadata)."""
    if not isinstance(metadata, Mapping):
        return None
    for holder in _AUTH_METADATA_HOLDERS:
        ident = Identity.from_metadata(metadata.get(holder))
        if ident is not None:
            return ident
    return None


def is_master(user_api_key_auth: Any) -> bool:
    """Whether the caller authenticated with the LiteLLM master key (role ``proxy_admin``)."""
    role = getattr(user_api_key_auth, "user_role", None)
    return getattr(role, "value", role) == _MASTER_ROLE


def gateway_error_of(exc: BaseException | None) -> GatewayError | None:
    """Our error inside an exception LiteLLM hands back (one we raised through ``_edge``), if any."""
    err = getattr(exc, "gateway_error", None)
    return err if isinstance(err, GatewayError) else None


class GatewayHook(CustomLogger):
    """A LiteLLM callback of ours: its failure hook is ``on_failure``, LiteLLM's signature written once."""

    async def async_post_call_failure_hook(
        self,
        request_data: dict,
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> HTTPException | None:
        return await self.on_failure(request_data, original_exception)

    async def on_failure(self, request_data: dict[str, Any], exc: Exception) -> HTTPException | None:
        """Once per failed request (refusals of auth and pre-call hooks included); a returned
        ``HTTPException`` replaces the error (the first one of any callback wins: see ``gateway.py``)."""
        return None
