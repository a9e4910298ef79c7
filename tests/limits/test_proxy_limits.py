"""Tier limits through the real gateway: two proxy processes sharing one real redis-server.

Started once for the module: redis-server, the GPU simulator, the development key backend, and two
proxies (``a`` fails closed when Redis dies, ``b`` fails open). Each test uses its own account, from a
test tiers file with small limits, so tests do not share counters. The Redis-kill test runs last.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import yaml

from tests.support import (
    MASTER_KEY,
    GatewayClient,
    SimFleet,
    render_test_config,
    start_backend,
    start_proxy,
    wait_until,
)
from tests.support import chat as support_chat

from .conftest import RedisServer

GROUPS = ["heartcode-chat-sfw", "heartcode-chat-nsfw", "heartcode-embed"]
TIERS = {
    "free": (10, 1000, 10_000, 2),  # the production Free tier
    "burst": (10, 100_000, 1_000_000, 100),  # RPM is the only limit that bites
    "tokens": (1000, 400, 1_000_000, 100),  # TPM is
    "daily": (1000, 100_000, 300, 100),  # the day is
    "stream": (1000, 100_000, 1_000_000, 4),
    "pair": (3, 100_000, 1_000_000, 100),
}
ACCOUNTS = {  # key -> (user_id, tier)
    "hc-sk-lim-free-0000000000000001": ("u-free", "free"),
    "hc-sk-lim-free-par-000000000002": ("u-free-par", "free"),
    "hc-sk-lim-burst-000000000000003": ("u-burst", "burst"),
    "hc-sk-lim-tokens-00000000000004": ("u-tokens", "tokens"),
    "hc-sk-lim-daily-000000000000005": ("u-daily", "daily"),
    "hc-sk-lim-stream-00000000000006": ("u-stream", "stream"),
    "hc-sk-lim-pair-one-000000000007": ("u-pair", "pair"),
    "hc-sk-lim-pair-two-000000000008": ("u-pair", "pair"),
    "hc-sk-lim-redis-000000000000009": ("u-redis", "pair"),
}
KEY = {f"{user}/{k[-1]}" if user == "u-pair" else user: k for k, (user, _) in ACCOUNTS.items()}
MODEL = "heartcode-chat-sfw"


@dataclass
class LimitsStack:
    """Two proxies behind one Redis, and what started them."""

    a: str
    b: str
    redis: RedisServer
    procs: dict[str, Any]
    restart_a: Any
    clients: dict[str, GatewayClient] = field(default_factory=dict)

    def client(self, base: str) -> GatewayClient:
        """The shared test client (raw-key echo guard) for one of the proxies."""
        return self.clients.setdefault(base, GatewayClient(base))

    def post(self, base: str, key: str, body: dict[str, Any], path: str = "/v1/chat/completions") -> httpx.Response:
        return self.client(base).post(path, key, body)

    def usage(self, base: str, key: str) -> dict[str, Any]:
        r = self.client(base).request("GET", "/v1/usage", key, timeout=10)
        assert r.status_code == 200, r.text
        return dict(r.json())


def chat(content: str = "hello there", **extra: Any) -> dict[str, Any]:
    return support_chat(MODEL, content, **extra)


def code_of(r: httpx.Response) -> str:
    return "ok" if r.status_code == 200 else str(r.json()["error"]["code"])


def day_headers(r: httpx.Response, limit: int) -> int:
    """Check the daily quota's three headers; the remaining tokens of the day."""
    assert r.headers["x-ratelimit-limit-tokens-day"] == str(limit)
    reset = r.headers["x-ratelimit-reset-tokens-day"]
    assert reset.endswith("s") and ("h" in reset or "m" in reset or reset[:-1].isdigit()), reset
    return int(r.headers["x-ratelimit-remaining-tokens-day"])


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LimitsStack]:
    log_dir = tmp_path_factory.mktemp("limits-proxy")
    tiers_file = log_dir / "tiers.yaml"
    tiers_file.write_text(yaml.safe_dump({"tiers": {
        name: {"rpm": r, "tpm": t, "daily_tokens": d, "max_parallel": p, "model_groups": GROUPS}
        for name, (r, t, d, p) in TIERS.items()}}))  # fmt: skip
    redis = RedisServer(log_dir).start()
    sim = SimFleet(log_dir).start()
    keys = [
        {"key": k, "user_id": u, "key_id": k[-4:], "tier": t, "age_verified": True} for k, (u, t) in ACCOUNTS.items()
    ]
    backend, backend_url = start_backend(log_dir, keys)
    config = render_test_config(log_dir / "config.yaml", sim.endpoints)
    env = {"HEARTCODE_BACKEND_URL": backend_url, "HEARTCODE_TIERS_FILE": str(tiers_file),
           "HEARTCODE_LIMITS_STORAGE": redis.url}  # fmt: skip
    modes = {"a": "closed", "b": "open"}
    procs: dict[str, Any] = {"redis": redis, "sim": sim, "backend": backend}
    clients: dict[str, GatewayClient] = {}

    def start(name: str, port: int | None = None) -> tuple[Any, str]:
        return start_proxy(name, config, log_dir, {**env, "HEARTCODE_LIMITS_ON_STORAGE_ERROR": modes[name]}, port=port)

    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            (pa, a), (pb, b) = pool.map(start, ["a", "b"])
        procs.update(a=pa, b=pb)

        def restart_a() -> None:
            procs["a"].stop()
            procs["a"], _ = start("a", int(a.rsplit(":", 1)[1]))

        yield LimitsStack(a, b, redis, procs, restart_a, clients)
    finally:
        for client in clients.values():
            client.close()
        for name in ("a", "b", "backend", "sim", "redis"):
            if name in procs:
                procs[name].stop()


def _burst(gw: LimitsStack, key: str, n: int, body: dict[str, Any]) -> list[httpx.Response]:
    """``n`` requests at once, alternating between the two proxies."""

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=n)) as client:
            headers = {"Authorization": f"Bearer {key}"}
            return list(await asyncio.gather(*(
                client.post((gw.a if i % 2 else gw.b) + "/v1/chat/completions", json=body, headers=headers)
                for i in range(n))))  # fmt: skip

    return asyncio.run(run())


def test_fifty_concurrent_requests_across_two_proxies_admit_exactly_the_rpm(gateway: LimitsStack) -> None:
    responses = _burst(gateway, KEY["u-burst"], 50, chat(max_tokens=2))
    codes = [code_of(r) for r in responses]
    assert codes.count("ok") == 10 and codes.count("rate_limited") == 40, codes
    refused = next(r for r in responses if r.status_code == 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    for base in (gateway.a, gateway.b):
        assert gateway.usage(base, KEY["u-burst"])["minute"]["requests"]["used"] == 10


def test_a_second_key_of_the_account_does_not_double_the_limit(gateway: LimitsStack) -> None:
    one, two = KEY["u-pair/7"], KEY["u-pair/8"]
    codes = [code_of(gateway.post(base, key, chat(max_tokens=2)))
             for base, key in ((gateway.a, one), (gateway.b, two), (gateway.a, two), (gateway.b, one))]  # fmt: skip
    assert codes == ["ok", "ok", "ok", "rate_limited"]


def test_free_user_with_ten_ordinary_requests_is_never_refused(gateway: LimitsStack) -> None:
    # ~95 tokens each (a ~80-token prompt, the upstream's default 16-token answer), no max_tokens, two
    # at a time (the Free tier's parallel limit) across both proxies: 10 of them fit the 1,000 a minute.
    prompt = "Tell me a short and kind story about a cat who learns to paint with her tail. " * 3
    prompt += "Make it warm, gentle and funny, please."
    ok = []
    for pair in range(5):
        responses = _burst(gateway, KEY["u-free"], 2, chat(prompt))
        assert [code_of(r) for r in responses] == ["ok", "ok"], [r.text for r in responses]
        ok += [r.json()["usage"]["total_tokens"] for r in responses]
    assert 85 <= sum(ok) / len(ok) <= 100
    used = gateway.usage(gateway.b, KEY["u-free"])
    assert used["minute"]["tokens"]["used"] == sum(ok) and used["day"]["tokens"]["used"] == sum(ok)
    assert used["minute"]["requests"]["remaining"] == 0


def test_tpm_and_daily_quota_hold_across_both_proxies_and_survive_a_restart(gateway: LimitsStack) -> None:
    started = time.monotonic()
    # Tokens: 400 a minute; each request uses prompt (2) + 50 tokens, settled from the upstream's usage.
    charged, codes = [], []
    for i in range(12):
        r = gateway.post(gateway.a if i % 2 else gateway.b, KEY["u-tokens"], chat("hello", max_tokens=50))
        codes.append(code_of(r))
        if r.status_code == 200:
            charged.append(r.json()["usage"]["total_tokens"])
            # A non-streaming 200 reports the day after its settlement: exact, as requests are sequential.
            assert day_headers(r, 1_000_000) == 1_000_000 - sum(charged)
        else:
            assert "tokens per minute" in r.json()["error"]["message"]
    admitted = codes.count("ok")
    assert codes == ["ok"] * admitted + ["rate_limited"] * (12 - admitted)
    # Admitted while what was already charged left room: the last one may overrun, no other.
    assert sum(charged[:-1]) <= 400 < sum(charged) + 10
    # The day: 300 tokens; ask for 100-token answers.
    day_codes = [code_of(gateway.post(gateway.b if i % 2 else gateway.a, KEY["u-daily"], chat("hello", max_tokens=100)))
                 for i in range(5)]  # fmt: skip
    assert day_codes[:2] == ["ok", "ok"] and day_codes[-1] == "daily_quota_exceeded"
    before = (gateway.usage(gateway.b, KEY["u-tokens"]), gateway.usage(gateway.b, KEY["u-daily"]))
    assert before[0]["minute"]["tokens"]["used"] == sum(charged)

    gateway.restart_a()
    assert time.monotonic() - started < 55, "restart too slow to test the rolling minute"
    after_tokens, after_day = gateway.usage(gateway.a, KEY["u-tokens"]), gateway.usage(gateway.a, KEY["u-daily"])
    assert after_tokens["minute"]["tokens"]["used"] == sum(charged)
    assert after_day["day"]["tokens"] == before[1]["day"]["tokens"]
    r = gateway.post(gateway.a, KEY["u-tokens"], chat("hello", max_tokens=50))
    assert code_of(r) == "rate_limited" and r.headers["x-ratelimit-remaining-tokens"] == "0"
    r = gateway.post(gateway.a, KEY["u-daily"], chat("hello", max_tokens=100))
    assert code_of(r) == "daily_quota_exceeded"
    assert int(r.headers["retry-after"]) == pytest.approx(after_day["day"]["reset_seconds"], abs=5)
    assert r.headers["x-ratelimit-limit-tokens-day"] == "300"


def _sse(lines: list[str]) -> list[dict[str, Any]]:
    import json

    return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]


def test_streamed_usage_is_counted_and_unrequested_usage_is_not_leaked(gateway: LimitsStack) -> None:
    key = KEY["u-stream"]
    start = gateway.usage(gateway.a, key)["day"]["tokens"]["used"]
    headers = {"Authorization": f"Bearer {key}"}
    body = chat("hello there", max_tokens=30, stream=True)
    with httpx.stream("POST", gateway.a + "/v1/chat/completions", json=body, headers=headers, timeout=30) as r:
        assert r.status_code == 200 and r.headers["x-ratelimit-limit-tokens"] == "100000"
        # A stream reports the day at admission: what was used before, and its reservation (~30 tokens).
        assert 1_000_000 - start - 60 <= day_headers(r, 1_000_000) < 1_000_000 - start
        plain = _sse([line for line in r.iter_lines() if line])
    assert not any(chunk.get("usage") for chunk in plain)  # the client did not ask for it
    middle = gateway.usage(gateway.b, key)["day"]["tokens"]["used"]
    body["stream_options"] = {"include_usage": True}
    with httpx.stream("POST", gateway.b + "/v1/chat/completions", json=body, headers=headers, timeout=30) as r:
        chunks = _sse([line for line in r.iter_lines() if line])
    reported = [c["usage"]["total_tokens"] for c in chunks if c.get("usage")]
    assert len(reported) == 1 and reported[0] > 30  # asked for: delivered
    end = gateway.usage(gateway.a, key)
    # Both streams charged exactly what the upstream reported (the same body, the same usage).
    assert middle - start == reported[0] and end["day"]["tokens"]["used"] - middle == reported[0]
    assert end["in_flight"]["used"] == 0


def test_embeddings_count_their_input_tokens(gateway: LimitsStack) -> None:
    key = KEY["u-stream"]
    start = gateway.usage(gateway.b, key)["day"]["tokens"]["used"]
    body = {"model": "heartcode-embed", "input": ["a few words to embed", "and a few more of them"]}
    r = gateway.post(gateway.a, key, body, path="/v1/embeddings")
    assert r.status_code == 200 and r.headers["x-ratelimit-limit-requests"] == "1000"
    used = gateway.usage(gateway.b, key)["day"]["tokens"]["used"]
    assert used - start == r.json()["usage"]["prompt_tokens"] > 0
    assert day_headers(r, 1_000_000) == 1_000_000 - used


def test_client_that_disconnects_mid_stream_pays_for_what_it_got(gateway: LimitsStack) -> None:
    key = KEY["u-stream"]
    start = gateway.usage(gateway.a, key)["day"]["tokens"]["used"]
    headers = {"Authorization": f"Bearer {key}"}
    body = chat("hello there", max_tokens=3000, stream=True)
    # Slow answers (a minute for the whole stream): a busy machine must not let the upstream finish, and
    # the proxy send it all into socket buffers, before the client leaves.
    sim = gateway.procs["sim"]
    received = 0
    try:
        for name in sim.servers:
            sim.control(name, tokens_per_s=50)
        with httpx.stream("POST", gateway.b + "/v1/chat/completions", json=body, headers=headers, timeout=30) as r:
            assert r.status_code == 200
            assert gateway.usage(gateway.a, key)["in_flight"]["used"] == 1
            for line in r.iter_lines():
                if line.startswith("data: {") and '"content"' in line:
                    received += 1
                if received >= 40:
                    break
        # The reservation (3000+ tokens) is gone; the charge is what was streamed, give or take a chunk.
        wait_until(lambda: gateway.usage(gateway.a, key)["in_flight"]["used"] == 0, 10, "the stream's lease to go")
    finally:
        for name in sim.servers:
            sim.control(name, tokens_per_s=500)
    charged = gateway.usage(gateway.a, key)["day"]["tokens"]["used"] - start
    assert 5 + received <= charged <= 5 + received + 10, (received, charged)


def test_third_parallel_request_of_a_free_account_is_refused(gateway: LimitsStack) -> None:
    key = KEY["u-free-par"]
    headers = {"Authorization": f"Bearer {key}"}
    body = chat("hi", max_tokens=400, stream=True)
    with httpx.stream("POST", gateway.a + "/v1/chat/completions", json=body, headers=headers, timeout=30) as s1, \
         httpx.stream("POST", gateway.b + "/v1/chat/completions", json=body, headers=headers, timeout=30) as s2:  # fmt: skip
        assert s1.status_code == s2.status_code == 200
        r = gateway.post(gateway.a, key, chat("hi", max_tokens=2))
        assert code_of(r) == "concurrency_limited" and r.headers["retry-after"] == "1"
        for s in (s1, s2):
            for _ in s.iter_lines():
                pass
    assert code_of(gateway.post(gateway.b, key, chat("hi", max_tokens=2))) == "ok"


def test_request_too_large_is_refused_with_the_tier_limits(gateway: LimitsStack) -> None:
    r = gateway.post(gateway.b, KEY["u-free-par"], chat("many words " * 500))  # ~1,400 tokens > 1,000
    assert code_of(r) == "rate_limited" and "too large" in r.json()["error"]["message"]
    assert r.headers["retry-after"] == "60"
    # Refused without reading the counters: the limits and the day's reset, no made-up remaining.
    assert r.headers["x-ratelimit-limit-requests"] == "10" and r.headers["x-ratelimit-limit-tokens"] == "1000"
    assert r.headers["x-ratelimit-limit-tokens-day"] == "10000" and r.headers["x-ratelimit-reset-tokens-day"]
    assert not any(h.startswith("x-ratelimit-remaining") for h in r.headers)


def test_usage_route_answers_customer_keys_only(gateway: LimitsStack) -> None:
    body = gateway.usage(gateway.b, KEY["u-burst"])
    assert body["tier"] == "burst" and body["scope"] == "account"
    assert body["limits"] == {"requests_per_minute": 10, "tokens_per_minute": 100_000, "tokens_per_day": 1_000_000,
                              "max_parallel_requests": 100}  # fmt: skip
    assert body["day"]["resets_at"].endswith("T00:00:00Z")
    r = httpx.get(gateway.a + "/usage", headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    assert httpx.get(gateway.a + "/v1/usage", timeout=10).status_code == 401


def test_redis_killed_mid_test_gives_the_configured_behaviour(gateway: LimitsStack) -> None:
    key = KEY["u-redis"]  # 3 requests a minute
    assert code_of(gateway.post(gateway.a, key, chat(max_tokens=2))) == "ok"
    gateway.redis.kill()
    closed = gateway.post(gateway.a, key, chat(max_tokens=2))
    assert closed.status_code == 503 and code_of(closed) == "limiter_unavailable" and closed.headers["retry-after"]
    assert closed.headers["x-ratelimit-limit-requests"] == "3" and closed.headers["x-ratelimit-limit-tokens-day"]
    assert not any(h.startswith("x-ratelimit-remaining") for h in closed.headers)  # the counters are unknown
    # Open: this process's own counters (it has seen none of this account's requests: 3 more pass).
    opened = [code_of(gateway.post(gateway.b, key, chat(max_tokens=2))) for _ in range(4)]
    assert opened == ["ok", "ok", "ok", "rate_limited"]
    for name in ("a", "b"):
        assert "limits storage failed" in gateway.procs[name].log_text()
    # Redis back (empty): both proxies use it again within the pause after a failure.
    gateway.redis.start()
    wait_until(lambda: code_of(gateway.post(gateway.a, key, chat(max_tokens=2))) == "ok", 5, "a back on Redis")
    wait_until(lambda: gateway.usage(gateway.b, key)["minute"]["requests"]["used"] == 1, 5, "b back on Redis")
