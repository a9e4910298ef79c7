"""Observability parts in-process: span queues and tracing, label bounds, outcomes, spans, the /metrics route."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from litellm_cloud import observability
from litellm_cloud._config import Secret, Settings
from litellm_cloud._edge import to_proxy_exception
from litellm_cloud._errors import ConfigError, DailyQuotaExceeded, ModelNotAllowed
from litellm_cloud.observability import _record
from litellm_cloud.observability._otlp import Target, Tracing, langfuse_target
from litellm_cloud.observability._queue import SpanQueue, span_bytes
from litellm_cloud.observability._spans import INPUT, OUTPUT, REDACTED, TRACE_INPUT, TRACE_OUTPUT, request_spans
from litellm_cloud.observability.metrics import Metrics
from tests.observability.harness import value
from tests.observability.recorder import Recorder
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


# --- span queue and tracing -----------------------------------------------------------------------


class _Exporter(SpanExporter):
    """A span exporter that records batches, optionally blocking until released (a hung target)."""

    def __init__(self, *, block: bool = False) -> None:
        self.batches: list[list[ReadableSpan]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not block:
            self.release.set()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches.append(list(spans))
        self.entered.set()
        self.release.wait(10)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


def _tracing(exporter: SpanExporter, **options: Any) -> Tracing:
    return Tracing([Target("langfuse", "http://langfuse.invalid/v1/traces")], exporter_factory=lambda t: exporter,
                   flush_interval=0.01, **options)  # fmt: skip


def test_a_full_queue_drops_without_waiting_and_counts() -> None:
    reports: list[tuple[str, str, int]] = []
    hung = _Exporter(block=True)
    tracing = _tracing(hung, max_queue=3, batch_size=1, report=lambda t, r, n, q: reports.append((t, r, n)))
    try:
        tracing.submit(_record_of(code="rate_limited", status=429), redact=False)  # one span
        assert hung.entered.wait(5)  # the sender is now stuck in the target
        start = time.perf_counter()
        for _ in range(3):  # 3 spans queue, the 4th and 5th are dropped
            tracing.submit(_record_of(code="rate_limited", status=429), redact=False)
        tracing.submit(_record_of(), redact=False)  # root + generation: both dropped
        assert time.perf_counter() - start < 0.05
        assert reports == [("langfuse", "dropped", 1), ("langfuse", "dropped", 1)]
    finally:
        hung.release.set()
        assert tracing.close(5) == 0
    assert ("langfuse", "sent", 1) in reports and sum(len(b) for b in hung.batches) == 4


def test_batches_stay_under_the_byte_limit() -> None:
    exporter = _Exporter()
    queue = SpanQueue(exporter, name="t", report=lambda r, n, q: None, max_batch_bytes=100_000, flush_interval=0.01)
    tracing = _tracing(_Exporter())
    tracing._provider.add_span_processor(queue)
    for _ in range(5):
        tracing.submit(_record_of(), redact=False)  # ~32 KB of content in each of 2 spans
    queue.close(5)
    tracing.close(1)
    sizes = [sum(span_bytes(s) for s in batch) for batch in exporter.batches]
    assert sum(len(b) for b in exporter.batches) == 10 and len(sizes) >= 4 and max(sizes) <= 100_000


def test_no_tracing_without_both_keys_or_an_endpoint() -> None:
    metrics = Metrics()
    assert observability.build_tracing(_settings(LANGFUSE_PUBLIC_KEY="pk"), metrics) is None
    assert observability.build_tracing(_settings(LANGFUSE_SECRET_KEY="sk"), metrics) is None
    assert value(_parse(metrics), "litellm_cloud_langfuse_enabled") == 0
    both = observability.build_tracing(_settings(LANGFUSE_PUBLIC_KEY="pk-1", LANGFUSE_SECRET_KEY="sk-2",
                                                 LANGFUSE_HOST="https://lf.example/"), metrics)  # fmt: skip
    assert isinstance(both, Tracing) and value(_parse(metrics), "litellm_cloud_langfuse_enabled") == 1
    [target] = both.targets
    assert target.endpoint == "https://lf.example/api/public/otel/v1/traces"
    assert target.headers["authorization"].reveal() == "Basic cGstMTpzay0y"  # pk-1:sk-2
    assert "sk-2" not in repr(both) and "cGstMTpzay0y" not in repr(both)
    both.close(1)
    collector = observability.build_tracing(
        _settings(HEARTCODE_OTLP_ENDPOINT="http://tempo:4318/v1/traces", HEARTCODE_OTLP_HEADERS="X-Org = 7, a=b=c"),
        Metrics(),
    )
    assert collector is not None and [t.name for t in collector.targets] == ["otlp"]
    assert {k: v.reveal() for k, v in collector.targets[0].headers.items()} == {"x-org": "7", "a": "b=c"}
    collector.close(1)
    with pytest.raises(ConfigError, match="HEARTCODE_OTLP_ENDPOINT"):
        _settings(HEARTCODE_OTLP_ENDPOINT="tempo:4318")


def test_spans_ignore_the_callers_active_span_and_a_client_chosen_call_id() -> None:
    with Recorder() as recorder:
        tracing = Tracing([langfuse_target(recorder.url, Secret("pk"), Secret("sk"))], flush_interval=0.01)
        other = TracerProvider().get_tracer("someone-else")
        chosen = str(uuid.uuid4())
        record = _record_of(call_id=chosen)
        sneaky = _record_of(call_id="hc-sk-live-0123456789abcdef")
        with other.start_as_current_span("a span of another library"):
            tracing.submit(record, redact=False)
        tracing.submit(sneaky, redact=False)
        tracing.close(5)
        traces = list(recorder.traces().items())
        raw = b"".join(r.body for r in recorder.requests)
    [(tid, trace), _] = traces
    assert tid != uuid.UUID(chosen).hex and trace["root"].parent_span_id == ""
    assert trace["root"].metadata["call_id"] == chosen and b"hc-sk-live" not in raw
    assert [c.parent_span_id for c in trace["children"]] == [trace["root"].span_id]


def test_a_retried_batch_arrives_once() -> None:
    with Recorder(fail_with=[503, 429]) as recorder:
        tracing = Tracing([langfuse_target(recorder.url, Secret("pk"), Secret("sk"))], flush_interval=0.01)
        for _ in range(3):
            tracing.submit(_record_of(call_id=str(uuid.uuid4())), redact=False)
        assert tracing.close(15) == 0
        requests = recorder.requests
        ids = [s.span_id for s in recorder.spans()]
    # The first batch was refused twice and retried with backoff until accepted (spans that arrived
    # meanwhile may form a second batch); every span was accepted exactly once.
    assert [r.status for r in requests[:3]] == [503, 429, 200] and {r.status for r in requests[3:]} <= {200}
    first = [[s.span_id for s in r.spans()] for r in requests[:3]]
    assert first[0] == first[1] == first[2] and len(ids) == len(set(ids)) == 6


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


def test_spans_redact_and_truncate() -> None:
    root = request_spans(_record_of(), redact=True)
    [gen] = root.children
    a, g = root.attributes, gen.attributes
    assert {json.loads(str(v)) for v in (a[TRACE_INPUT], a[TRACE_OUTPUT], g[INPUT], g[OUTPUT])} == {REDACTED}
    assert a["langfuse.trace.metadata.time_to_first_token_ms"] == 100.0
    assert a["langfuse.trace.metadata.latency_ms"] == 500.0 and a["langfuse.trace.metadata.redacted"] is True
    assert json.loads(str(g["langfuse.observation.completion_start_time"])) == "1970-01-01T00:16:40.100Z"
    assert g["gen_ai.usage.input_tokens"] == 3 and g["gen_ai.usage.output_tokens"] == 4
    assert (root.start_ns, root.end_ns) == (1000 * 10**9, 1000_500_000_000) and root.error is None
    plain = request_spans(_record_of(), redact=False).attributes[TRACE_INPUT]
    assert "[truncated" in json.loads(str(plain)) and len(str(plain)) < 33_000
    failed = request_spans(_record_of(code="model_unavailable", status=503, error="no GPU"), redact=False)
    assert failed.children == () and failed.error == "503 model_unavailable: no GPU"
    assert failed.attributes["langfuse.observation.level"] == "ERROR"


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
