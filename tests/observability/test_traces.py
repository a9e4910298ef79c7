"""OTLP traces for Langfuse and Prometheus metrics through the real proxy (one proxy for the module).

The proxy runs as production runs it, with the GPU simulator and the development key backend, and
``LANGFUSE_HOST`` pointing at a recording OTLP receiver on loopback that decodes the protobuf spans.
Each test sends requests with its own keys and finds its traces by key hash, so tests do not depend on
each other's order. Clients are the official ``openai`` SDK where it fits, httpx to see raw status codes.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from litellm_cloud.identity import key_hash
from tests.observability.harness import Samples, scrape, value
from tests.observability.recorder import Recorder, Span
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
    "hank": ("user-hank", "premium", True),
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

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=key, max_retries=0, timeout=30)

    def traces_of(self, key: str, count: int, *, children: int = 0) -> list[dict[str, Any]]:
        """The ``count`` traces whose key hash is ``key``'s (waits for the next batch, and for ``children``
        child spans in all of them together, since a root and its generation may come in two batches)."""
        wanted = key_hash(key)

        def found() -> list[dict[str, Any]]:
            return [t for t in self.recorder.traces().values()
                    if t["root"] is not None and t["root"].metadata.get("key_hash") == wanted]  # fmt: skip

        wait_until(lambda: len(found()) >= count and sum(len(t["children"]) for t in found()) >= children, 15,
                   f"{count} traces for {wanted}")  # fmt: skip
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


def _root_and_generation(trace: dict[str, Any]) -> tuple[Span, Span]:
    [gen] = trace["children"]
    return trace["root"], gen


def test_normal_request_is_one_trace_with_every_field(stack: Stack) -> None:
    key = _key("alice")
    raw = stack.client(key).chat.completions.with_raw_response.create(
        model="heartcode-default", messages=[{"role": "user", "content": "Tell me about tea"}], max_tokens=6
    )
    completion = raw.parse()
    [t] = stack.traces_of(key, 1, children=1)
    root, gen = _root_and_generation(t)
    a, meta = root.attributes, root.metadata
    assert root.name == "chat" and a["langfuse.trace.name"] == "chat" and a["langfuse.observation.type"] == "span"
    assert a["langfuse.user.id"] == "user-alice" and a["langfuse.session.id"] == "k-alice"
    assert meta["tier"] == "premium" and meta["key_id"] == "k-alice" and meta["key_hash"] == key_hash(key)
    assert meta["requested_model"] == "heartcode-default" and meta["model_group"] == "heartcode-chat-sfw"
    assert meta["deployment"] in {"gpu-1", "gpu-2", "gpu-3", "gpu-4"}
    assert raw.headers["x-litellm-model-id"] == meta["deployment"]  # the server that really answered
    assert meta["call_id"] == raw.headers["x-litellm-call-id"]
    assert completion.usage is not None
    usage = (completion.usage.prompt_tokens, completion.usage.completion_tokens)
    assert (meta["prompt_tokens"], meta["completion_tokens"]) == usage
    assert meta["outcome"] == "ok" and meta["status"] == 200 and meta["stream"] is False
    assert meta["latency_ms"] > 0 and "time_to_first_token_ms" not in meta and meta["redacted"] is False
    assert {"tier:premium", "model_group:heartcode-chat-sfw", "outcome:ok"} <= set(a["langfuse.trace.tags"])
    assert root.json("langfuse.trace.input") == [{"role": "user", "content": "Tell me about tea"}]
    assert root.json("langfuse.trace.output")["content"] == completion.choices[0].message.content
    assert a["langfuse.observation.level"] == "DEFAULT" and root.status_code == 0  # unset: not an error
    assert root.scope == "litellm-cloud" and root.resource == {"service.name": "litellm-cloud"}
    # The generation: a child of the root, in Langfuse's generation mapping.
    g = gen.attributes
    assert gen.parent_span_id == root.span_id and gen.trace_id == root.trace_id and gen.name == "heartcode-chat-sfw"
    assert g["langfuse.observation.type"] == "generation" and g["gen_ai.request.model"] == "heartcode-chat-sfw"
    assert (g["gen_ai.usage.input_tokens"], g["gen_ai.usage.output_tokens"]) == usage
    assert g["gen_ai.request.max_tokens"] == 6 and g["langfuse.observation.metadata.deployment"] == meta["deployment"]
    assert gen.json("langfuse.observation.output")["content"] == completion.choices[0].message.content
    assert root.start_ns <= gen.start_ns < gen.end_ns <= root.end_ns
    assert abs((root.end_ns - root.start_ns) / 1e6 - meta["latency_ms"]) < 1


def test_stream_trace_has_time_to_first_token(stack: Stack) -> None:
    key = _key("carol")
    chunks = list(stack.client(key).chat.completions.create(
        model="heartcode-sfw", messages=[{"role": "user", "content": "Stream me a poem"}], max_tokens=8, stream=True
    ))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    [t] = stack.traces_of(key, 1, children=1)
    root, gen = _root_and_generation(t)
    meta = root.metadata
    assert meta["stream"] is True and "stream" in root.attributes["langfuse.trace.tags"]
    assert meta["completion_tokens"] > 0 and gen.attributes["gen_ai.usage.output_tokens"] == meta["completion_tokens"]
    # The simulator waits 80 ms before its first token, then 5 ms per token.
    assert 60 <= meta["time_to_first_token_ms"] < meta["latency_ms"], meta
    first = gen.json("langfuse.observation.completion_start_time")
    started = dt.datetime.fromtimestamp(gen.start_ns / 1e9, tz=dt.UTC)
    first_at = dt.datetime.fromisoformat(first)
    assert 0.05 <= (first_at - started).total_seconds() < (gen.end_ns - gen.start_ns) / 1e9
    assert root.json("langfuse.trace.output")["content"] == text  # the whole streamed answer, assembled


def test_nsfw_content_is_redacted(stack: Stack) -> None:
    key = _key("dave")
    client = stack.client(key)
    completion = client.chat.completions.create(
        model="heartcode-nsfw", messages=[{"role": "user", "content": f"My secret is {SECRET_WORDS}"}], max_tokens=5
    )
    list(client.chat.completions.create(model="heartcode-chat-nsfw", stream=True, max_tokens=5,
                                        messages=[{"role": "user", "content": f"Again {SECRET_WORDS}"}]))  # fmt: skip
    traces = stack.traces_of(key, 2, children=2)
    for t in traces:
        root, gen = _root_and_generation(t)
        meta = root.metadata
        assert meta["model_group"] == "heartcode-chat-nsfw" and meta["redacted"] is True
        assert meta["deployment"] in {"gpu-5", "gpu-6", "gpu-7", "gpu-8"} and meta["completion_tokens"] > 0
        assert root.json("langfuse.trace.input") == "[redacted]" == root.json("langfuse.trace.output")
        assert gen.json("langfuse.observation.input") == "[redacted]" == gen.json("langfuse.observation.output")
    answer = completion.choices[0].message.content or ""
    raw = _all_bytes(stack.recorder)
    assert answer and SECRET_WORDS.encode() not in raw and answer.encode() not in raw


def test_refusals_are_traced_with_their_code(stack: Stack) -> None:
    bob = _key("bob")
    with pytest.raises(openai.PermissionDeniedError) as denied:
        stack.client(bob).chat.completions.create(model="heartcode-nsfw", max_tokens=5,
                                                  messages=[{"role": "user", "content": "let me in"}])  # fmt: skip
    assert denied.value.code == "model_not_allowed"
    with pytest.raises(openai.AuthenticationError) as refused:
        stack.client(UNKNOWN_KEY).chat.completions.create(model="heartcode-default", max_tokens=5,
                                                          messages=[{"role": "user", "content": "who am i"}])  # fmt: skip
    assert refused.value.code == "invalid_api_key"

    [t] = stack.traces_of(bob, 1)
    root, meta = t["root"], t["root"].metadata
    assert t["children"] == [] and root.attributes["langfuse.user.id"] == "user-bob" and meta["tier"] == "free"
    assert meta["outcome"] == "model_not_allowed" and meta["status"] == 403
    assert meta["model_group"] == "heartcode-chat-nsfw" and "deployment" not in meta
    assert "outcome:model_not_allowed" in root.attributes["langfuse.trace.tags"]
    assert "langfuse.trace.input" not in root.attributes  # a refused request's content is not kept
    assert root.attributes["langfuse.observation.level"] == "WARNING"
    assert root.attributes["langfuse.observation.status_message"].startswith("403 model_not_allowed")
    assert root.attributes["http.response.status_code"] == 403 and root.status_code == 0  # a refusal, not an error

    [t] = stack.traces_of(UNKNOWN_KEY, 1)
    root, meta = t["root"], t["root"].metadata
    assert "langfuse.user.id" not in root.attributes and meta["tier"] == "none" and "key_id" not in meta
    assert meta["outcome"] == "invalid_api_key" and meta["status"] == 401
    assert meta["model_group"] == "heartcode-chat-sfw"


def test_limit_refusal_is_traced_and_counted(stack: Stack) -> None:
    """Free tier: 10 requests a minute; the 11th is refused by the limiter's pre-call hook."""
    key = _key("frank")
    before = _scrape(stack)
    codes = [stack.post(key, chat("heartcode-default", f"n{i}", max_tokens=1)).status_code for i in range(11)]
    assert codes == [200] * 10 + [429], codes
    traces = stack.traces_of(key, 11)
    [t] = [t for t in traces if t["root"].metadata["outcome"] != "ok"]
    root, meta = t["root"], t["root"].metadata
    assert meta["outcome"] == "rate_limited" and meta["status"] == 429 and meta["tier"] == "free"
    assert root.attributes["langfuse.user.id"] == "user-frank" and "deployment" not in meta
    assert root.attributes["langfuse.observation.level"] == "WARNING"
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
    stack.client(key).embeddings.create(model="heartcode-embed", input="embed me")

    def embedding_traces() -> list[dict[str, Any]]:
        return [t for t in stack.traces_of(key, 1) if t["root"].name == "embedding" and t["children"]]

    wait_until(lambda: len(embedding_traces()) == 1, 15, "the embedding trace")
    [t] = embedding_traces()
    root, meta = t["root"], t["root"].metadata
    assert meta["model_group"] == "heartcode-embed" and meta["deployment"].startswith("embed-")
    assert meta["prompt_tokens"] > 0 and root.json("langfuse.trace.input") == "embed me"
    assert root.json("langfuse.trace.output") == {"embeddings": 1}


def test_no_raw_key_and_only_the_otlp_endpoint_with_langfuse_credentials(stack: Stack) -> None:
    stack.post(_key("alice"), chat("heartcode-default", "one more", max_tokens=3))
    stack.traces_of(_key("alice"), 3)
    raw = _all_bytes(stack.recorder)
    for key in [*(str(k["key"]) for k in KEYS), UNKNOWN_KEY, MASTER_KEY]:
        assert key.encode() not in raw
        assert key.split("-0123")[0].encode() not in raw  # not even the readable start of it
    expected = "Basic " + base64.b64encode(f"{LF_PUBLIC}:{LF_SECRET}".encode()).decode()
    assert {r.headers["authorization"] for r in stack.recorder.requests} == {expected}
    # Nothing goes to the retired ingestion API: only OTLP protobuf to Langfuse's OTel endpoint.
    assert {r.path for r in stack.recorder.requests} == {"/api/public/otel/v1/traces"}
    assert {r.headers["content-type"] for r in stack.recorder.requests} == {"application/x-protobuf"}


def test_refused_exports_are_retried_and_every_span_arrives_once(stack: Stack) -> None:
    """Langfuse answers 503 (then 429), then 200: the batch is retried with backoff and counted once."""
    key = _key("hank")
    before = _scrape(stack)
    stack.recorder.fail_next(503, 429)
    for i in range(3):
        assert stack.post(key, chat("heartcode-default", f"retry {i}", max_tokens=2)).status_code == 200
    traces = stack.traces_of(key, 3, children=3)
    ids = [s.span_id for t in traces for s in (t["root"], *t["children"])]
    accepted = [s.span_id for s in stack.recorder.spans()]
    refused = [r for r in stack.recorder.requests if r.status in (503, 429)]
    assert [r.status for r in refused[-2:]] == [503, 429]
    assert {s.span_id for r in refused[-2:] for s in r.spans()} & set(ids), "the refused batches held none of ours"
    assert all(accepted.count(span_id) == 1 for span_id in ids) and len(ids) == 6
    wait_until(lambda: _delta(stack, before, "sent") >= 6, 10, "the retried spans to be counted as sent")
    assert _delta(stack, before, "failed") == 0 and _delta(stack, before, "dropped") == 0


def _delta(stack: Stack, before: Samples, result: str) -> float:
    name = "litellm_cloud_langfuse_events_total"
    return value(_scrape(stack), name, result=result, target="langfuse") - value(
        before, name, result=result, target="langfuse"
    )


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
    root, meta = t["root"], t["root"].metadata
    assert meta["outcome"] == "model_unavailable" and meta["status"] == 503 and meta["tier"] == "premium"
    assert t["children"] == [] and root.attributes["langfuse.observation.level"] == "ERROR"
    assert root.status_code == 2 and root.status_message.startswith("503 model_unavailable")  # OTel: ERROR
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
