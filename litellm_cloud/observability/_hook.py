"""The LiteLLM callback that turns every finished request into metrics and one trace (Langfuse, OTLP).

Which LiteLLM callback says what (1.103.7, measured):

- ``async_log_success_event``: once per served request (streams: once, at the end). Final.
- ``async_log_failure_event``: once per failed *attempt* (router retries included) and once more for a
  refusal before any upstream call. Used only for per-deployment errors, never for the trace.
- ``async_post_call_failure_hook``: once per failed request, refusals by auth and pre-call hooks
  included. Final for failures: it records the outcome and the trace.

Nothing here may fail or slow a request: every callback catches its own errors, and traces go to the
exporters' queues, never to the network.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from litellm.integrations.custom_logger import CustomLogger

from ..fleet.manifest import Manifest
from . import _record
from ._otlp import Tracing
from .metrics import OTHER, Metrics

log = logging.getLogger("litellm_cloud.observability")


class ObservabilityHook(CustomLogger):
    """Records ``Metrics`` for every request and, when ``tracing`` is given, its trace."""

    def __init__(
        self,
        *,
        manifest: Manifest,
        metrics: Metrics,
        tracing: Tracing | None,
        clock: Callable[[], float] = time.time,
        router: APIRouter | None = None,
    ) -> None:
        super().__init__()
        #: Our routes (``GET /metrics``); the gateway mounts them ahead of LiteLLM's.
        self.router = router
        self._manifest = manifest
        self._metrics = metrics
        self._tracing = tracing
        self._clock = clock

    def redacts(self, model_group: str | None) -> bool:
        """Whether content of ``model_group`` is kept out of traces (unknown groups: yes)."""
        group = self._manifest.groups.get(model_group or "")
        return group is None or group.redact_content

    def record(self, rec: _record.RequestRecord) -> None:
        """Metrics and trace of one finished request."""
        group = rec.model_group or OTHER
        self._metrics.request_finished(group, rec.tier, rec.code)
        if rec.ok:
            self._metrics.tokens(group, rec.tier, rec.prompt_tokens, rec.completion_tokens)
            self._metrics.request_latency(group, rec.end - rec.start, stream=rec.stream)
            if rec.first_token is not None:
                self._metrics.time_to_first_token(group, rec.first_token - rec.start)
        if self._tracing is not None:
            self._tracing.submit(rec, redact=self.redacts(rec.model_group))

    def close(self, timeout: float = 5.0) -> None:
        """Send the traces still queued (at most ``timeout`` seconds per target); at process exit."""
        if self._tracing is not None:
            self._tracing.close(timeout)

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        try:
            rec = _record.from_success(kwargs, self._manifest, self._clock())
            if rec.deployment:
                self._metrics.deployment_call(rec.deployment, rec.end - rec.start, ok=True)
            self.record(rec)
        except Exception:  # a metrics bug must never break a request
            log.exception("observability: success event not recorded")

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        try:
            slo = kwargs.get("standard_logging_object") or {}
            model_info = (kwargs.get("litellm_params") or {}).get("model_info") or {}
            deployment = slo.get("model_id") or model_info.get("id")
            if not deployment:
                return  # refused before any upstream call: the post-call failure hook records it
            started = _record.epoch(slo.get("startTime")) or _record.epoch(start_time) or self._clock()
            ended = _record.epoch(slo.get("endTime")) or _record.epoch(end_time) or self._clock()
            self._metrics.deployment_call(str(deployment), ended - started, ok=False)
        except Exception:
            log.exception("observability: failure event not recorded")

    async def async_post_call_failure_hook(
        self,
        request_data: dict,
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> None:
        try:
            self.record(
                _record.from_failure(request_data, original_exception, user_api_key_dict, self._manifest, self._clock())
            )
        except Exception:
            log.exception("observability: failed request not recorded")
        # Returns None: the client gets the error the other hooks chose.
