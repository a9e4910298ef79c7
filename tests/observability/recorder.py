"""A fake Langfuse on loopback: records every connection and ingestion batch, or hangs on purpose."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass
class Received:
    """One HTTP request the recorder got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _State:
    hang: bool = False
    connections: int = 0
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        with self.state.lock:
            self.state.connections += 1
        return conn, addr


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        state = self.server.state
        with state.lock:
            state.requests.append(Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if state.hang:
            state.release.wait(60)  # a Langfuse that accepts and never answers
        try:
            batch = json.loads(body).get("batch", [])
        except ValueError:
            batch = []
        reply = json.dumps({"successes": [{"id": e.get("id"), "status": 201} for e in batch], "errors": []}).encode()
        self.send_response(207)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


class Recorder:
    """Start with ``with Recorder() as rec``; ``rec.url`` is the base URL to give as ``LANGFUSE_HOST``."""

    def __init__(self, *, hang: bool = False) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State(hang=hang)
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="recorder", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.state.release.set()
        self._server.shutdown()
        self._server.server_close()

    @property
    def connections(self) -> int:
        with self._server.state.lock:
            return self._server.state.connections

    @property
    def requests(self) -> list[Received]:
        with self._server.state.lock:
            return list(self._server.state.requests)

    def events(self) -> list[dict[str, Any]]:
        """Every ingestion event received so far, in order."""
        return [event for r in self.requests if r.path.endswith("/api/public/ingestion") for event in r.json()["batch"]]

    def traces(self) -> dict[str, dict[str, Any]]:
        """Trace id -> {"trace": body, "observations": [bodies with their "type"]}."""
        out: dict[str, dict[str, Any]] = {}
        for event in self.events():
            body = event["body"]
            if event["type"] == "trace-create":
                out.setdefault(body["id"], {"observations": []})["trace"] = body
            else:
                out.setdefault(body["traceId"], {"observations": []})["observations"].append(
                    {**body, "type": event["type"]}
                )
        return out
