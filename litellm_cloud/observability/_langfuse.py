"""A small Langfuse exporter: trace events posted in batches from one background thread.

Why our own instead of LiteLLM's ``langfuse`` / ``langfuse_otel`` callbacks: those serialise LiteLLM's
request metadata, which on an auth failure carries the raw key the client sent (LiteLLM 1.103.7 puts it
in ``user_api_key_hash``), and they cannot redact per model group. Posting to Langfuse's public
ingestion API (``POST {host}/api/public/ingestion``, basic auth public:secret) needs only httpx and
gives us exactly the fields we choose.

A request never waits for Langfuse: ``submit`` puts events on a bounded queue and returns at once; when
the queue is full the events are dropped and counted. The sender thread starts on the first submit (so
an idle or disabled gateway opens no connection), batches what is queued, and gives up on a batch after
``timeout`` seconds: a slow or dead Langfuse costs traces, never requests.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import httpx

from .._config import Secret

log = logging.getLogger("litellm_cloud.observability")

Event = dict[str, Any]
#: ``(result, count, queued)`` with result ``sent`` | ``failed`` | ``dropped``.
Report = Callable[[str, int, int], None]

INGESTION_PATH = "/api/public/ingestion"
#: Langfuse refuses batches over 3.5 MB; stay well below (content fields are capped at 32,000 chars).
MAX_BATCH_BYTES = 2_500_000


class LangfuseExporter:
    """Sends Langfuse ingestion events in the background; never blocks the caller."""

    def __init__(
        self,
        host: str,
        public_key: Secret,
        secret_key: Secret,
        *,
        report: Report | None = None,
        max_queue: int = 10_000,
        batch_size: int = 100,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        flush_interval: float = 1.0,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._url = host.rstrip("/") + INGESTION_PATH
        self._auth = (public_key.reveal(), secret_key.reveal())
        self._report = report or (lambda result, count, queued: None)
        self._queue: queue.Queue[Event] = queue.Queue(maxsize=max_queue)
        self._batch_size = batch_size
        self._max_batch_bytes = max_batch_bytes
        self._carry: Event | None = None  # taken from the queue but too big for the last batch
        self._flush_interval = flush_interval
        self._timeout = timeout
        self._transport = transport
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopping = threading.Event()

    def __repr__(self) -> str:
        return f"LangfuseExporter(url={self._url!r})"  # never the keys

    def submit(self, events: list[Event]) -> bool:
        """Queue ``events`` (one request's trace); ``False`` when the queue was full and some were dropped."""
        self._ensure_started()
        for i, event in enumerate(events):
            try:
                self._queue.put_nowait(event)
            except queue.Full:
                self._report("dropped", len(events) - i, self._queue.qsize())
                return False
        return True

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued (waiting at most ``timeout``) and stop the thread."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="langfuse-exporter", daemon=True)
                self._thread.start()

    def _take_batch(self) -> list[Event]:
        """Up to ``batch_size`` events and ``max_batch_bytes`` (runs in the sender thread, never a request)."""
        first = self._carry
        self._carry = None
        if first is None:
            try:
                first = self._queue.get(timeout=self._flush_interval)
            except queue.Empty:
                return []
        batch, size = [first], len(json.dumps(first, default=str))
        while len(batch) < self._batch_size:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            event_size = len(json.dumps(event, default=str))
            if size + event_size > self._max_batch_bytes:
                self._carry = event  # first of the next batch
                break
            batch.append(event)
            size += event_size
        return batch

    def _run(self) -> None:
        timeout = httpx.Timeout(self._timeout, connect=min(self._timeout, 2.0))
        with httpx.Client(auth=self._auth, timeout=timeout, transport=self._transport) as client:
            while True:
                batch = self._take_batch()
                if batch:
                    self._send(client, batch)
                elif self._stopping.is_set() and self._carry is None:
                    return

    def _send(self, client: httpx.Client, batch: list[Event]) -> None:
        try:
            response = client.post(self._url, json={"batch": batch, "metadata": {"sdk_name": "litellm-cloud"}})
        except httpx.HTTPError as exc:
            log.warning("langfuse: %d events not sent: %s", len(batch), type(exc).__name__)
            self._report("failed", len(batch), self._queue.qsize())
            return
        if response.status_code >= 300 and response.status_code != 207:
            log.warning("langfuse: %d events refused with HTTP %d", len(batch), response.status_code)
            self._report("failed", len(batch), self._queue.qsize())
            return
        failed = _failed_in_multistatus(response)
        if failed:
            log.warning("langfuse: %d of %d events rejected", failed, len(batch))
            self._report("failed", failed, self._queue.qsize())
        self._report("sent", len(batch) - failed, self._queue.qsize())


def _failed_in_multistatus(response: httpx.Response) -> int:
    """Langfuse answers 207 with ``{"successes": [...], "errors": [...]}`` for per-event problems."""
    if response.status_code != 207:
        return 0
    try:
        errors = response.json().get("errors") or []
    except ValueError:
        return 0
    return len(errors) if isinstance(errors, list) else 0
