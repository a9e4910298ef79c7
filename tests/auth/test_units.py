"""Auth parts without a proxy: gates, the authenticator's metrics and refusals, settings checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from litellm_cloud._config import Settings
from litellm_cloud._errors import (
    AuthUnavailable,
    BadRequest,
    ConfigError,
    InvalidApiKey,
    ModelNotAllowed,
    ModelNotFound,
    RouteNotAllowed,
    TierNotConfigured,
)
from litellm_cloud.auth import build_auth
from litellm_cloud.auth.authenticator import Authenticator, new_cache
from litellm_cloud.auth.backend import BackendVerdict
from litellm_cloud.auth.gates import CUSTOMER_ROUTES, ModelGate, check_fields, check_route
from litellm_cloud.auth.revocation import LocalRevocations, Selector
from litellm_cloud.identity import Identity, key_hash
from litellm_cloud.observability import Metrics

REPO = Path(__file__).resolve().parents[2]
KEY = "hc-sk-unit-test-key-000000000001"


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings.from_env({}, base_dir=REPO)


def ident(tier: str = "free", verified: bool = False) -> Identity:
    return Identity(user_id="u", key_id="k", key_hash="key-x", tier=tier, age_verified=verified)


def test_route_gate_is_an_allow_list() -> None:
    for route in CUSTOMER_ROUTES:
        check_route(route)
    for route in ["/key/generate", "/v1/chat/completions/", "/V1/chat/completions", "/router/settings", "/",
                  "/openai/deployments/x/chat/completions", "/engines/x/chat/completions", "/metrics"]:
        with pytest.raises(RouteNotAllowed):
            check_route(route)


def test_model_gate(settings: Settings) -> None:
    gate = ModelGate(settings.fleet, settings.tiers)
    assert gate.check(ident(), "heartcode-default") == "heartcode-chat-sfw"
    for name in settings.fleet.names_for("heartcode-chat-nsfw"):
        with pytest.raises(ModelNotAllowed):
            gate.check(ident(), name)
        assert gate.check(ident(verified=True), name) == "heartcode-chat-nsfw"
    with pytest.raises(ModelNotFound):
        gate.check(ident(), "gpt-4")
    for bad in (None, "", 3, ["heartcode-sfw"]):
        with pytest.raises(BadRequest):
            gate.check(ident(), bad)
    assert "heartcode-nsfw" not in gate.allowed_names(ident())
    assert "heartcode-nsfw" in gate.allowed_names(ident(verified=True))
    assert gate.allowed_names(ident(tier="gold")) == []


def test_model_gate_honours_the_tier(settings: Settings) -> None:
    from litellm_cloud.tiers import Tier, Tiers

    small = Tier(name="small", rpm=1, tpm=1, daily_tokens=1, max_parallel=1, model_groups=("heartcode-embed",))
    gate = ModelGate(settings.fleet, Tiers({"small": small}))
    assert gate.check(ident("small"), "heartcode-embed") == "heartcode-embed"
    with pytest.raises(ModelNotAllowed, match="small tier"):
        gate.check(ident("small", verified=True), "heartcode-sfw")
    assert gate.allowed_names(ident("small")) == ["heartcode-embed"]


def test_model_not_allowed_messages_truncate_the_name(settings: Settings) -> None:
    from litellm_cloud.tiers import Tier, Tiers

    # A long alias is no real name, so point one at the NSFW group through a manifest copy.
    long_name = "heartcode-nsfw-" + "x" * 500
    fleet = settings.fleet.model_copy(update={"aliases": {**settings.fleet.aliases, long_name: "heartcode-chat-nsfw"}})
    gate = ModelGate(fleet, settings.tiers)
    with pytest.raises(ModelNotAllowed) as info:
        gate.check(ident(), long_name)
    assert len(info.value.message) < 200 and long_name[:100] in info.value.message
    small = Tier(name="small", rpm=1, tpm=1, daily_tokens=1, max_parallel=1, model_groups=("heartcode-embed",))
    gate = ModelGate(fleet, Tiers({"small": small}))
    with pytest.raises(ModelNotAllowed) as info:
        gate.check(ident("small", verified=True), long_name)
    assert len(info.value.message) < 200


def test_a_tier_with_only_age_verified_groups_gives_unverified_keys_nothing(settings: Settings) -> None:
    from litellm_cloud.tiers import Tier, Tiers

    adult = Tier(name="adult", rpm=1, tpm=1, daily_tokens=1, max_parallel=1, model_groups=("heartcode-chat-nsfw",))
    gate = ModelGate(settings.fleet, Tiers({"adult": adult}))
    assert gate.allowed_names(ident("adult")) == []
    assert "heartcode-nsfw" in gate.allowed_names(ident("adult", verified=True))
    with pytest.raises(ModelNotAllowed):
        gate.check(ident("adult"), "heartcode-chat-nsfw")


def test_rejected_request_messages_name_the_field_only() -> None:
    from litellm_cloud.auth.hook import rejected_message

    assert rejected_message("Rejected Request: api_base is not allowed in request body. ...") == (
        "The request field 'api_base' is not accepted."
    )
    generic = rejected_message("Rejected Request: URL-valued fallback destination 'http://evil/x' is not allowed.")
    assert "evil" not in generic and "not accept" in generic


def test_the_litellm_error_path_keeps_our_code() -> None:
    from litellm.proxy.auth import auth_exception_handler as handler

    from litellm_cloud import _litellm_compat
    from litellm_cloud._edge import to_proxy_exception, to_replacement_exception

    assert _litellm_compat.install() and _litellm_compat.install()  # idempotent
    err = to_replacement_exception(BadRequest("no"))
    out = handler._as_proxy_exception(err)
    assert out is err and out.to_dict()["code"] == "invalid_request"
    assert handler._as_proxy_exception(to_proxy_exception(BadRequest("no"))).to_dict()["code"] == "invalid_request"
    from fastapi import HTTPException

    assert handler._as_proxy_exception(HTTPException(403, "x")).code == "403"  # everything else as before


def test_a_tier_naming_an_unknown_group_stops_start_up(settings: Settings) -> None:
    from litellm_cloud.tiers import Tier, Tiers

    odd = Tier(name="odd", rpm=1, tpm=1, daily_tokens=1, max_parallel=1, model_groups=("no-such-group",))
    with pytest.raises(ConfigError, match="no-such-group"):
        dataclasses.replace(settings, tiers=Tiers({"odd": odd}))  # Settings checks tiers against the fleet


def test_forbidden_fields() -> None:
    check_fields({"model": "x", "messages": [], "temperature": 1})
    with pytest.raises(BadRequest, match="fallbacks"):
        check_fields({"model": "x", "fallbacks": ["y"]})


class FakeBackend:
    def __init__(self, verdict: BackendVerdict | Exception) -> None:
        self.verdict = verdict
        self.calls = 0

    async def validate(self, api_key: str) -> BackendVerdict:
        self.calls += 1
        if isinstance(self.verdict, Exception):
            raise self.verdict
        return self.verdict


class CacheMetrics(Metrics):
    def __init__(self) -> None:
        self.results: list[str] = []

    def auth_cache(self, result: str) -> None:
        self.results.append(result)


def authenticator(settings: Settings, backend: FakeBackend, metrics: Metrics) -> Authenticator:
    cache = new_cache(ttl=60, negative_ttl=10, grace=300, max_size=10)
    return Authenticator(backend, cache, settings.tiers, metrics)


async def test_authenticator_identity_metrics_and_refusals(settings: Settings) -> None:
    m = CacheMetrics()
    backend = FakeBackend(BackendVerdict(valid=True, user_id="u7", key_id="k7", tier="premium", age_verified=True))
    auth = authenticator(settings, backend, m)
    identity = await auth.authenticate(KEY)
    assert identity == Identity(user_id="u7", key_id="k7", key_hash=key_hash(KEY), tier="premium", age_verified=True)
    assert await auth.authenticate(KEY) == identity
    assert m.results == ["miss", "hit"] and backend.calls == 1
    with pytest.raises(InvalidApiKey):
        await auth.authenticate("sk-not-ours")
    assert backend.calls == 1


async def test_unknown_tier_is_refused_and_cached_negatively(settings: Settings) -> None:
    m = CacheMetrics()
    backend = FakeBackend(BackendVerdict(valid=True, user_id="u", tier="gold"))
    auth = authenticator(settings, backend, m)
    for _ in range(2):
        with pytest.raises(TierNotConfigured, match="tier") as info:
            await auth.authenticate(KEY)
        assert (info.value.status, info.value.code) == (403, "tier_not_configured")
    assert backend.calls == 1 and m.results == ["miss", "negative_hit"]


async def test_revocation_selectors(settings: Settings) -> None:
    backend = FakeBackend(BackendVerdict(valid=True, user_id="u1", key_id="k1", tier="free"))
    auth = authenticator(settings, backend, Metrics())
    await auth.authenticate(KEY)
    local = LocalRevocations(auth.cache)
    assert (await local.revoke(Selector("key_id", "other"))).dropped_here == 0
    assert (await local.revoke(Selector("key_id", "k1"))).dropped_here == 1
    await auth.authenticate(KEY)
    assert (await local.revoke(Selector("key_hash", key_hash(KEY)))).dropped_here == 1
    await auth.authenticate(KEY)
    assert (await local.revoke(Selector("user_id", "u1"))).dropped_here == 1
    assert backend.calls == 3  # the first load and one after each of the first two revocations


def test_build_auth_exposes_what_the_gateway_mounts(settings: Settings) -> None:
    from fastapi import APIRouter

    auth = build_auth(settings, Metrics())
    assert isinstance(auth.router, APIRouter)
    assert [r.path for r in auth.router.routes] == ["/hc/keys/revoke", "/v1/models/{model}", "/models/{model}"]  # type: ignore[attr-defined]


async def test_stale_answers_are_counted_and_logged(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    m = CacheMetrics()
    backend = FakeBackend(BackendVerdict(valid=True, user_id="u", tier="free"))
    cache = new_cache(ttl=60, negative_ttl=10, grace=300, max_size=10, clock=lambda: now[0])
    auth = Authenticator(backend, cache, settings.tiers, m)
    await auth.authenticate(KEY)
    backend.verdict = AuthUnavailable("down")
    now[0] = 61
    with caplog.at_level("WARNING", logger="litellm_cloud.auth"):
        assert (await auth.authenticate(KEY)).user_id == "u"
    assert m.results == ["miss", "stale"]
    assert "served from cache within its grace period" in caplog.text and KEY not in caplog.text
    now[0] = 400
    with pytest.raises(AuthUnavailable):
        await auth.authenticate(KEY)
