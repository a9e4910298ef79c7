"""Our admin HTTP routes (master key only), mounted ahead of LiteLLM's own.

``POST /hc/keys/revoke`` with exactly one of ``{"api_key": "hc-sk-..."}``, ``{"key_hash": "key-..."}``,
``{"key_id": "..."}`` or ``{"user_id": "..."}`` drops the matching keys from the cache of this replica
and, when Redis is configured, of every replica. Answers::

    200 {"revoked": true, "selector": "key_hash", "dropped_here": 1, "scope": "redis", "replicas_notified": 2}
    503 {"error": {"code": "revocation_not_shared", ...}}   Redis unreachable: only this replica forgot it
    400 invalid_request | 401 invalid_api_key (no/wrong key) | 403 route_not_allowed (not the master key)

Revoke the key in the backend first: a dropped key is validated again on its next request.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .._bearer import bearer_token
from .._edge import to_proxy_exception
from .._errors import BadRequest, GatewayError, InvalidApiKey, RevocationNotShared, RouteNotAllowed
from .hook import MasterKey
from .keys import key_digest
from .revocation import Field, RevocationPublishFailed, Revocations, Selector

REVOKE_PATH = "/hc/keys/revoke"
_BODY_FIELDS: dict[str, Field] = {"api_key": "digest", "key_hash": "key_hash", "key_id": "key_id", "user_id": "user_id"}


def build_admin_router(revocations: Revocations, master: MasterKey) -> APIRouter:
    """The router with the revocation endpoint."""
    router = APIRouter()

    @router.post(REVOKE_PATH, include_in_schema=False)
    async def revoke(request: Request) -> JSONResponse:
        try:
            token = bearer_token(request.headers)
            if token is None:
                raise InvalidApiKey("Missing API key: this endpoint takes the LiteLLM master key.")
            if not master.matches(token):
                raise RouteNotAllowed("Only the LiteLLM master key may revoke keys.")
            selector = _selector(await request.body())
        except GatewayError as err:
            raise to_proxy_exception(err) from None
        try:
            result = await revocations.revoke(selector)
        except RevocationPublishFailed as exc:
            raise to_proxy_exception(
                RevocationNotShared(
                    f"Revoked on this replica only ({exc.dropped_here} entries): Redis is unreachable, other "
                    "replicas still hold the key until their cache TTL ends."
                )
            ) from None
        public = "api_key" if selector.field == "digest" else selector.field
        return JSONResponse({"revoked": True, "selector": public, "dropped_here": result.dropped_here,
                             "scope": result.scope, "replicas_notified": result.replicas_notified})

    return router


def _selector(raw: bytes) -> Selector:
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        raise BadRequest("The body must be JSON.") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    given = [k for k in _BODY_FIELDS if k in body]
    if len(given) != 1 or set(body) - set(_BODY_FIELDS):
        raise BadRequest("Send exactly one of: api_key, key_hash, key_id, user_id.")
    name = given[0]
    value = body[name]
    if not isinstance(value, str) or not value:
        raise BadRequest(f"'{name}' must be a non-empty string.")
    if name == "api_key":
        return Selector("digest", key_digest(value))
    return Selector(_BODY_FIELDS[name], value)
