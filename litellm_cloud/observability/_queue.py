"""``SpanQueue``: the span processor between a request and the network (one per export target).

Why not the SDK's ``BatchSpanProcessor``: when its queue is full it drops the oldest span with a log line
and counts the drop only in the SDK's internal metrics (off unless an environment variable turns them on,
and sent to the global meter provider); we need every drop in our own Prometheus counter. It also starts
its thread at construction and ignores its export timeout. This one is ~170 lines: a bounded
``queue.Queue``, one daemon thread started with the first span, batches of at most ``batch_size`` spans
and ``max_batch_bytes`` of attribute text (or what arrived within ``flush_interval``; the SDK's batches
count spans only, and a request of 200 spans with 32,000-character contents would exceed what receivers
accept), and a ``close`` that sends what is queued within a bound.

``on_end`` runs on the caller's thread (the proxy's event loop): it only puts the span on the queue, or
counts it as dropped when the queue is full. It never waits. Sending, and the exporter's retries with
backoff (``OTLPSpanExporter``: 429, 502, 503, 504 and connection errors, honouring ``Retry-After``,
within its timeout), happen on the thread. ``report(result, count, queued)`` sees ``sent``, ``failed``
(the target refused or did not answer in time) and ``dropped`` (queue full, or left at shutdown).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger("litellm_cloud.observability")

#: ``(result, count, queued)`` with result ``sent`` | ``failed`` | ``dropped``.
Report = Callable[[str, int, int], None]
#: Langfuse's OTLP endpoint refuses bodies over a few MB; stay well below.
MAX_BATCH_BYTES = 2_500_000


def span_bytes(span: ReadableSpan) -> int:
    """About what ``span`` adds to an OTLP request: its attribute keys and values, as UTF-8."""
    size = 100 + len(span.name)
    for key, value in (span.attributes or {}).items():
        size += len(key) + (len(value.encode()) if isinstance(value, str) else len(str(value)))
    return size


class SpanQueue(SpanProcessor):
    """Queues finished spans and exports them in batches from one background thread."""

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        name: str,
        report: Report,
        max_queue: int = 10_000,
        batch_size: int = 200,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        flush_interval: float = 1.0,
    ) -> None:
        self._exporter = exporter
        self._name = name
        self._report = report
        self._queue: queue.Queue[ReadableSpan] = queue.Queue(maxsize=max_queue)
        self._batch_size = batch_size
        self._max_batch_bytes = max_batch_bytes
        self._carry: ReadableSpan | None = None  # taken from the queue, too big for the last batch
        self._flush_interval = flush_interval
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopping = threading.Event()
        self._closed = False

    def __repr__(self) -> str:
        return f"SpanQueue({self._name!r}, queued={self._queue.qsize()})"

    # SpanProcessor
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if self._closed:
            self._report("dropped", 1, self._queue.qsize())
            return
        self._ensure_started()
        try:
            self._queue.put_nowait(span)
        except queue.Full:
            self._report("dropped", 1, self._queue.qsize())

    def shutdown(self) -> None:
        self.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until the queue is empty (spans handed to the exporter), at most ``timeout_millis``."""
        deadline = time.monotonic() + timeout_millis / 1000
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def close(self, timeout: float = 5.0) -> int:
        """Send what is queued, waiting at most ``timeout`` seconds; the number of spans left unsent."""
        if self._closed:
            return 0
        self._closed = True
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        left = self._queue.unfinished_tasks
        self._exporter.shutdown()  # also cuts short a retry waiting for its backoff
        if left:
            log.warning("traces: %d spans for %s not sent before shutdown", left, self._name)
            self._report("dropped", left, left)
        return left

    # the sender thread
    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"traces-{self._name}", daemon=True)
                self._thread.start()

    def _take_batch(self) -> list[ReadableSpan]:
        first, self._carry = self._carry, None
        if first is None:
            try:
                first = self._queue.get(timeout=0.05 if self._stopping.is_set() else self._flush_interval)
            except queue.Empty:
                return []
        batch, size = [first], span_bytes(first)
        while len(batch) < self._batch_size:
            try:
                span = self._queue.get_nowait()
            except queue.Empty:
                break
            span_size = span_bytes(span)
            if size + span_size > self._max_batch_bytes:
                self._carry = span  # first of the next batch
                break
            batch.append(span)
            size += span_size
        return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch:
                self._send(batch)
            elif self._stopping.is_set() and self._carry is None:
                return

    def _send(self, batch: list[ReadableSpan]) -> None:
        try:
            result = self._exporter.export(batch)
        except Exception:  # an exporter bug must not kill the thread
            log.exception("traces: export to %s raised", self._name)
            result = SpanExportResult.FAILURE
        finally:
            for _ in batch:
                self._queue.task_done()
        if result is SpanExportResult.SUCCESS:
            self._report("sent", len(batch), self._queue.qsize())
        else:
            log.warning("traces: %d spans not accepted by %s", len(batch), self._name)
            self._report("failed", len(batch), self._queue.qsize())
