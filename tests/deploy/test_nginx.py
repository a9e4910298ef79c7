"""The real nginx with the repo's configuration, on loopback, in front of the real proxy.

One stack per module: the GPU simulator (SimFleet), the development key backend, the LiteLLM proxy
started as production starts it, and nginx rendered from nginx/ with a certificate made here. A second
nginx in front of a small echo server checks what nginx itself does (headers sent upstream, keepalive,
the per-address shield, timeouts), and a third in front of a closed port checks the 502.
"""

from __future__ import annotations

import itertools
import json
import socket
import ssl
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy._certs import make_cert
from tests.deploy._nginx import NginxLayout, nginx_env
from tests.deploy._services import KEY, start_backend
from tests.support import MASTER_KEY, ManagedProcess, SimFleet, free_port, free_ports, render_test_config, start_proxy

AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT_SERVERS = ("gpu-1", "gpu-2", "gpu-3", "gpu-4")


@dataclass
class Front:
    """One running nginx: its layout and URLs."""

    layout: NginxLayout
    process: ManagedProcess
    http_port: int
    https_port: int
    ca: ssl.SSLContext

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def client(self, source: str = "127.0.0.1", **kwargs: Any) -> httpx.Client:
        transport = httpx.HTTPTransport(verify=self.ca, local_address=source)
        return httpx.Client(transport=transport, timeout=kwargs.pop("timeout", 30), **kwargs)


def start_front(root: Path, cert_dir: Path, upstream: str, name: str, **overrides: str) -> Front:
    http_port, https_port = free_ports(2)
    env = nginx_env(http_port=http_port, https_port=https_port, upstream=upstream, cert_dir=cert_dir, root=root, **overrides)
    layout = NginxLayout(root, env)
    checked = layout.test_config()
    assert checked.returncode == 0, checked.stderr
    process = layout.process(name, https_port).start()
    return Front(layout, process, http_port, https_port, ssl.create_default_context(cafile=str(cert_dir / "server.crt")))


@dataclass
class Stack:
    sim: SimFleet
    proxy_url: str
    front: Front


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    make_cert(directory)
    return directory


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("stack")
    sim = SimFleet(logs).start()
    started: list[ManagedProcess] = []
    try:
        backend, backend_url = start_backend(logs)
        started.append(backend)
        config = render_test_config(logs / "config.yaml", sim.endpoints)
        proxy, proxy_url = start_proxy("proxy", config, logs, {"HEARTCODE_BACKEND_URL": backend_url})
        started.append(proxy)
        front = start_front(logs / "nginx", certs, proxy_url.removeprefix("http://"), "nginx")
        started.append(front.process)
        yield Stack(sim, proxy_url, front)
    finally:
        for proc in reversed(started):
            proc.stop()
        sim.stop()


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "heartcode-sfw", "messages": [{"role": "user", "content": "Hello there"}], **extra}


def test_nginx_t_passes_on_the_rendered_config(stack: Stack) -> None:
    done = stack.front.layout.test_config()
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def test_chat_completion_over_https(stack: Stack) -> None:
    with stack.front.client() as client:
        r = client.post(f"{stack.front.https}/v1/chat/completions", headers=AUTH, json=chat_body(max_tokens=5))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]
    assert r.http_version == "HTTP/1.1"
    assert r.headers["server"] == "nginx"  # no version
    assert r.headers["strict-transport-security"].startswith("max-age=63072000")
    assert not [h for h in r.headers if h.startswith("x-litellm-version") or h == "x-litellm-model-api-base"]
    with stack.front.client() as client:
        models = client.get(f"{stack.front.https}/v1/models", headers=AUTH)
        unauth = client.post(f"{stack.front.https}/v1/chat/completions", json=chat_body())
    assert models.status_code == 200 and "heartcode-sfw" in {m["id"] for m in models.json()["data"]}
    assert unauth.status_code == 401 and unauth.json()["error"]["code"] == "invalid_api_key"  # the proxy's own JSON


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("POST", "/v1/completions", {"model": "heartcode-sfw", "prompt": "a", "max_tokens": 2}),
     ("POST", "/v1/responses", {"model": "heartcode-sfw", "input": "a", "max_output_tokens": 16}),
     ("POST", "/v1/chat/completions", chat_body(max_tokens=40000)),
     ("GET", "/v1/models/heartcode-sfw", None), ("GET", "/models/heartcode-sfw", None)],
)  # fmt: skip
def test_new_routes_over_https_without_internal_headers(stack: Stack, method: str, path: str, body: object) -> None:
    """The routes of issue 13 pass nginx, and no internal header does (direct port: tests/api)."""
    from litellm_cloud.front import is_internal_header

    with stack.front.client() as client:
        r = client.request(method, f"{stack.front.https}{path}", headers=AUTH, json=body)
    assert r.status_code == (400 if "40000" in json.dumps(body) else 200), r.text
    assert not [h for h in r.headers if is_internal_header(h) or h == "x-litellm-model-id"]
    assert r.headers["x-request-id"]
    with stack.front.client() as client:
        encoded = client.get(f"{stack.front.https}/v1/models/..%2Fkey%2Fgenerate", headers=AUTH)
    assert encoded.status_code in (403, 404) and encoded.json()["error"]["code"]


def test_stream_arrives_chunk_by_chunk(stack: Stack) -> None:
    for name in CHAT_SERVERS:
        stack.sim.control(name, tokens_per_s=20.0, ttft_ms=5.0)
    try:
        arrivals: list[float] = []
        with stack.front.client() as client, client.stream(
            "POST", f"{stack.front.https}/v1/chat/completions", headers=AUTH,
            json=chat_body(max_tokens=12, stream=True),
        ) as r:
            assert r.status_code == 200
            assert r.headers["x-accel-buffering"] == "no"
            for line in r.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunk = json.loads(line[6:])
                    if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                        arrivals.append(time.monotonic())
    finally:
        for name in CHAT_SERVERS:
            stack.sim.control(name, tokens_per_s=500.0)
    # 12 tokens at 20/s: ~50 ms apart. Buffered, they would all arrive together at the end.
    assert len(arrivals) >= 8, arrivals
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert arrivals[-1] - arrivals[0] > 0.3
    assert statistics.median(gaps) > 0.02, gaps


def test_http_redirects_to_https_but_liveness_answers(stack: Stack) -> None:
    front = stack.front
    with httpx.Client(timeout=10) as client:
        get = client.get(f"{front.http}/v1/models?x=1")
        post = client.post(f"{front.http}/v1/chat/completions", json=chat_body())
        live = client.get(f"{front.http}/health/liveliness")
        plain_to_tls = client.get(f"http://127.0.0.1:{front.https_port}/v1/models")
    assert get.status_code == 301 and get.headers["location"] == f"{front.https}/v1/models?x=1"
    assert post.status_code == 308 and post.headers["location"] == f"{front.https}/v1/chat/completions"
    assert live.status_code == 200 and "alive" in live.text
    assert plain_to_tls.status_code == 301 and plain_to_tls.headers["location"] == f"{front.https}/v1/models"


def tls_handshake(port: int, version: ssl.TLSVersion) -> str | None:
    """Handshake with only ``version`` offered, at security level 0 so OpenSSL 3 will offer old ones."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_3:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, ctx.wrap_socket(sock) as tls:
        return tls.version()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_1_0_and_1_1_are_refused(stack: Stack, certs: Path) -> None:
    port = stack.front.https_port
    assert tls_handshake(port, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert tls_handshake(port, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        with pytest.raises(ssl.SSLError, match="(?i)protocol version|unsupported protocol"):
            tls_handshake(port, old)
        # Control: this client does speak the old version to a server that allows it.
        assert old_version_server_accepts(certs, old)


def old_version_server_accepts(certs: Path, version: ssl.TLSVersion) -> bool:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = server_ctx.maximum_version = version
    server_ctx.set_ciphers("ALL:@SECLEVEL=0")
    server_ctx.load_cert_chain(certs / "server.crt", certs / "server.key")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        return tls_handshake(port, version) is not None
    finally:
        thread.join(5)
        listener.close()


ADMIN_PATHS = [
    ("POST", "/key/generate"), ("GET", "/key/info"), ("GET", "/router/settings"), ("GET", "/get/config/callbacks"),
    ("GET", "/config/yaml"), ("GET", "/debug/asyncio-tasks"), ("GET", "/ui"), ("GET", "/ui/"), ("GET", "/metrics"),
    ("GET", "/health"), ("GET", "/health/readiness"), ("GET", "/spend/logs"), ("GET", "/model/info"),
    ("POST", "/user/new"), ("GET", "/v1/model/info"), ("GET", "/global/spend"), ("GET", "/routes"), ("POST", "/hc/keys/revoke"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_PATHS)
def test_admin_paths_are_refused(stack: Stack, method: str, path: str) -> None:
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}
    with stack.front.client() as client:
        r = client.request(method, f"{stack.front.https}{path}", headers=admin, json={} if method == "POST" else None)
    assert r.status_code == 403, (path, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] == "route_not_allowed"


def test_admin_route_is_refused_by_nginx_not_missing_upstream(stack: Stack) -> None:
    # The proxy itself would answer it with the master key: only nginx stands in the way.
    direct = httpx.get(f"{stack.proxy_url}/router/settings", headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=10)
    assert direct.status_code == 200
    with stack.front.client() as client:
        for path in ("/router/settings", "/v1/models/../../router/settings", "/v1/%2E%2E/router/settings",
                     "//router/settings", "/ROUTER/settings"):
            r = client.get(f"{stack.front.https}{path}", headers={"Authorization": f"Bearer {MASTER_KEY}"})
            assert r.status_code in (403, 404), (path, r.status_code)
            assert r.json()["error"]["code"] in ("route_not_allowed", "not_found")


def test_the_playground_page_and_its_assets_pass_with_their_policy(stack: Stack) -> None:
    from litellm_cloud.playground import ASSETS, CONTENT_SECURITY_POLICY

    with stack.front.client() as client:
        for path in ASSETS:
            r = client.get(f"{stack.front.https}{path}")  # no key: the page is public
            assert r.status_code == 200, (path, r.status_code, r.text[:200])
            assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
            assert "nosniff" in r.headers["x-content-type-options"] and r.headers["referrer-policy"] == "no-referrer"
            assert "strict-transport-security" in r.headers
        assert client.get(f"{stack.front.https}/playground/app.js").text == httpx.get(f"{stack.proxy_url}/playground/app.js").text
        # Only the listed files: anything else under the prefix is nginx's 404, never forwarded.
        for path in ("/playground/", "/playground/index.html", "/playground/../router/settings", "/playgroundx"):
            r = client.get(f"{stack.front.https}{path}", headers={"Authorization": f"Bearer {MASTER_KEY}"})
            assert r.status_code in (403, 404) and r.json()["error"]["code"] in ("not_found", "route_not_allowed"), path


def test_unknown_paths_and_large_bodies_get_json_errors(stack: Stack) -> None:
    with stack.front.client() as client:
        missing = client.get(f"{stack.front.https}/nothing/here")
        big = client.post(f"{stack.front.https}/v1/chat/completions", headers=AUTH,
                          json=chat_body(padding="x" * 100_000))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"


# --- What nginx does on its own: an echo upstream ------------------------------------------------------


class Echo:
    """A tiny HTTP/1.1 upstream that answers with what it received; ``?hang=1`` waits until released."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.release = threading.Event()
        echo = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                echo.seen.append({"path": self.path, "peer_port": self.client_address[1], "headers": dict(self.headers)})
                if "hang=1" in self.path:
                    echo.release.wait(10)
                body = json.dumps(echo.seen[-1]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Litellm-Version", "9.9.9")
                self.send_header("X-Litellm-Model-Api-Base", "http://10.0.0.1:8080/v1")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # nginx closing a timed-out upstream connection is expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def echo_front(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[tuple[Echo, Front]]:
    echo = Echo()
    front = start_front(tmp_path_factory.mktemp("echo-nginx"), certs, f"127.0.0.1:{echo.port}", "nginx-echo",
                        NGINX_RATE_LIMIT="2r/s", NGINX_RATE_BURST="3", NGINX_CONN_LIMIT="2", NGINX_READ_TIMEOUT="1s")
    try:
        yield echo, front
    finally:
        front.process.stop()
        echo.stop()


def test_client_address_forwarded_and_upstream_kept_alive(echo_front: tuple[Echo, Front]) -> None:
    _, front = echo_front
    with front.client("127.0.0.5") as client:
        first = client.get(f"{front.https}/v1/models", headers={"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6"})
        second = client.get(f"{front.https}/models")
    assert first.status_code == 200 and second.status_code == 200
    headers = {k.lower(): v for k, v in first.json()["headers"].items()}
    assert headers["x-forwarded-for"] == "127.0.0.5" and headers["x-real-ip"] == "127.0.0.5"
    assert headers["x-forwarded-proto"] == "https" and headers["x-request-id"]
    assert "connection" not in headers or headers["connection"].lower() != "close"
    # Both requests went over the same upstream connection (HTTP/1.1 keepalive).
    assert first.json()["peer_port"] == second.json()["peer_port"]
    assert "x-litellm-version" not in first.headers and "x-litellm-model-api-base" not in first.headers


def test_request_rate_shield_is_per_address_json(echo_front: tuple[Echo, Front]) -> None:
    _, front = echo_front
    with front.client("127.0.0.2") as client:
        answers = [client.get(f"{front.https}/v1/models") for _ in range(20)]
    refused = [r for r in answers if r.status_code == 429]
    assert len(refused) >= 5 and all(r.status_code in (200, 429) for r in answers)
    assert refused[0].json()["error"]["code"] == "too_many_requests"
    assert refused[0].headers["retry-after"] == "1" and refused[0].headers["strict-transport-security"]
    with front.client("127.0.0.3") as other:
        assert other.get(f"{front.https}/v1/models").status_code == 200


def test_connection_shield_and_read_timeout(echo_front: tuple[Echo, Front]) -> None:
    echo, front = echo_front
    echo.release.clear()
    results: list[httpx.Response] = []

    def hang() -> None:
        with front.client("127.0.0.4") as client:
            results.append(client.get(f"{front.https}/v1/models?hang=1"))

    threads = [threading.Thread(target=hang) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while sum("hang=1" in s["path"] for s in echo.seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    with front.client("127.0.0.4") as client:
        third = client.get(f"{front.https}/models")
    assert third.status_code == 429 and third.json()["error"]["code"] == "too_many_requests"
    for t in threads:
        t.join(10)
    echo.release.set()
    # NGINX_READ_TIMEOUT=1s here: the silent upstream is cut with a JSON 504.
    assert [r.status_code for r in results] == [504, 504]
    assert results[0].json()["error"]["code"] == "upstream_timeout"


def test_unreachable_upstream_is_a_json_502(tmp_path: Path, certs: Path) -> None:
    front = start_front(tmp_path / "nginx", certs, f"127.0.0.1:{free_port()}", "nginx-dead")
    try:
        with front.client() as client:
            r = client.get(f"{front.https}/v1/models")
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unavailable"
        assert "nginx/" not in r.text and "<html>" not in r.text
    finally:
        front.process.stop()


def test_nginx_t_fails_on_a_broken_template(tmp_path: Path, certs: Path) -> None:
    # The check above can fail: a bad value for a template variable is caught by nginx -t.
    env = nginx_env(http_port=1, https_port=2, upstream="127.0.0.1:3", cert_dir=certs, root=tmp_path, NGINX_RATE_LIMIT="fast")
    done = NginxLayout(tmp_path, env).test_config()
    assert done.returncode != 0 and "rate" in done.stderr


def test_nginx_binary_present() -> None:
    assert subprocess.run(["nginx", "-v"], check=False, capture_output=True).returncode == 0
