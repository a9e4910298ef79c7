"""Auth through the real proxy, a real key backend process and the GPU simulator: every outcome."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.auth.conftest import (
    ADMIN_TIER,
    FREE,
    FREE_VERIFIED,
    GOLD,
    KEYS,
    PREMIUM,
    AuthClient,
    BackendProcess,
    chat_body,
    error_of,
)
from tests.support import REPO, SimFleet, render_test_config, start_proxy

TIMEOUT = 1.0  # HEARTCODE_BACKEND_TIMEOUT of this proxy
#: This proxy's master key passes the hc-sk- format check, so a near miss (another well-formed key, or
#: one with the master key as prefix) gets past the format check and only the constant-time comparison
#: tells it from the master key.
MASTER_KEY = "hc-sk-master-key-of-the-auth-tests-01"
#: A tier (added to a copy of tiers.yaml) whose only group is age-verified-only: its unverified keys may
#: use nothing at all, which LiteLLM must not read as "everything".
ADULT_TIER = "adult-only"
ADULT = "hc-sk-test-adult-only-unverified-6"
ADULT_VERIFIED = "hc-sk-test-adult-only-verified-007"

SFW_NAMES = ["heartcode-chat-sfw", "heartcode-sfw", "heartcode-default"]
NSFW_NAMES = ["heartcode-chat-nsfw", "heartcode-nsfw"]


@pytest.fixture(scope="module")
def backend(log_dir: Path) -> Iterator[BackendProcess]:
    b = BackendProcess(log_dir).start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def proxy(log_dir: Path, backend: BackendProcess) -> Iterator[tuple[AuthClient, object]]:
    tiers = yaml.safe_load((REPO / "tiers.yaml").read_text())
    tiers["tiers"][ADULT_TIER] = {**tiers["tiers"]["free"], "model_groups": ["heartcode-chat-nsfw"]}
    (log_dir / "tiers.yaml").write_text(yaml.safe_dump(tiers))
    backend.add_key(ADULT, user_id="u-adult", tier=ADULT_TIER, age_verified=False)
    backend.add_key(ADULT_VERIFIED, user_id="u-adult-v", tier=ADULT_TIER, age_verified=True)
    sim = SimFleet(log_dir).start()
    config = render_test_config(log_dir / "config.yaml", sim.endpoints)
    env = {
        "HEARTCODE_BACKEND_URL": backend.url,
        "HEARTCODE_BACKEND_TIMEOUT": str(TIMEOUT),
        "HEARTCODE_TIERS_FILE": str(log_dir / "tiers.yaml"),
        "LITELLM_MASTER_KEY": MASTER_KEY,
    }
    process, base = start_proxy("proxy", config, log_dir, env)
    gw = AuthClient(base)
    try:
        yield gw, process
    finally:
        gw.close()
        process.stop()
        sim.stop()


@pytest.fixture
def gw(proxy: tuple[AuthClient, object], backend: BackendProcess) -> Iterator[AuthClient]:
    backend.control(mode="ok", invalid_status=200)
    yield proxy[0]
    backend.control(mode="ok", invalid_status=200)


def test_liveliness_and_readiness_answer_without_a_key(gw: AuthClient) -> None:
    assert gw.request("GET", "/health/liveliness").status_code == 200
    assert gw.request("GET", "/health/readiness").status_code == 200


def test_valid_keys_reach_chat_and_embeddings(gw: AuthClient) -> None:
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
def test_malformed_keys_are_401_without_a_backend_call(gw: AuthClient, backend: BackendProcess, key: str | None, why: str) -> None:
    before = backend.calls()
    if key is not None and not key.isascii():
        r = gw.client.post("/v1/chat/completions", headers={"authorization": f"Bearer {key}".encode()},
                           json={"model": "heartcode-chat-sfw", "messages": []})
    else:
        r = gw.chat(key)
    assert error_of(r) == (401, "invalid_api_key"), why
    assert backend.calls() == before, why


@pytest.mark.parametrize("invalid_status", [200, 401, 404])
def test_keys_the_backend_refuses_are_401(gw: AuthClient, backend: BackendProcess, invalid_status: int) -> None:
    backend.control(invalid_status=invalid_status)
    key = f"hc-sk-unknown-key-for-status-{invalid_status}"
    r = gw.chat(key)
    assert error_of(r) == (401, "invalid_api_key")
    assert "key-" in r.json()["error"]["message"]  # the short hash, for support


def test_a_refused_key_is_cached_briefly(gw: AuthClient, backend: BackendProcess) -> None:
    key = "hc-sk-unknown-negative-cache-001"
    gw.chat(key)
    before = backend.calls()
    for _ in range(3):
        assert error_of(gw.chat(key)) == (401, "invalid_api_key")
    assert backend.calls() == before


def test_backend_errors_are_503_auth_unavailable(gw: AuthClient, backend: BackendProcess) -> None:
    backend.control(mode="error", error_status=500)
    assert error_of(gw.chat("hc-sk-never-seen-before-500-000")) == (503, "auth_unavailable")
    backend.control(mode="error", error_status=502)
    assert error_of(gw.chat("hc-sk-never-seen-before-502-000")) == (503, "auth_unavailable")


def test_a_backend_slower_than_the_timeout_is_504_within_the_timeout(gw: AuthClient, backend: BackendProcess) -> None:
    backend.control(mode="slow", delay_s=TIMEOUT + 3)
    start = time.monotonic()
    r = gw.chat("hc-sk-never-seen-before-slow-00")
    elapsed = time.monotonic() - start
    assert error_of(r) == (504, "auth_timeout")
    assert elapsed < TIMEOUT + 0.5, elapsed


def test_unknown_tier_is_refused_not_guessed(gw: AuthClient) -> None:
    r = gw.chat(GOLD)
    # Not 503 auth_unavailable: the backend answered and retrying will not help until tiers.yaml has it.
    assert error_of(r) == (403, "tier_not_configured")
    assert "tier" in r.json()["error"]["message"]


def test_100_concurrent_first_requests_make_one_backend_call(gw: AuthClient, backend: BackendProcess) -> None:
    key = "hc-sk-concurrent-first-requests-01"
    backend.add_key(key, user_id="u-concurrent", tier="premium")
    # A small delay keeps the first validation in flight while the others arrive.
    backend.control(mode="slow", delay_s=0.5)
    before = backend.calls()
    cache_before = auth_cache_results(gw)
    with concurrent.futures.ThreadPoolExecutor(100) as pool:
        statuses = list(pool.map(lambda _: gw.models(key).status_code, range(100)))
    assert statuses == [200] * 100
    assert backend.calls() - before == 1
    cache = {r: n - cache_before.get(r, 0) for r, n in auth_cache_results(gw).items()}
    # The requests overlapped: the ones that arrived while the one load was in flight waited for it.
    assert cache.get("miss") == 1 and cache.get("coalesced", 0) >= 10, cache
    assert sum(cache.values()) == 100, cache


def auth_cache_results(gw: AuthClient) -> dict[str, float]:
    """``litellm_cloud_auth_cache_total`` by result, scraped from /metrics with the master key."""
    r = gw.request("GET", "/metrics", MASTER_KEY)
    assert r.status_code == 200, r.text
    return {
        s.labels["result"]: s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
        if s.name == "litellm_cloud_auth_cache_total"
    }


def test_models_lists_only_what_the_key_may_use(gw: AuthClient) -> None:
    def ids(key: str) -> set[str]:
        r = gw.models(key)
        assert r.status_code == 200, r.text
        return {m["id"] for m in r.json()["data"]}

    everything = set(SFW_NAMES) | set(NSFW_NAMES) | {"heartcode-embed"}
    assert ids(FREE) == set(SFW_NAMES) | {"heartcode-embed"}
    assert ids(PREMIUM) == set(SFW_NAMES) | {"heartcode-embed"}  # premium, not age-verified
    assert ids(FREE_VERIFIED) == everything
    assert ids(MASTER_KEY) == everything


def test_a_tier_with_only_age_verified_groups_gives_an_unverified_key_nothing(gw: AuthClient) -> None:
    # An empty allow-list reads as "every model" to LiteLLM: the key must see and reach nothing.
    r = gw.models(ADULT)
    assert r.status_code == 200, r.text
    assert r.json()["data"] == []
    assert gw.request("GET", "/models", ADULT).json()["data"] == []
    for name in [*NSFW_NAMES, *SFW_NAMES]:
        assert error_of(gw.chat(ADULT, name)) == (403, "model_not_allowed"), name
    e = gw.request("POST", "/v1/embeddings", ADULT, json={"model": "heartcode-embed", "input": "x"})
    assert error_of(e) == (403, "model_not_allowed")
    # The same tier with age verification sees exactly its one group.
    assert {m["id"] for m in gw.models(ADULT_VERIFIED).json()["data"]} == set(NSFW_NAMES)
    assert gw.chat(ADULT_VERIFIED, "heartcode-nsfw").status_code == 200


@pytest.mark.parametrize("name", NSFW_NAMES)
@pytest.mark.parametrize("key", [FREE, PREMIUM])
def test_nsfw_is_refused_under_every_name_without_age_verification(gw: AuthClient, key: str, name: str) -> None:
    assert error_of(gw.chat(key, name)) == (403, "model_not_allowed")


@pytest.mark.parametrize("name", NSFW_NAMES)
def test_nsfw_is_served_to_age_verified_keys(gw: AuthClient, name: str) -> None:
    r = gw.chat(FREE_VERIFIED, name)
    assert r.status_code == 200, r.text


REFUSED = {(403, "model_not_allowed"), (404, "model_not_found"), (403, "route_not_allowed")}


def served_nsfw(r: httpx.Response) -> bool:
    """Whether an answer came from a model at all (any 2xx, or a body with choices / data)."""
    return r.is_success or '"choices"' in r.text


@pytest.mark.parametrize(
    ("path", "model"),
    [
        # LiteLLM takes the query parameter ahead of the body's model.
        ("/v1/chat/completions?model=heartcode-chat-nsfw", "heartcode-chat-sfw"),
        ("/v1/chat/completions?model=heartcode-nsfw", "heartcode-chat-sfw"),
        ("/chat/completions?model=heartcode-chat-nsfw", "heartcode-default"),
        ("/chat/completions", "heartcode-chat-nsfw"),
        ("/chat/completions", "heartcode-nsfw"),
        # Deployment-level names from the rendered config: litellm model, deployment id, served model.
        ("/v1/chat/completions", "openai/heartcode-chat-nsfw"),
        ("/v1/chat/completions", "gpu-5"),
        ("/v1/chat/completions", "gpu-8"),
        ("/v1/chat/completions", "HEARTCODE-CHAT-NSFW"),
        ("/v1/chat/completions", " heartcode-chat-nsfw"),
        ("/v1/chat/completions", "heartcode-chat-nsfw,heartcode-chat-sfw"),
        ("/v1/chat/completions", "heartcode-chat-sfw,heartcode-chat-nsfw"),
        # Routes that carry the model in the path.
        ("/openai/deployments/heartcode-chat-nsfw/chat/completions", "heartcode-chat-sfw"),
        ("/engines/heartcode-chat-nsfw/chat/completions", "heartcode-chat-sfw"),
        ("/openai/deployments/gpu-5/chat/completions", "heartcode-chat-sfw"),
        ("/v1/embeddings?model=heartcode-chat-nsfw", "heartcode-embed"),
    ],
)
@pytest.mark.parametrize("key", [FREE, PREMIUM])
def test_no_other_name_reaches_nsfw_without_age_verification(gw: AuthClient, key: str, path: str, model: str) -> None:
    body = chat_body(model) if "embeddings" not in path else {"model": model, "input": "x"}
    r = gw.request("POST", path, key, json=body)
    assert not served_nsfw(r), r.text
    assert error_of(r) in REFUSED, r.text


def test_those_other_names_are_real_routes_to_nsfw(gw: AuthClient) -> None:
    # What makes the cases above real attacks: with an age-verified key the query parameter wins over
    # the body, and LiteLLM's router serves deployment-level names (seen with the master key).
    r = gw.request("POST", "/v1/chat/completions?model=heartcode-chat-nsfw", FREE_VERIFIED,
                   json=chat_body("heartcode-chat-sfw"))
    assert r.status_code == 200, r.text
    nsfw_servers = {f"gpu-{n}" for n in (5, 6, 7, 8)}  # fleet.yaml's heartcode-chat-nsfw group
    assert server_of(r) in nsfw_servers, r.text
    for name in ("gpu-5", "openai/heartcode-chat-nsfw"):
        r = gw.chat(MASTER_KEY, name)
        assert r.status_code == 200 and server_of(r) in nsfw_servers, r.text
    # A deployment name is no customer's model name, even for an age-verified key.
    assert error_of(gw.request("POST", "/v1/chat/completions?model=gpu-5", FREE_VERIFIED,
                               json=chat_body("heartcode-chat-sfw"))) == (404, "model_not_found")  # fmt: skip


def server_of(r: httpx.Response) -> str:
    """The server that answered (each deployment's id is its server name)."""
    return r.headers["x-litellm-model-id"]


@pytest.mark.parametrize("path", ["/v1/models/heartcode-chat-nsfw", "/models/heartcode-nsfw", "/v1/models/gpu-5"])
def test_model_retrieval_by_path_is_refused(gw: AuthClient, path: str) -> None:
    r = gw.request("GET", path, FREE)
    assert error_of(r) in REFUSED and "heartcode-chat-nsfw\"" not in r.text, r.text


def raw_request(base: str, method: str, path: str, key: str, body: bytes = b"{}") -> tuple[int, bytes]:
    """Send ``path`` byte for byte (httpx would normalise it); (status, body)."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("authorization", f"Bearer {key}")
        conn.putheader("content-type", "application/json")
        conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "path",
    [
        "/router/settings/",
        "/ROUTER/SETTINGS",
        "/Router/Settings",
        "/router%2Fsettings",
        "/router%2fsettings",
        "/%72outer/settings",
        "/router/%73ettings",
        "//router/settings",
        "/./router/settings",
        "/v1/../router/settings",
        "/v1/%2e%2e/router/settings",
        "/router/settings?x=1",
        "/router/settings;x=1",
        "/get/config/callbacks/",
        "/GET/CONFIG/CALLBACKS",
        "/get%2Fconfig%2Fcallbacks",
        "/key%2Fgenerate",
        "/hc%2Fkeys%2Frevoke",
        "/v1/chat/completions/../../router/settings",
        "/v1/chat/completions%2F..%2F..%2Frouter%2Fsettings",
    ],
)
def test_route_spellings_do_not_reach_admin_routes(gw: AuthClient, backend: BackendProcess, path: str) -> None:
    for method in ("GET", "POST"):
        status, body = raw_request(gw.base, method, path, ADMIN_TIER)
        # 403 from our route gate, or LiteLLM has no such route (404/405), or a redirect to the canonical
        # path (which the gate then refuses): never an admin answer.
        assert status in (403, 404, 405, 307, 308), (method, path, status, body[:300])
        if status == 403:
            assert json.loads(body)["error"]["code"] == "route_not_allowed", body[:300]
        if status in (307, 308):
            follow = gw.request(method, path.replace("//", "/").rstrip("/") or "/", ADMIN_TIER, json={})
            assert follow.status_code in (403, 404, 405), follow.text


@pytest.mark.parametrize(
    "path",
    ["/v1/chat/completions/", "/V1/CHAT/COMPLETIONS", "/v1/Chat/Completions", "//v1/chat/completions",
     "/v1/chat%2Fcompletions", "/v1/chat/completions%2F"],
)
def test_inference_route_spellings_do_not_bypass_the_model_gate(gw: AuthClient, path: str) -> None:
    status, body = raw_request(gw.base, "POST", path, FREE, json.dumps(chat_body("heartcode-chat-nsfw")).encode())
    assert not (200 <= status < 300) and b'"choices"' not in body, (path, status, body[:300])


def test_unknown_missing_and_odd_models(gw: AuthClient) -> None:
    assert error_of(gw.chat(FREE, "gpt-4")) == (404, "model_not_found")
    # A comma list would make LiteLLM call several groups at once: it is no model of ours.
    assert error_of(gw.chat(FREE, "heartcode-chat-sfw,heartcode-chat-nsfw")) == (404, "model_not_found")
    assert error_of(gw.chat(FREE, None)) == (400, "invalid_request")
    assert error_of(gw.chat(FREE, 42))[0] == 400  # type: ignore[arg-type]  # LiteLLM refuses it first
    e = gw.request("POST", "/v1/embeddings", FREE, json={"model": "heartcode-nsfw", "input": "x"})
    assert error_of(e) == (403, "model_not_allowed")


def test_malformed_json_is_a_json_400(gw: AuthClient) -> None:
    r = gw.request("POST", "/v1/chat/completions", FREE, content=b"{not json",
                   headers={"content-type": "application/json"})
    status, _code = error_of(r)
    assert status == 400


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("fallbacks", ["heartcode-chat-nsfw"]),
        ("context_window_fallbacks", ["heartcode-chat-nsfw"]),
        ("content_policy_fallbacks", ["heartcode-chat-nsfw"]),
        ("fallbacks", ["http://127.0.0.1:1/v1"]),
        ("api_base", "http://127.0.0.1:1/v1"),
        ("base_url", "http://127.0.0.1:1/v1"),
        ("user_config", {"model_list": []}),
        ("model_list", []),
        ("api_key", "sk-upstream"),
        ("metadata", {"api_base": "http://127.0.0.1:1/v1"}),
        ("model", "http://127.0.0.1:1/v1"),
    ],
)
@pytest.mark.parametrize("key", [FREE, MASTER_KEY])
def test_routing_overrides_in_the_body_are_refused(gw: AuthClient, key: str, field: str, value: object) -> None:
    # LiteLLM refuses some of these before our auth runs, others reach our access hook (customer keys
    # only): either way the answer is our 400 invalid_request.
    r = gw.chat(key, **{field: value})
    if key == MASTER_KEY and r.status_code == 200:
        assert field in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks", "api_key"), field
        return  # the master key may steer routing; LiteLLM drops the upstream key
    assert error_of(r) == (400, "invalid_request"), r.text
    assert "127.0.0.1:1" not in r.text


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
        ("GET", "/v1/files"),
        ("POST", "/v1/images/generations"),
        ("GET", "/v1/responses/resp_123"),
        ("POST", "/hc/keys/revoke"),
    ],
)
def test_customer_keys_cannot_reach_other_routes(gw: AuthClient, backend: BackendProcess, method: str, path: str) -> None:
    before = backend.calls()
    r = gw.request(method, path, ADMIN_TIER, json={})
    assert error_of(r) == (403, "route_not_allowed"), r.text
    assert backend.calls() == before  # refused before any backend call


def test_the_master_key_keeps_admin_access(gw: AuthClient) -> None:
    assert gw.request("GET", "/router/settings", MASTER_KEY).status_code == 200
    assert gw.request("GET", "/get/config/callbacks", MASTER_KEY).status_code == 200
    assert gw.chat(MASTER_KEY, "heartcode-nsfw").status_code == 200


@pytest.mark.parametrize(
    "key",
    [
        MASTER_KEY + "x",  # the master key as prefix
        MASTER_KEY[:-1],  # a prefix of the master key
        MASTER_KEY[:-1] + "2",  # one character off
        "hc-sk-" + "m" * (len(MASTER_KEY) - 6),  # same length
    ],
)
def test_a_wrong_master_key_is_refused(gw: AuthClient, backend: BackendProcess, key: str) -> None:
    before = backend.calls()
    # Well-formed, so only the master-key comparison stops it short of admin: then it is a customer key.
    assert error_of(gw.request("GET", "/router/settings", key)) == (403, "route_not_allowed")
    assert error_of(gw.models(key)) == (401, "invalid_api_key")
    assert backend.calls() == before + 1  # went on to the backend as an ordinary key
    assert gw.request("GET", "/router/settings", MASTER_KEY).status_code == 200


def test_revocation_is_admin_only_and_drops_the_key(gw: AuthClient, backend: BackendProcess) -> None:
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


def test_revocation_by_user_id_and_key_hash(gw: AuthClient, backend: BackendProcess) -> None:
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


def test_no_raw_key_in_the_proxy_log(proxy: tuple[AuthClient, object], backend: BackendProcess) -> None:
    process = proxy[1]
    text = process.log_text()  # type: ignore[attr-defined]
    assert "invalid_api_key" in text or "Invalid API key" in text  # the log did record refusals
    for record in KEYS:
        assert record["key"] not in text
    assert "hc-sk-unknown" not in text and "hc-sk-never-seen" not in text and "hc-sk-to-be-revoked" not in text
    assert MASTER_KEY not in text
    assert "hc-sk-" not in backend.process.log_text()
