"""A tiny ``/metrics`` HTTP endpoint for processes that are not the proxy (the on-prem tunnel).

``serve_metrics(render, host, port)`` answers ``GET /metrics`` with ``render()`` (Prometheus text) from
a daemon thread; ``render`` is called per scrape, so it can read live state. The tunnel calls it as::

    server = serve_metrics(lambda: render_prometheus(status.snapshot()).encode(), "127.0.0.1", 9470)
    ...
    server.close()

Bind it to loopback or a management interface: it has no authentication of its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger("litellm_cloud.observability")


class MetricsServer:
    """A running metrics endpoint; ``port`` is the bound port (useful with port 0)."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.host, self.port = str(httpd.server_address[0]), int(httpd.server_address[1])

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def serve_metrics(render: Callable[[], bytes], host: str = "127.0.0.1", port: int = 0) -> MetricsServer:
    """Serve ``GET /metrics`` with ``render()`` on ``host:port`` until ``close()``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            try:
                body, status, kind = render(), 200, CONTENT_TYPE_LATEST
            except Exception:
                log.exception("metrics: render failed")
                body, status, kind = b"render failed\n", 500, "text/plain"
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return MetricsServer(httpd, thread)
