"""Gateway metrics. The method names are the interface other parts call; label values stay bounded.

Every metric lives in a per-instance ``CollectorRegistry`` (not prometheus_client's global one), so two
gateways in one test process never share counters. With several proxy workers (``HEARTCODE_WORKERS``),
``litellm_cloud.proxy`` sets ``PROMETHEUS_MULTIPROC_DIR``: prometheus_client then keeps every value in a
per-process file there (it decides once, at import), and ``render`` sums the files of the whole process
group, so any worker's scrape gives the same totals. Label values come from small closed sets: tiers from
``tiers.yaml``, model groups and deployments (server names) from ``fleet.yaml``, outcome codes from the
error tree. Anything else is folded into ``"other"``, so a client sending odd model names cannot blow up
the number of series. User ids and keys are never labels.

Who records what:

- auth: ``auth_cache``, ``backend_validation``
- limits: ``limiter_refusal``, ``limiter_storage_fallback``
- the observability hook (once per request): ``request_finished``, ``tokens``, ``request_latency``,
  ``time_to_first_token``, ``deployment_call``; its trace queues: ``langfuse_events``.
  Other parts must not call these, or requests would be counted twice.
- the gateway's event-loop lag sampler (``LoopLagSampler``, four times a second per worker):
  ``event_loop_lag``. The histogram sums over workers; the gauge keeps the worst live worker's value.
- the gateway, for the process: ``gc_pause`` (through ``GcWatch``, ``_gc.py``), ``gc_frozen``
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

#: prometheus_client's own switch to multiprocess mode (read when it is imported).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

OTHER = "other"
#: Tier labels for requests without a customer identity.
TIER_MASTER = "master"  # the LiteLLM master key (operators)
TIER_NONE = "none"  # refused before anyone was identified

AUTH_CACHE_RESULTS = ("hit", "miss", "negative_hit", "stale", "coalesced")
BACKEND_OUTCOMES = ("valid", "invalid", "unavailable", "timeout", "error")
LIMIT_KINDS = ("rate_limited", "daily_quota_exceeded", "concurrency_limited")
FALLBACK_MODES = ("open", "closed")
LANGFUSE_RESULTS = ("sent", "failed", "dropped")
#: Trace export targets: Langfuse and the OTLP collector of HEARTCODE_OTLP_ENDPOINT.
TRACE_TARGETS = ("langfuse", "otlp")

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_BACKEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Idle workers sit in the first buckets (~0.1-2 ms); saturation starts at tens of milliseconds.
_LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_GC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
GC_GENERATIONS = ("0", "1", "2")

# Before the manifest is known, accept tidy values, but only so many per label.
_SAFE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")
_OPEN_LIMIT = 64


class _Label:
    """One label's allowed values: a closed set when known, else the first ``_OPEN_LIMIT`` tidy values."""

    def __init__(self, allowed: Iterable[str] | None = None) -> None:
        self._allowed: frozenset[str] | None = frozenset(allowed) if allowed is not None else None
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def restrict(self, allowed: Iterable[str]) -> None:
        self._allowed = frozenset(allowed)

    def __call__(self, value: object) -> str:
        text = str(value)
        if self._allowed is not None:
            return text if text in self._allowed else OTHER
        if not _SAFE.match(text):
            return OTHER
        with self._lock:
            if text in self._seen:
                return text
            if len(self._seen) >= _OPEN_LIMIT:
                return OTHER
            self._seen.add(text)
            return text


def _outcome_codes() -> frozenset[str]:
    from .._errors import GatewayError

    codes = {"ok"}
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    # Errors LiteLLM or the upstream raised without a gateway code (see observability._outcome).
    codes |= {"forbidden", "bad_request", "timeout", "upstream_error", "internal_error", "client_closed"}
    return frozenset(codes)


class Metrics:
    """The gateway's Prometheus metrics (one instance per process, built by the gateway)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, multiprocess_dir: str | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._multiprocess_dir = multiprocess_dir
        r = self.registry
        self._tier = _Label()
        self._group = _Label()
        self._deployment = _Label()
        self._deployment_group: dict[str, str] = {}
        self._code = _Label(_outcome_codes())
        self._requests = Counter(
            "litellm_cloud_requests", "Requests finished, by model group, tier and outcome code (ok or an error code).",
            ["model_group", "tier", "code"], registry=r,
        )  # fmt: skip
        self._tokens = Counter(
            "litellm_cloud_tokens", "Tokens used by finished requests, by kind (prompt, completion).",
            ["model_group", "tier", "kind"], registry=r,
        )  # fmt: skip
        self._latency = Histogram(
            "litellm_cloud_request_duration_seconds", "Time from the call to the model group until the answer ended.",
            ["model_group", "stream"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._ttft = Histogram(
            "litellm_cloud_time_to_first_token_seconds", "Streams: time until the first token reached the gateway.",
            ["model_group"], buckets=_TTFT_BUCKETS, registry=r,
        )  # fmt: skip
        self._deployment_calls = Counter(
            "litellm_cloud_deployment_calls", "Upstream calls to one GPU server (retries count), by result.",
            ["deployment", "model_group", "result"], registry=r,
        )  # fmt: skip
        self._deployment_latency = Histogram(
            "litellm_cloud_deployment_duration_seconds", "Upstream call duration per GPU server.",
            ["deployment", "model_group"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._auth_cache = Counter(
            "litellm_cloud_auth_cache", "Auth cache lookups by result (hit, miss, negative_hit, stale, coalesced).",
            ["result"], registry=r,
        )  # fmt: skip
        self._backend = Histogram(
            "litellm_cloud_backend_validation_duration_seconds", "Key validations against the HeartCode backend.",
            ["outcome"], buckets=_BACKEND_BUCKETS, registry=r,
        )  # fmt: skip
        self._refusals = Counter(
            "litellm_cloud_limiter_refusals", "Requests the tier limiter refused, by kind and tier.",
            ["kind", "tier"], registry=r,
        )  # fmt: skip
        self._fallbacks = Counter(
            "litellm_cloud_limiter_storage_fallbacks", "Limiter storage failures, by what the limiter did (open, closed).",
            ["mode"], registry=r,
        )  # fmt: skip
        self._langfuse = Counter(
            "litellm_cloud_langfuse_events",
            "Trace spans by target (langfuse, otlp): sent, failed (target refused or timed out), dropped (queue full).",
            ["result", "target"], registry=r,
        )  # fmt: skip
        self._langfuse_queue = Gauge(
            "litellm_cloud_langfuse_queue_events", "Trace spans waiting to be sent, by target.", ["target"], registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self._langfuse_enabled = Gauge(
            "litellm_cloud_langfuse_enabled", "1 when traces are exported to Langfuse (both keys set).", registry=r,
            multiprocess_mode="max",
        )  # fmt: skip
        self._loop_lag = Histogram(
            "litellm_cloud_event_loop_lag_seconds",
            "How late a worker's event loop woke a timer (sampled every 0.25 s): its queueing delay.",
            buckets=_LOOP_LAG_BUCKETS, registry=r,
        )  # fmt: skip
        self._loop_lag_max = Gauge(
            "litellm_cloud_event_loop_lag_max_seconds",
            "The largest event-loop lag of the last 10 s (of the worst live worker, with several).", registry=r,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self._gc_pause = Histogram(
            "litellm_cloud_gc_pause_seconds",
            "Garbage collections: how long each stopped the process (event loop included), by generation (2: full).",
            ["generation"], buckets=_GC_BUCKETS, registry=r,
        )  # fmt: skip
        self._gc_frozen = Gauge(
            "litellm_cloud_gc_frozen_objects",
            "Objects start-up moved out of the collector's reach (gc.freeze), summed over workers.", registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self._gc_threshold = Gauge(
            "litellm_cloud_gc_threshold",
            "The garbage collector's thresholds in force (HEARTCODE_GC_THRESHOLD), by generation.",
            ["generation"], registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        for generation in GC_GENERATIONS:
            self._gc_pause.labels(generation)
        for result in LANGFUSE_RESULTS:
            self._langfuse.labels(result, "langfuse")  # export zeros, so rate() works from the first scrape
        self._langfuse_queue.labels("langfuse").set(0)

    def set_known_labels(
        self, *, tiers: Iterable[str], model_groups: Iterable[str], deployments: Mapping[str, str]
    ) -> None:
        """Close the label sets: ``deployments`` maps a server name to its model group."""
        self._tier.restrict({*tiers, TIER_MASTER, TIER_NONE})
        self._group.restrict(model_groups)
        self._deployment.restrict(deployments)
        self._deployment_group = dict(deployments)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (of every worker, in multiprocess mode)."""
        if self._multiprocess_dir:
            group = CollectorRegistry()
            multiprocess.MultiProcessCollector(group, path=self._multiprocess_dir)
            return generate_latest(group)
        return generate_latest(self.registry)

    # auth
    def auth_cache(self, result: str) -> None:
        """``result``: hit | miss | negative_hit | stale (served while the backend is down) | coalesced."""
        self._auth_cache.labels(result if result in AUTH_CACHE_RESULTS else OTHER).inc()

    def backend_validation(self, seconds: float, outcome: str) -> None:
        """One backend call: ``outcome`` valid | invalid | unavailable | timeout | error."""
        self._backend.labels(outcome if outcome in BACKEND_OUTCOMES else OTHER).observe(max(0.0, seconds))

    # limits
    def limiter_refusal(self, kind: str, tier: str) -> None:
        """``kind``: rate_limited | daily_quota_exceeded | concurrency_limited."""
        self._refusals.labels(kind if kind in LIMIT_KINDS else OTHER, self._tier(tier)).inc()

    def limiter_storage_fallback(self, mode: str) -> None:
        """The limiter store failed; ``mode``: open (served with per-process limits) | closed (refused)."""
        self._fallbacks.labels(mode if mode in FALLBACK_MODES else OTHER).inc()

    # requests (the observability hook records these, once per request)
    def request_finished(self, model_group: str, tier: str, code: str) -> None:
        """A request ended with ``code`` (ok or an error code)."""
        self._requests.labels(self._group(model_group), self._tier(tier), self._code(code)).inc()

    def tokens(self, model_group: str, tier: str, prompt: int, completion: int) -> None:
        """Tokens used by a finished request."""
        group, tier_label = self._group(model_group), self._tier(tier)
        if prompt > 0:
            self._tokens.labels(group, tier_label, "prompt").inc(prompt)
        if completion > 0:
            self._tokens.labels(group, tier_label, "completion").inc(completion)

    def request_latency(self, model_group: str, seconds: float, *, stream: bool) -> None:
        """How long a served request took, end to end inside LiteLLM."""
        self._latency.labels(self._group(model_group), "true" if stream else "false").observe(max(0.0, seconds))

    def time_to_first_token(self, model_group: str, seconds: float) -> None:
        """A stream's time to its first token."""
        self._ttft.labels(self._group(model_group)).observe(max(0.0, seconds))

    def deployment_call(self, deployment: str, seconds: float, ok: bool) -> None:
        """One upstream call to a GPU deployment."""
        name = self._deployment(deployment)
        group = self._group(self._deployment_group.get(deployment, OTHER))
        self._deployment_calls.labels(name, group, "ok" if ok else "error").inc()
        self._deployment_latency.labels(name, group).observe(max(0.0, seconds))

    # the Langfuse exporter
    def langfuse_enabled(self, enabled: bool) -> None:
        """Whether this process exports traces at all."""
        self._langfuse_enabled.set(1 if enabled else 0)

    def langfuse_events(
        self, result: str, count: int = 1, *, queued: int | None = None, target: str = "langfuse"
    ) -> None:
        """``count`` spans ``sent`` | ``failed`` | ``dropped`` for ``target``; ``queued``: spans still waiting."""
        target = target if target in TRACE_TARGETS else OTHER
        if count > 0:
            self._langfuse.labels(result if result in LANGFUSE_RESULTS else OTHER, target).inc(count)
        if queued is not None:
            self._langfuse_queue.labels(target).set(queued)

    # the event loop (the gateway's lag sampler)
    def event_loop_lag(self, seconds: float, recent_max: float) -> None:
        """One lag sample of this process's event loop, and the largest of its recent window."""
        self._loop_lag.observe(max(0.0, seconds))
        self._loop_lag_max.set(max(0.0, recent_max))
    # the process
    def gc_pause(self, generation: int, seconds: float) -> None:
        """One garbage collection of ``generation`` (0-2) that took ``seconds``."""
        label = str(generation)
        self._gc_pause.labels(label if label in GC_GENERATIONS else OTHER).observe(max(0.0, seconds))

    def gc_threshold(self, thresholds: tuple[int, ...]) -> None:
        """The collector's thresholds this process runs with (``gc.get_threshold()``)."""
        for generation, value in zip(GC_GENERATIONS, thresholds):
            self._gc_threshold.labels(generation).set(value)

    def gc_frozen(self, count: int) -> None:
        """How many objects this process froze after start-up (``gc.freeze``)."""
        self._gc_frozen.set(count)
