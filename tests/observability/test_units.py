"""Observability parts in-process: the exporter's queue, label bounds, outcomes, traces, the /metrics route."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from litellm_cloud import observability
from litellm_cloud._config import Secret, Settings
from litellm_cloud._edge import to_proxy_exception
from litellm_cloud._errors import DailyQuotaExceeded, ModelNotAllowed
from litellm_cloud.observability import _record
from litellm_cloud.observability._langfuse import LangfuseExporter
from litellm_cloud.observability._trace import REDACTED, trace_events
from litellm_cloud.observability.metrics import Metrics
from tests.observability.harness import value
from tests.support import REPO


def _parse(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(metrics.render().decode())
        for s in f.samples
    }


def _settings(**env: str) -> Settings:
    return Settings.from_env(env, base_dir=REPO)


# --- exporter ----------------------------------------------------------------------------------------


class _Hanging:
    """An httpx transport whose Langfuse accepts a batch and never answers (until released)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.batches.append(json.loads(request.content))
        self.entered.set()
        self.release.wait(10)
        return httpx.Response(207, json={"successes": [], "errors": []})


def test_a_full_queue_drops_without_waiting_and_counts() -> None:
    reports: list[tuple[str, int]] = []
    hang = _Hanging()
    exporter = LangfuseExporter(
        "http://langfuse.invalid", Secret("pk"), Secret("sk"), max_queue=3, batch_size=1, flush_interval=0.01,
        transport=httpx.MockTransport(hang), report=lambda result, n, queued: reports.append((result, n)),
    )  # fmt: skip
    try:
        assert exporter.submit([{"id": "first"}])
        assert hang.entered.wait(5)  # the sender is now stuck in Langfuse
        start = time.perf_counter()
        assert exporter.submit([{"id": "a"}, {"id": "b"}, {"id": "c"}])
        assert not exporter.submit([{"id": "d"}, {"id": "e"}])
        assert time.perf_counter() - start < 0.05
        assert reports == [("dropped", 2)]
    finally:
        hang.release.set()
        exporter.close()
    assert ("sent", 1) in reports


def test_exporter_batches_with_basic_auth_and_reports_rejections() -> None:
    seen: list[httpx.Request] = []

    def langfuse(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        batch = json.loads(request.content)["batch"]
        return httpx.Response(207, json={"successes": batch[1:], "errors": batch[:1]})

    reports: list[tuple[str, int]] = []
    exporter = LangfuseExporter(
        "http://langfuse.invalid/", Secret("pk-1"), Secret("sk-2"), flush_interval=0.05,
        transport=httpx.MockTransport(langfuse), report=lambda result, n, queued: reports.append((result, n)),
    )  # fmt: skip
    exporter.submit([{"id": str(i)} for i in range(5)])
    exporter.close()
    assert len(seen) == 1 and seen[0].url == "http://langfuse.invalid/api/public/ingestion"
    assert seen[0].headers["authorization"] == "Basic cGstMTpzay0y"  # pk-1:sk-2
    assert reports == [("failed", 1), ("sent", 4)]
    assert "sk-2" not in repr(exporter)


def test_no_exporter_without_both_keys() -> None:
    metrics = Metrics()
    assert observability.build_exporter(_settings(LANGFUSE_PUBLIC_KEY="pk"), metrics) is None
    assert observability.build_exporter(_settings(LANGFUSE_SECRET_KEY="sk"), metrics) is None
    assert value(_parse(metrics), "litellm_cloud_langfuse_enabled") == 0
    both = observability.build_exporter(_settings(LANGFUSE_PUBLIC_KEY="pk", LANGFUSE_SECRET_KEY="sk"), metrics)
    assert isinstance(both, LangfuseExporter) and value(_parse(metrics), "litellm_cloud_langfuse_enabled") == 1


# --- metrics -----------------------------------------------------------------------------------------


def test_labels_are_bounded_and_registries_separate() -> None:
    metrics, other = Metrics(), Metrics()
    observability.build_observability_hook(_settings(), metrics)
    metrics.request_finished("heartcode-chat-sfw", "free", "ok")
    metrics.request_finished("gpt-4 from a client", "user-123", "weird_code")
    metrics.limiter_refusal("rate_limited", "premium")
    metrics.limiter_refusal("something", "free")
    metrics.deployment_call("gpu-5", 0.2, ok=False)
    metrics.deployment_call("10.0.0.1:8080", 0.2, ok=True)
    metrics.auth_cache("stale")
    metrics.backend_validation(0.01, "valid")
    metrics.limiter_storage_fallback("open")
    metrics.tokens("heartcode-embed", "admin", 7, 0)
    s = _parse(metrics)
    assert value(s, "litellm_cloud_requests_total", model_group="heartcode-chat-sfw", tier="free", code="ok") == 1
    assert value(s, "litellm_cloud_requests_total", model_group="other", tier="other", code="other") == 1
    assert value(s, "litellm_cloud_limiter_refusals_total", kind="other", tier="free") == 1
    assert value(s, "litellm_cloud_deployment_calls_total", deployment="gpu-5",
                 model_group="heartcode-chat-nsfw", result="error") == 1  # fmt: skip
    assert value(s, "litellm_cloud_deployment_calls_total", deployment="other", model_group="other") == 1
    assert value(s, "litellm_cloud_auth_cache_total", result="stale") == 1
    assert value(s, "litellm_cloud_backend_validation_duration_seconds_count", outcome="valid") == 1
    assert value(s, "litellm_cloud_limiter_storage_fallbacks_total", mode="open") == 1
    assert value(s, "litellm_cloud_tokens_total", kind="prompt") == 7
    assert value(s, "litellm_cloud_tokens_total", kind="completion") == 0
    assert value(_parse(other), "litellm_cloud_requests_total") == 0


def test_open_labels_cap_before_the_manifest_is_known() -> None:
    metrics = Metrics()
    for i in range(100):
        metrics.request_finished(f"group-{i}", "free", "ok")
    groups = {dict(lab)["model_group"] for (n, lab) in _parse(metrics) if n == "litellm_cloud_requests_total"}
    assert len(groups) == 65 and "other" in groups


# --- outcomes and traces -----------------------------------------------------------------------------


def test_outcome_of_our_errors_and_foreign_ones() -> None:
    assert _record.outcome(to_proxy_exception(ModelNotAllowed("no"))) == ("model_not_allowed", 403, "no")
    assert _record.outcome(to_proxy_exception(DailyQuotaExceeded("tomorrow")))[:2] == ("daily_quota_exceeded", 429)
    import litellm

    boom = litellm.exceptions.InternalServerError("upstream exploded", llm_provider="openai", model="m")
    assert _record.outcome(boom)[:2] == ("model_unavailable", 503)
    bad = litellm.exceptions.BadRequestError("key hc-sk-abcdefabcdefabcdef1234 is odd", model="m", llm_provider="x")
    code, status, message = _record.outcome(bad)
    assert (code, status) == ("bad_request", 400) and "hc-sk-abcdef" not in message and "[key]" in message


def _record_of(**overrides: object) -> _record.RequestRecord:
    base: dict[str, object] = {
        "call_id": "call-1", "kind": "chat", "requested_model": "heartcode-nsfw", "model_group": "heartcode-chat-nsfw",
        "deployment": "gpu-6", "user_id": "u1", "key_id": "k1", "key_hash": "key-0123456789ab", "tier": "premium",
        "start": 1000.0, "end": 1000.5, "first_token": 1000.1, "stream": True, "prompt_tokens": 3, "completion_tokens": 4,
        "code": "ok", "status": 200, "error": None, "input": [{"role": "user", "content": "x" * 50_000}],
        "output": {"role": "assistant", "content": "hi"}, "parameters": {"max_tokens": 4},
    }  # fmt: skip
    base.update(overrides)
    return _record.RequestRecord(**base)  # type: ignore[arg-type]


def test_trace_events_redact_and_truncate() -> None:
    ids = iter(f"e{i}" for i in range(10))
    redacted = trace_events(_record_of(), redact=True, now=1001.0, new_id=lambda: next(ids))
    assert [e["type"] for e in redacted] == ["trace-create", "generation-create"]
    trace, gen = redacted[0]["body"], redacted[1]["body"]
    assert trace["input"] == trace["output"] == gen["input"] == gen["output"] == REDACTED
    assert trace["metadata"]["time_to_first_token_ms"] == 100.0 and trace["metadata"]["latency_ms"] == 500.0
    assert gen["completionStartTime"] == "1970-01-01T00:16:40.100Z" and gen["usage"]["total"] == 7
    plain = trace_events(_record_of(), redact=False, now=1001.0)
    assert isinstance(plain[0]["body"]["input"], str) and "[truncated" in plain[0]["body"]["input"]
    assert len(plain[0]["body"]["input"]) < 33_000


def test_hook_redacts_unknown_groups(tmp_path: Path) -> None:
    hook = observability.build_observability_hook(_settings(), Metrics())
    assert hook.redacts("heartcode-chat-nsfw") and hook.redacts(None) and hook.redacts("nope")
    assert not hook.redacts("heartcode-chat-sfw")


# --- /metrics route ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("Bearer wrong", 401),
        ("Basic bWV0cmljcy10b2tlbg==", 401),
        ("Bearer metrics-token", 200),
        ("bearer master-key", 200),
    ],
)
def test_metrics_route_checks_its_own_token(header: str | None, status: int) -> None:
    metrics = Metrics()
    hook = observability.build_observability_hook(
        _settings(HEARTCODE_METRICS_TOKEN="metrics-token", LITELLM_MASTER_KEY="master-key"), metrics
    )
    app = FastAPI()
    assert hook.router is not None
    app.include_router(hook.router)
    r = TestClient(app).get("/metrics", headers={"authorization": header} if header else {})
    assert r.status_code == status
    if status == 200:
        assert r.headers["content-type"].startswith("text/plain") and "litellm_cloud_requests_total" in r.text


def test_metrics_route_refuses_everything_without_tokens() -> None:
    hook = observability.build_observability_hook(_settings(), Metrics())
    app = FastAPI()
    assert hook.router is not None
    app.include_router(hook.router)
    assert TestClient(app).get("/metrics", headers={"authorization": "Bearer "}).status_code == 401


# --- Grafana dashboard -------------------------------------------------------------------------------


def test_dashboard_queries_only_exported_metrics() -> None:
    import re

    from litellm_cloud.tunnel.config import Forward
    from litellm_cloud.tunnel.status import TunnelStatus, render_prometheus

    dashboard = json.loads((REPO / "ops" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\b(litellm_(?:cloud|tunnel)_[a-z_]+)", e)}
    metrics = Metrics()
    observability.build_observability_hook(_settings(), metrics)
    metrics.backend_validation(0.1, "valid")  # histograms/labelled series appear once observed
    metrics.request_latency("heartcode-chat-sfw", 0.1, stream=True)
    metrics.time_to_first_token("heartcode-chat-sfw", 0.1)
    metrics.deployment_call("gpu-1", 0.1, ok=True)
    metrics.request_finished("heartcode-chat-sfw", "free", "ok")
    metrics.tokens("heartcode-chat-sfw", "free", 1, 1)
    metrics.auth_cache("hit")
    metrics.limiter_refusal("rate_limited", "free")
    metrics.limiter_storage_fallback("open")
    tunnel = render_prometheus(TunnelStatus([Forward("gpu-1", 8080, "h", 8080)]).snapshot())
    exported = {name for (name, _labels) in _parse(metrics)} | set(
        re.findall(r"^(litellm_tunnel_\w+)", tunnel, re.MULTILINE)
    )
    assert used and used <= exported, used - exported
    assert len(exprs) >= 20


# --- metrics for other processes (the tunnel) ----------------------------------------------------------


def test_serve_metrics_renders_live_state_per_scrape() -> None:
    from litellm_cloud.observability.exposition import serve_metrics
    from litellm_cloud.tunnel.config import Forward
    from litellm_cloud.tunnel.status import TunnelStatus, render_prometheus

    status = TunnelStatus([Forward("gpu-1", 8080, "10.0.0.5", 8080)])
    server = serve_metrics(lambda: render_prometheus(status.snapshot()).encode())
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        assert "litellm_tunnel_up 0" in httpx.get(url).text
        status.set_state("up")
        status.add_bytes("gpu-1", to_target=1234)
        text = httpx.get(url).text
        assert "litellm_tunnel_up 1" in text and 'direction="to_target"} 1234' in text
        assert httpx.get(f"http://127.0.0.1:{server.port}/other").status_code == 404
    finally:
        server.close()


def test_batches_stay_under_the_byte_limit() -> None:
    sizes: list[int] = []

    def langfuse(request: httpx.Request) -> httpx.Response:
        sizes.append(len(request.content))
        return httpx.Response(207, json={"successes": [], "errors": []})

    exporter = LangfuseExporter(
        "http://langfuse.invalid", Secret("pk"), Secret("sk"), max_batch_bytes=100_000, flush_interval=0.05,
        transport=httpx.MockTransport(langfuse),
    )  # fmt: skip
    exporter.submit([{"id": str(i), "body": {"input": "x" * 30_000}} for i in range(10)])
    exporter.close()
    assert len(sizes) >= 4 and max(sizes) < 100_500  # at most 3 events of ~30 KB per batch
