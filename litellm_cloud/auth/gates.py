"""What a customer key may reach: which routes, and which models.

Routes: LiteLLM runs our auth on every authenticated route, admin ones included, and (without its own
"common checks", which cost throughput) lets through whatever the hook accepts. So the route gate is an
allow-list: the inference routes and our usage route; everything else is 403 ``route_not_allowed`` for a
customer key. The master key never reaches these gates.

Models: a requested name resolves through the fleet manifest to a model group (group names and aliases
alike, so every name of a group is gated the same). Unknown names are 404 ``model_not_found``; a group the
tier does not include, or an ``age_verified_only`` group for a key that is not age-verified, is 403
``model_not_allowed``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .._errors import BadRequest, ModelNotAllowed, ModelNotFound, RouteNotAllowed
from ..fleet.manifest import Manifest
from ..identity import Identity
from ..tiers import Tiers

log = logging.getLogger("litellm_cloud.auth")

#: Every route a customer key may call (exact paths; LiteLLM's path normalisation happens before us).
#: Closed on purpose (docs/auth.md): files, batches, fine-tuning, assistants, threads, images, audio,
#: moderations, rerank, stored responses (``/v1/responses/{id}``), realtime: the fleet serves none of
#: them, or they need state the gateway does not keep.
CUSTOMER_ROUTES = frozenset(
    {
        "/v1/chat/completions",
        "/chat/completions",
        "/v1/completions",
        "/completions",
        "/v1/responses",
        "/responses",
        "/v1/embeddings",
        "/embeddings",
        "/v1/models",
        "/models",
        "/v1/usage",
        "/usage",
    }
)
#: Prefixes of the routes that carry one path segment more: ``GET /v1/models/{model}``.
_MODEL_PREFIXES = ("/v1/models/", "/models/")


#: Request fields that would let a caller steer LiteLLM past the model gate (other models on failure,
#: another upstream, its own model list). Refused with 400 for customer keys. (LiteLLM itself refuses
#: ``api_base``/``user_config`` before auth, and strips client ``mock_*`` fields.)
FORBIDDEN_FIELDS = frozenset(
    {
        "fallbacks",
        "context_window_fallbacks",
        "content_policy_fallbacks",
        "user_config",
        "model_list",
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "organization",
    }
)


def customer_route(route: str) -> bool:
    """Whether a customer key may call ``route`` (``CUSTOMER_ROUTES``, or ``/v1/models/<one name>``)."""
    if route in CUSTOMER_ROUTES:
        return True
    prefix = next((p for p in _MODEL_PREFIXES if route.startswith(p)), None)
    return prefix is not None and "/" not in route[len(prefix):] and len(route) > len(prefix)


def check_route(route: str) -> None:
    """Raise ``RouteNotAllowed`` unless a customer key may call ``route``."""
    if not customer_route(route):
        raise RouteNotAllowed(f"This API key cannot call {route[:100]}; it may call the inference API only.")


class ModelGate:
    """Model access by tier and age verification, precomputed per (tier, age_verified).

    ``tiers`` and ``fleet`` come from one ``Settings``, which has checked that every group a tier names
    is in the fleet.
    """

    def __init__(self, fleet: Manifest, tiers: Tiers) -> None:
        self._fleet = fleet
        self._tiers = tiers
        self._names: dict[tuple[str, bool], tuple[str, ...]] = {}
        for tier in tiers.values():
            for verified in (False, True):
                groups = [g for g in tier.model_groups if verified or not fleet.groups[g].age_verified_only]
                self._names[(tier.name, verified)] = tuple(n for g in groups for n in fleet.names_for(g))
            if not self._names[(tier.name, False)]:
                # Legal (such a tier is for verified accounts), but worth knowing: its other keys see no
                # model at all (hook.NO_MODELS keeps LiteLLM from reading "none" as "all").
                log.warning("tier %r allows only age-verified model groups: its unverified keys get no model", tier.name)

    def allowed_names(self, identity: Identity) -> list[str]:
        """Every public model name (groups and aliases) ``identity`` may call, for ``/v1/models``."""
        return list(self._names.get((identity.tier, identity.age_verified), ()))

    def check(self, identity: Identity, model: Any) -> str:
        """The model group ``model`` reaches, if ``identity`` may call it; else raise."""
        if not isinstance(model, str) or not model:
            raise BadRequest("The request needs a 'model' (a string); GET /v1/models lists yours.")
        group = self._fleet.resolve(model)
        if group is None:
            raise ModelNotFound(f"The model '{model[:100]}' does not exist; GET /v1/models lists yours.")
        if self._fleet.groups[group].age_verified_only and not identity.age_verified:
            raise ModelNotAllowed(f"The model '{model[:100]}' is only available to age-verified accounts.")
        tier = self._tiers.get(identity.tier)
        if tier is None or group not in tier.model_groups:
            raise ModelNotAllowed(f"The model '{model[:100]}' is not included in the {identity.tier[:40]} tier.")
        return group


def check_fields(data: Mapping[str, Any]) -> None:
    """Raise ``BadRequest`` if the body carries a field that steers routing (``FORBIDDEN_FIELDS``)."""
    bad = sorted(FORBIDDEN_FIELDS.intersection(data))
    if bad:
        raise BadRequest(f"These request fields are not accepted: {', '.join(bad)}.")
