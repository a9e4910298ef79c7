"""Auth through the real proxy, a real key backend process and the GPU simulator: every outcome."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.auth.conftest import (
    ADMIN_TIER,
    FREE,
    FREE_VERIFIED,
    GOLD,
    KEYS,
    PREMIUM,
    Gateway,
    KeyBackend,
    error_of,
)
from tests.support import MASTER_KEY, SimFleet, render_test_config, start_proxy

TIMEOUT = 1.0  # HEARTCODE_BACKEND_TIMEOUT of this proxy

SFW_NAMES = ["heartcode-chat-sfw", "heartcode-sfw", "heartcode-default"]
NSFW_NAMES = ["heartcode-chat-nsfw", "heartcode-nsfw"]


@pytest.fixture(scope="module")
def backend(log_dir: Path) -> Iterator[KeyBackend]:
    b = KeyBackend(log_dir).start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def proxy(log_dir: Path, backend: KeyBackend) -> Iterator[tuple[Gateway, object]]:
    sim = SimFleet(log_dir).start()
    config = render_test_config(log_dir / "config.yaml", sim.endpoints)
    env = {"HEARTCODE_BACKEND_URL": backend.url, "HEARTCODE_BACKEND_TIMEOUT": str(TIMEOUT)}
    process, base = start_proxy("proxy", config, log_dir, env)
    gw = Gateway(base)
    try:
        yield gw, process
    finally:
        gw.close()
        process.stop()
        sim.stop()


@pytest.fixture
def gw(proxy: tuple[Gateway, object], backend: KeyBackend) -> Iterator[Gateway]:
    backend.control(mode="ok", invalid_status=200)
    yield proxy[0]
    backend.control(mode="ok", invalid_status=200)


def test_liveliness_and_readiness_answer_without_a_key(gw: Gateway) -> None:
    assert gw.request("GET", "/health/liveliness").status_code == 200
    assert gw.request("GET", "/health/readiness").status_code == 200


def test_valid_keys_reach_chat_and_embeddings(gw: Gateway) -> None:
    r = gw.chat(FREE)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]
    e = gw.request("POST", "/v1/embeddings", PREMIUM, json={"model": "heartcode-embed", "input": "hi"})
    assert e.status_code == 200, e.text
    # Both spellings of each inference route.
    assert gw.request("POST", "/chat/completions", FREE, json={"model": "heartcode-sfw", "messages": [
        {"role": "user", "content": "x"}], "max_tokens": 2}).status_code == 200
    assert gw.request("GET", "/models", FREE).status_code == 200


@pytest.mark.parametrize(
    ("key", "why"),
    [
        (None, "missing"),
        ("sk-1234567890abcdef1234", "another provider's key"),
        ("hc-sk-short", "too short"),
        ("hc-sk-" + "a" * 200, "too long"),
        ("hc-sk-has spaces-and-more-chars", "bad characters"),
        ("hc-sk-ünïcödé-0000000000000000", "non-ascii"),
    ],
)
def test_malformed_keys_are_401_without_a_backend_call(gw: Gateway, backend: KeyBackend, key: str | None, why: str) -> None:
    before = backend.calls()
    if key is not None and not key.isascii():
        r = gw.client.post("/v1/chat/completions", headers={"authorization": f"Bearer {key}".encode()},
                           json={"model": "heartcode-chat-sfw", "messages": []})
    else:
        r = gw.chat(key)
    assert error_of(r) == (401, "invalid_api_key"), why
    assert backend.calls() == before, why


@pytest.mark.parametrize("invalid_status", [200, 401, 404])
def test_keys_the_backend_refuses_are_401(gw: Gateway, backend: KeyBackend, invalid_status: int) -> None:
    backend.control(invalid_status=invalid_status)
    key = f"hc-sk-unknown-key-for-status-{invalid_status}"
    r = gw.chat(key)
    assert error_of(r) == (401, "invalid_api_key")
    assert "key-" in r.json()["error"]["message"]  # the short hash, for support


def test_a_refused_key_is_cached_briefly(gw: Gateway, backend: KeyBackend) -> None:
    key = "hc-sk-unknown-negative-cache-001"
    gw.chat(key)
    before = backend.calls()
    for _ in range(3):
        assert error_of(gw.chat(key)) == (401, "invalid_api_key")
    assert backend.calls() == before


def test_backend_errors_are_503_auth_unavailable(gw: Gateway, backend: KeyBackend) -> None:
    backend.control(mode="error", error_status=500)
    assert error_of(gw.chat("hc-sk-never-seen-before-500-000")) == (503, "auth_unavailable")
    backend.control(mode="error", error_status=502)
    assert error_of(gw.chat("hc-sk-never-seen-before-502-000")) == (503, "auth_unavailable")


def test_a_backend_slower_than_the_timeout_is_504_within_the_timeout(gw: Gateway, backend: KeyBackend) -> None:
    backend.control(mode="slow", delay_s=TIMEOUT + 3)
    start = time.monotonic()
    r = gw.chat("hc-sk-never-seen-before-slow-00")
    elapsed = time.monotonic() - start
    assert error_of(r) == (504, "auth_timeout")
    assert elapsed < TIMEOUT + 0.5, elapsed


def test_unknown_tier_is_refused_not_guessed(gw: Gateway) -> None:
    r = gw.chat(GOLD)
    status, code = error_of(r)
    assert (status, code) == (503, "auth_unavailable")
    assert "tier" in r.json()["error"]["message"]


def test_100_concurrent_first_requests_make_one_backend_call(gw: Gateway, backend: KeyBackend) -> None:
    key = "hc-sk-concurrent-first-requests-01"
    backend.add_key(key, user_id="u-concurrent", tier="premium")
    # A small delay keeps the first validation in flight while the others arrive.
    backend.control(mode="slow", delay_s=0.5)
    before = backend.calls()
    with concurrent.futures.ThreadPoolExecutor(100) as pool:
        statuses = list(pool.map(lambda _: gw.models(key).status_code, range(100)))
    assert statuses == [200] * 100
    assert backend.calls() - before == 1


def test_models_lists_only_what_the_key_may_use(gw: Gateway) -> None:
    def ids(key: str) -> set[str]:
        r = gw.models(key)
        assert r.status_code == 200, r.text
        return {m["id"] for m in r.json()["data"]}

    everything = set(SFW_NAMES) | set(NSFW_NAMES) | {"heartcode-embed"}
    assert ids(FREE) == set(SFW_NAMES) | {"heartcode-embed"}
    assert ids(PREMIUM) == set(SFW_NAMES) | {"heartcode-embed"}  # premium, not age-verified
    assert ids(FREE_VERIFIED) == everything
    assert ids(MASTER_KEY) == everything


@pytest.mark.parametrize("name", NSFW_NAMES)
@pytest.mark.parametrize("key", [FREE, PREMIUM])
def test_nsfw_is_refused_under_every_name_without_age_verification(gw: Gateway, key: str, name: str) -> None:
    assert error_of(gw.chat(key, name)) == (403, "model_not_allowed")


@pytest.mark.parametrize("name", NSFW_NAMES)
def test_nsfw_is_served_to_age_verified_keys(gw: Gateway, name: str) -> None:
    r = gw.chat(FREE_VERIFIED, name)
    assert r.status_code == 200, r.text


def test_unknown_missing_and_odd_models(gw: Gateway) -> None:
    assert error_of(gw.chat(FREE, "gpt-4")) == (404, "model_not_found")
    # A comma list would make LiteLLM call several groups at once: it is no model of ours.
    assert error_of(gw.chat(FREE, "heartcode-chat-sfw,heartcode-chat-nsfw")) == (404, "model_not_found")
    assert error_of(gw.chat(FREE, None)) == (400, "invalid_request")
    assert error_of(gw.chat(FREE, 42))[0] == 400  # type: ignore[arg-type]  # LiteLLM refuses it first
    e = gw.request("POST", "/v1/embeddings", FREE, json={"model": "heartcode-nsfw", "input": "x"})
    assert error_of(e) == (403, "model_not_allowed")


def test_malformed_json_is_a_json_400(gw: Gateway) -> None:
    r = gw.request("POST", "/v1/chat/completions", FREE, content=b"{not json",
                   headers={"content-type": "application/json"})
    status, _code = error_of(r)
    assert status == 400


@pytest.mark.parametrize("field", ["fallbacks", "context_window_fallbacks", "content_policy_fallbacks", "api_base", "user_config"])
def test_routing_overrides_in_the_body_are_refused(gw: Gateway, field: str) -> None:
    value = ["heartcode-chat-nsfw"] if "fallbacks" in field else "http://127.0.0.1:1/v1"
    if field == "user_config":
        value = {"model_list": []}  # type: ignore[assignment]
    status, code = error_of(gw.chat(FREE, **{field: value}))
    # LiteLLM refuses api_base and user_config before our auth runs (a 500 we turn into a 400); its auth
    # wrapper keeps our status there, not our code.
    assert (status, code) == (400, "400" if field in ("api_base", "user_config") else "invalid_request")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/get/config/callbacks"),
        ("GET", "/router/settings"),
        ("POST", "/key/generate"),
        ("GET", "/debug/asyncio-tasks"),
        ("GET", "/model/info"),
        ("GET", "/v1/model/info"),
        ("POST", "/model/new"),
        ("GET", "/user/info"),
        ("GET", "/health"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/responses"),
        ("POST", "/hc/keys/revoke"),
    ],
)
def test_customer_keys_cannot_reach_other_routes(gw: Gateway, backend: KeyBackend, method: str, path: str) -> None:
    before = backend.calls()
    r = gw.request(method, path, ADMIN_TIER, json={})
    assert error_of(r) == (403, "route_not_allowed"), r.text
    assert backend.calls() == before  # refused before any backend call


def test_the_master_key_keeps_admin_access(gw: Gateway) -> None:
    assert gw.request("GET", "/router/settings", MASTER_KEY).status_code == 200
    assert gw.request("GET", "/get/config/callbacks", MASTER_KEY).status_code == 200
    assert gw.chat(MASTER_KEY, "heartcode-nsfw").status_code == 200


def test_a_wrong_master_key_is_refused(gw: Gateway) -> None:
    assert error_of(gw.request("GET", "/router/settings", MASTER_KEY + "x")) == (401, "invalid_api_key")


def test_revocation_is_admin_only_and_drops_the_key(gw: Gateway, backend: KeyBackend) -> None:
    key = "hc-sk-to-be-revoked-locally-0001"
    backend.add_key(key, user_id="u-revoked")
    assert gw.models(key).status_code == 200
    backend.remove_key(key)
    assert gw.models(key).status_code == 200  # still cached
    assert error_of(gw.request("POST", "/hc/keys/revoke", None, json={"api_key": key})) == (401, "invalid_api_key")
    assert error_of(gw.request("POST", "/hc/keys/revoke", FREE, json={"api_key": key})) == (403, "route_not_allowed")
    assert error_of(gw.request("POST", "/hc/keys/revoke", MASTER_KEY, json={"nothing": 1})) == (400, "invalid_request")
    r = gw.request("POST", "/hc/keys/revoke", MASTER_KEY, json={"api_key": key})
    assert r.status_code == 200 and r.json()["dropped_here"] == 1 and r.json()["scope"] == "local"
    assert error_of(gw.models(key)) == (401, "invalid_api_key")


def test_revocation_by_user_id_and_key_hash(gw: Gateway, backend: KeyBackend) -> None:
    from litellm_cloud.identity import key_hash

    a, b = "hc-sk-revoke-by-user-000000001", "hc-sk-revoke-by-user-000000002"
    for key in (a, b):
        backend.add_key(key, user_id="u-many-keys")
        assert gw.models(key).status_code == 200
    before = backend.calls()
    r = gw.request("POST", "/hc/keys/revoke", MASTER_KEY, json={"user_id": "u-many-keys"})
    assert r.json()["dropped_here"] == 2
    assert gw.models(a).status_code == 200 and backend.calls() == before + 1  # validated again
    r = gw.request("POST", "/hc/keys/revoke", MASTER_KEY, json={"key_hash": key_hash(a)})
    assert r.json()["dropped_here"] == 1


def test_no_raw_key_in_the_proxy_log(proxy: tuple[Gateway, object], backend: KeyBackend) -> None:
    process = proxy[1]
    text = process.log_text()  # type: ignore[attr-defined]
    assert "invalid_api_key" in text or "Invalid API key" in text  # the log did record refusals
    for record in KEYS:
        assert record["key"] not in text
    assert "hc-sk-unknown" not in text and "hc-sk-never-seen" not in text and "hc-sk-to-be-revoked" not in text
    assert MASTER_KEY not in text
    assert "hc-sk-" not in backend.process.log_text()
