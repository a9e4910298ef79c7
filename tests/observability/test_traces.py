"""Langfuse traces and Prometheus metrics through the real proxy (one proxy for the whole module).

The proxy runs as production runs it, with the GPU simulator and the development key backend, and
``LANGFUSE_HOST`` pointing at a recording server on loopback. Each test sends requests with its own
keys and finds its traces by key hash, so tests do not depend on each other's order.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from litellm_cloud.identity import key_hash
from tests.observability.harness import Samples, scrape, value
from tests.observability.recorder import Recorder
from tests.support import MASTER_KEY, SimFleet, chat, render_test_config, start_backend, start_proxy, wait_until

LF_PUBLIC, LF_SECRET = "pk-lf-test-public", "sk-lf-test-secret-0123"
METRICS_TOKEN = "metrics-token-0123456789"
SECRET_WORDS = "velvet-moonlight-7731"  # content that must never leave the gateway for the NSFW group


def _key(name: str) -> str:
    return f"hc-sk-obs-{name}-0123456789abcdef"


ACCOUNTS = {
    # name: (user_id, tier, age_verified)
    "alice": ("user-alice", "premium", True),
    "carol": ("user-carol", "premium", True),
    "bob": ("user-bob", "free", False),
    "dave": ("user-dave", "premium", True),
    "erin": ("user-erin", "premium", True),
    "frank": ("user-frank", "free", False),
    "gina": ("user-gina", "premium", True),  # first seen in the metrics test: one miss, then hits
}
KEYS = [
    {"key": _key(n), "user_id": u, "tier": t, "age_verified": a, "key_id": f"k-{n}"}
    for n, (u, t, a) in ACCOUNTS.items()
]
UNKNOWN_KEY = _key("nobody")  # well formed, unknown to the backend: 401 after a backend call


@dataclass
class Stack:
    base: str
    recorder: Recorder
    sim: SimFleet

    def post(self, key: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.base}/v1/chat/completions", json=body,
                          headers={"authorization": f"Bearer {key}"}, timeout=30)  # fmt: skip

    def stream(self, key: str, body: dict[str, Any]) -> str:
        with httpx.stream("POST", f"{self.base}/v1/chat/completions", json={**body, "stream": True},
                          headers={"authorization": f"Bearer {key}"}, timeout=30) as r:  # fmt: skip
            assert r.status_code == 200, r.read()
            return "".join(r.iter_text())

    def traces_of(self, key: str, count: int) -> list[dict[str, Any]]:
        """The ``count`` traces whose key hash is ``key``'s (waits for the exporter's next batch)."""
        wanted = key_hash(key)

        def found() -> list[dict[str, Any]]:
            return [t for t in self.recorder.traces().values()
                    if "trace" in t and t["trace"]["metadata"]["key_hash"] == wanted]  # fmt: skip

        wait_until(lambda: len(found()) >= count, 15, f"{count} traces for {wanted}")
        return found()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs: Path = tmp_path_factory.mktemp("observability")
    with Recorder() as recorder:
        sim = SimFleet(logs, extra_args=["--ttft-ms", "80", "--tokens-per-s", "200"]).start()
        try:
            backend, backend_url = start_backend(logs, KEYS)
            try:
                config = render_test_config(logs / "config.yaml", sim.endpoints)
                env = {
                    "HEARTCODE_BACKEND_URL": backend_url,
                    "LANGFUSE_PUBLIC_KEY": LF_PUBLIC,
                    "LANGFUSE_SECRET_KEY": LF_SECRET,
                    "LANGFUSE_HOST": recorder.url,
                    "HEARTCODE_METRICS_TOKEN": METRICS_TOKEN,
                }
                proxy, base = start_proxy("proxy-observability", config, logs, env)
                try:
                    yield Stack(base, recorder, sim)
                finally:
                    proxy.stop()
            finally:
                backend.stop()
        finally:
            sim.stop()


def _all_bytes(recorder: Recorder) -> bytes:
    return b"".join(r.body + repr(r.headers).encode() for r in recorder.requests)


def test_normal_request_is_one_trace_with_every_field(stack: Stack) -> None:
    key = _key("alice")
    r = stack.post(key, chat("heartcode-default", "Tell me about tea", max_tokens=6))
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    [t] = stack.traces_of(key, 1)
    trace, meta = t["trace"], t["trace"]["metadata"]
    assert trace["userId"] == "user-alice" and trace["name"] == "chat"
    assert meta["tier"] == "premium" and meta["key_id"] == "k-alice" and meta["key_hash"] == key_hash(key)
    assert meta["requested_model"] == "heartcode-default" and meta["model_group"] == "heartcode-chat-sfw"
    assert meta["deployment"] in {"gpu-1", "gpu-2", "gpu-3", "gpu-4"}
    assert r.headers["x-litellm-model-id"] == meta["deployment"]  # the server that really answered
    assert (meta["prompt_tokens"], meta["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert meta["outcome"] == "ok" and meta["status"] == 200 and meta["stream"] is False
    assert meta["latency_ms"] > 0 and meta["time_to_first_token_ms"] is None and meta["redacted"] is False
    assert {"tier:premium", "model_group:heartcode-chat-sfw", "outcome:ok"} <= set(trace["tags"])
    assert trace["input"] == [{"role": "user", "content": "Tell me about tea"}]
    assert trace["output"]["content"] == r.json()["choices"][0]["message"]["content"]
    [gen] = t["observations"]
    assert gen["type"] == "generation-create" and gen["name"] == "heartcode-chat-sfw"
    assert gen["usage"]["input"] == usage["prompt_tokens"] and gen["usage"]["output"] == usage["completion_tokens"]
    assert gen["metadata"]["deployment"] == meta["deployment"] and gen["modelParameters"] == {"max_tokens": "6"}


def test_stream_trace_has_time_to_first_token(stack: Stack) -> None:
    key = _key("carol")
    text = stack.stream(key, chat("heartcode-sfw", "Stream me a poem", max_tokens=8))
    assert "[DONE]" in text
    [t] = stack.traces_of(key, 1)
    meta = t["trace"]["metadata"]
    assert meta["stream"] is True and "stream" in t["trace"]["tags"]
    assert meta["completion_tokens"] > 0
    # The simulator waits 80 ms before its first token, then 5 ms per token.
    assert 60 <= meta["time_to_first_token_ms"] < meta["latency_ms"], meta
    [gen] = t["observations"]
    assert gen["completionStartTime"] and gen["completionStartTime"] > gen["startTime"]
    assert t["trace"]["output"]["content"]  # the whole streamed answer, assembled


def test_nsfw_content_is_redacted(stack: Stack) -> None:
    key = _key("dave")
    r = stack.post(key, chat("heartcode-nsfw", f"My secret is {SECRET_WORDS}", max_tokens=5))
    assert r.status_code == 200, r.text
    stack.stream(key, chat("heartcode-chat-nsfw", f"Again {SECRET_WORDS}", max_tokens=5))
    traces = stack.traces_of(key, 2)
    for t in traces:
        meta = t["trace"]["metadata"]
        assert meta["model_group"] == "heartcode-chat-nsfw" and meta["redacted"] is True
        assert meta["deployment"] in {"gpu-5", "gpu-6", "gpu-7", "gpu-8"} and meta["completion_tokens"] > 0
        assert t["trace"]["input"] == "[redacted]" and t["trace"]["output"] == "[redacted]"
        [gen] = t["observations"]
        assert gen["input"] == "[redacted]" and gen["output"] == "[redacted]"
    answer = r.json()["choices"][0]["message"]["content"]
    raw = _all_bytes(stack.recorder)
    assert SECRET_WORDS.encode() not in raw and answer.encode() not in raw


def test_refusals_are_traced_with_their_code(stack: Stack) -> None:
    bob = _key("bob")
    r = stack.post(bob, chat("heartcode-nsfw", "let me in", max_tokens=5))
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    r = stack.post(UNKNOWN_KEY, chat("heartcode-default", "who am i", max_tokens=5))
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"

    [t] = stack.traces_of(bob, 1)
    trace, meta = t["trace"], t["trace"]["metadata"]
    assert trace["userId"] == "user-bob" and meta["tier"] == "free"
    assert meta["outcome"] == "model_not_allowed" and meta["status"] == 403
    assert meta["model_group"] == "heartcode-chat-nsfw" and meta["deployment"] is None
    assert "outcome:model_not_allowed" in trace["tags"] and trace["input"] is None
    [event] = t["observations"]
    assert event["type"] == "event-create" and event["level"] == "WARNING"
    assert event["statusMessage"].startswith("403 model_not_allowed")

    [t] = stack.traces_of(UNKNOWN_KEY, 1)
    trace, meta = t["trace"], t["trace"]["metadata"]
    assert trace["userId"] is None and meta["tier"] == "none" and meta["key_id"] is None
    assert meta["outcome"] == "invalid_api_key" and meta["status"] == 401
    assert meta["model_group"] == "heartcode-chat-sfw"


def test_limit_refusal_is_traced_and_counted(stack: Stack) -> None:
    """Free tier: 10 requests a minute; the 11th is refused by the limiter's pre-call hook."""
    key = _key("frank")
    before = _scrape(stack)
    codes = [stack.post(key, chat("heartcode-default", f"n{i}", max_tokens=1)).status_code for i in range(11)]
    assert codes == [200] * 10 + [429], codes
    traces = stack.traces_of(key, 11)
    refused = [t for t in traces if t["trace"]["metadata"]["outcome"] != "ok"]
    [t] = refused
    meta = t["trace"]["metadata"]
    assert meta["outcome"] == "rate_limited" and meta["status"] == 429 and meta["tier"] == "free"
    assert t["trace"]["userId"] == "user-frank" and meta["deployment"] is None
    assert t["observations"][0]["level"] == "WARNING"
    after = _scrape(stack)
    free_sfw = {"tier": "free", "model_group": "heartcode-chat-sfw"}
    assert (
        value(after, "litellm_cloud_requests_total", code="rate_limited", **free_sfw)
        - value(before, "litellm_cloud_requests_total", code="rate_limited", **free_sfw)
        == 1
    )
    assert (
        value(after, "litellm_cloud_limiter_refusals_total", kind="rate_limited", tier="free")
        - value(before, "litellm_cloud_limiter_refusals_total", kind="rate_limited", tier="free")
        == 1
    )


def test_embedding_trace_keeps_no_vectors(stack: Stack) -> None:
    key = _key("alice")
    r = httpx.post(f"{stack.base}/v1/embeddings", json={"model": "heartcode-embed", "input": "embed me"},
                   headers={"authorization": f"Bearer {key}"}, timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text

    def embedding_traces() -> list[dict[str, Any]]:
        return [t for t in stack.traces_of(key, 1) if t["trace"]["name"] == "embedding"]

    wait_until(lambda: len(embedding_traces()) == 1, 15, "the embedding trace")
    [t] = embedding_traces()
    meta = t["trace"]["metadata"]
    assert meta["model_group"] == "heartcode-embed" and meta["deployment"].startswith("embed-")
    assert meta["prompt_tokens"] > 0 and t["trace"]["input"] == "embed me"
    assert t["trace"]["output"] == {"embeddings": 1}


def test_no_raw_key_and_langfuse_credentials_sent(stack: Stack) -> None:
    stack.post(_key("alice"), chat("heartcode-default", "one more", max_tokens=3))
    stack.traces_of(_key("alice"), 2)
    raw = _all_bytes(stack.recorder)
    for key in [*(str(k["key"]) for k in KEYS), UNKNOWN_KEY, MASTER_KEY]:
        assert key.encode() not in raw
        assert key.split("-0123")[0].encode() not in raw  # not even the readable start of it
    expected = "Basic " + base64.b64encode(f"{LF_PUBLIC}:{LF_SECRET}".encode()).decode()
    assert {r.headers["authorization"] for r in stack.recorder.requests} == {expected}
    assert {r.path for r in stack.recorder.requests} == {"/api/public/ingestion"}


# --- /metrics --------------------------------------------------------------------------------------


def _scrape(stack: Stack, token: str = METRICS_TOKEN) -> Samples:
    return scrape(stack.base, token)


def test_metrics_needs_a_token(stack: Stack) -> None:
    assert httpx.get(f"{stack.base}/metrics", timeout=10).status_code == 401
    bad = httpx.get(f"{stack.base}/metrics", headers={"authorization": f"Bearer {_key('alice')}"}, timeout=10)
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    assert (
        "litellm_cloud_requests_total"
        in httpx.get(f"{stack.base}/metrics", headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=10).text
    )
    _scrape(stack)


def test_metrics_count_a_known_sequence(stack: Stack) -> None:
    before = _scrape(stack)
    carol, bob, gina, stranger = _key("carol"), _key("bob"), _key("gina"), _key("stranger")
    used = {"prompt": 0, "completion": 0}
    for i, key in enumerate((gina, gina)):
        r = stack.post(key, chat("heartcode-default", f"count me {i}", max_tokens=4))
        assert r.status_code == 200
        used["prompt"] += r.json()["usage"]["prompt_tokens"]
        used["completion"] += r.json()["usage"]["completion_tokens"]
    stack.stream(carol, chat("heartcode-chat-sfw", "count my stream", max_tokens=4))
    assert stack.post(bob, chat("heartcode-nsfw", "no", max_tokens=4)).status_code == 403
    for _ in range(2):  # the first asks the backend, the second is answered from the negative cache
        assert stack.post(stranger, chat("heartcode-default", "no", max_tokens=4)).status_code == 401
    # The stream's success callback runs after its last chunk went out: wait for it.
    wait_until(
        lambda: value(_scrape(stack), "litellm_cloud_time_to_first_token_seconds_count")
        > value(before, "litellm_cloud_time_to_first_token_seconds_count"),
        10, "the stream to be recorded",
    )  # fmt: skip
    after = _scrape(stack)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    sfw = {"model_group": "heartcode-chat-sfw"}
    assert delta("litellm_cloud_requests_total", tier="premium", code="ok", **sfw) == 3
    assert delta("litellm_cloud_requests_total", tier="free", code="model_not_allowed",
                 model_group="heartcode-chat-nsfw") == 1  # fmt: skip
    assert delta("litellm_cloud_requests_total", tier="none", code="invalid_api_key", **sfw) == 2
    assert delta("litellm_cloud_tokens_total", tier="premium", kind="prompt", **sfw) > used["prompt"]  # + stream
    assert delta("litellm_cloud_tokens_total", tier="premium", kind="completion", **sfw) > used["completion"]
    assert delta("litellm_cloud_deployment_calls_total", result="ok", **sfw) == 3
    assert delta("litellm_cloud_deployment_duration_seconds_count", **sfw) == 3
    assert delta("litellm_cloud_request_duration_seconds_count", stream="false", **sfw) == 2
    assert delta("litellm_cloud_time_to_first_token_seconds_count", **sfw) == 1
    # Auth: gina and the stranger are new (one miss each, one backend call each); carol's and bob's keys
    # and gina's second request are hits; the stranger's second is a negative hit.
    assert delta("litellm_cloud_auth_cache_total", result="miss") == 2
    assert delta("litellm_cloud_auth_cache_total", result="negative_hit") == 1
    assert delta("litellm_cloud_auth_cache_total", result="hit") >= 3
    assert delta("litellm_cloud_auth_cache_total", result="stale") == 0
    assert delta("litellm_cloud_backend_validation_duration_seconds_count", outcome="valid") == 1
    assert delta("litellm_cloud_backend_validation_duration_seconds_count", outcome="invalid") == 1
    assert delta("litellm_cloud_langfuse_events_total", result="dropped") == 0
    # Every label value is from the closed sets: no user ids, keys or free text.
    labels = {v for (_n, lab) in after for _k, v in lab}
    assert not any("user-" in v or "hc-sk" in v or "key-" in v for v in labels), labels


def test_upstream_failure_counts_per_server_and_traces_an_error(stack: Stack) -> None:
    """Every NSFW server failing: the client gets 503 model_unavailable; each failed call is counted."""
    key = _key("erin")
    nsfw = [f"gpu-{n}" for n in (5, 6, 7, 8)]
    before = _scrape(stack)
    for name in nsfw:
        stack.sim.control(name, mode="error")
    try:
        r = stack.post(key, chat("heartcode-nsfw", "fail please", max_tokens=2))
    finally:
        for name in nsfw:
            stack.sim.control(name, mode="ok")
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_unavailable", r.text
    [t] = stack.traces_of(key, 1)
    meta = t["trace"]["metadata"]
    assert meta["outcome"] == "model_unavailable" and meta["status"] == 503 and meta["tier"] == "premium"
    [event] = t["observations"]
    assert event["level"] == "ERROR" and event["name"] == "failed"
    after = _scrape(stack)
    errors = sum(
        value(after, "litellm_cloud_deployment_calls_total", deployment=n, result="error")
        - value(before, "litellm_cloud_deployment_calls_total", deployment=n, result="error")
        for n in nsfw
    )
    assert errors >= 1  # the first try and the router's retries, each on some NSFW server
    assert value(after, "litellm_cloud_deployment_calls_total", model_group="heartcode-chat-sfw", result="error") == (
        value(before, "litellm_cloud_deployment_calls_total", model_group="heartcode-chat-sfw", result="error")
    )
    code = {"tier": "premium", "code": "model_unavailable", "model_group": "heartcode-chat-nsfw"}
    assert (
        value(after, "litellm_cloud_requests_total", **code) - value(before, "litellm_cloud_requests_total", **code)
        == 1
    )
