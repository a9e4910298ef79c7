"""``GET /v1/models/{model}`` (and ``/models/{model}``): one model, if the calling key may use it.

LiteLLM's own handler answers an alias (``heartcode-default``) with a bare ``{"detail": ...}`` 404 and
knows nothing of tiers, so ours is mounted ahead of it. It authenticates through LiteLLM's
``user_api_key_auth`` dependency (our custom auth and route gate) and answers from the same names
``GET /v1/models`` lists for the key: a name the key may not use is ``404 model_not_found``, worded
exactly as for a name that does not exist, so other tiers' models are not revealed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth
from litellm.proxy.auth.user_api_key_auth import user_api_key_auth

from .._edge import to_response
from .._errors import ModelNotFound
from ..fleet.manifest import Manifest
from ..identity import Identity
from .gates import ModelGate

#: LiteLLM's ``created`` for every configured model in ``/v1/models``; the same here, so both agree.
CREATED = 1677610602


def model_object(name: str, mode: str) -> dict[str, Any]:
    """The model object of ``name``, shaped like the items of LiteLLM's ``/v1/models``."""
    return {"id": name, "object": "model", "created": CREATED, "owned_by": "openai", "mode": mode}


def model_router(gate: ModelGate, fleet: Manifest) -> APIRouter:
    """The router serving ``GET /v1/models/{model}`` for the calling key."""
    router = APIRouter()

    async def retrieve(model: str, user_api_key_dict: UserAPIKeyAuth = Depends(user_api_key_auth)) -> JSONResponse:  # noqa: B008
        group = fleet.resolve(model)
        if user_api_key_dict.user_role == LitellmUserRoles.PROXY_ADMIN:
            allowed = group is not None
        else:
            identity = Identity.from_metadata(user_api_key_dict.metadata)
            allowed = identity is not None and model in gate.allowed_names(identity)
        if not allowed or group is None:
            return to_response(ModelNotFound(f"The model '{model[:100]}' does not exist; GET /v1/models lists yours."))
        return JSONResponse(model_object(model, fleet.groups[group].mode))

    router.add_api_route("/v1/models/{model}", retrieve, methods=["GET"], include_in_schema=True, tags=["models"])
    router.add_api_route("/models/{model}", retrieve, methods=["GET"], include_in_schema=False)
    return router
