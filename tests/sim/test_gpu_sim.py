"""The GPU simulator as a real process: every endpoint and fault mode over HTTP.

One simulator process serves the whole module. Fault tests use their own servers and put them back to
``ok`` afterwards, so the order of tests does not matter.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import socket
import statistics
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import PYTHON, ManagedProcess, free_ports, http_ok, port_open, wait_until

SERVERS = ("gpu-1", "gpu-slow", "gpu-f", "gpu-s", "embed-1", "gpu-down")


class Sim:
    """The running simulator: server URLs and the admin port."""

    def __init__(self, ports: dict[str, int], admin_port: int, process: ManagedProcess) -> None:
        self.ports = ports
        self.admin = f"http://127.0.0.1:{admin_port}"
        self.process = process

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def control(self, name: str, **changes: Any) -> dict[str, Any]:
        r = httpx.post(f"{self.admin}/servers/{name}/control", json=changes, timeout=5)
        assert r.status_code == 200, r.text
        return r.json()

    def stats(self, name: str) -> dict[str, Any]:
        return httpx.get(f"{self.url(name)}/sim/stats", timeout=5).json()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    tmp = tmp_path_factory.mktemp("sim")
    admin_port, *server_ports = free_ports(len(SERVERS) + 1)
    ports = dict(zip(SERVERS, server_ports, strict=True))
    spec = {
        "host": "127.0.0.1", "admin_port": admin_port, "seed": 7,
        "defaults": {"model": "heartcode-chat-sfw"},
        "servers": [
            {"name": "gpu-1", "port": ports["gpu-1"]},
            {"name": "gpu-slow", "port": ports["gpu-slow"], "ttft_ms": 80, "tokens_per_s": 20},
            {"name": "gpu-f", "port": ports["gpu-f"], "model": "heartcode-chat-nsfw"},
            {"name": "gpu-s", "port": ports["gpu-s"], "tokens_per_s": 50, "ttft_ms": 0},
            {"name": "embed-1", "port": ports["embed-1"], "model": "heartcode-embed", "embedding_dim": 64},
            {"name": "gpu-down", "port": ports["gpu-down"]},
        ],
    }
    spec_path = tmp / "sim.json"
    spec_path.write_text(json.dumps(spec))
    proc = ManagedProcess(
        "sim", [PYTHON, "-m", "litellm_cloud.sim", "--spec", str(spec_path)], log_dir=tmp,
        ready=lambda: http_ok(f"http://127.0.0.1:{admin_port}/health")() and all(map(port_open, ports.values())),
        ready_timeout=30,
    )
    proc.start()
    try:
        yield Sim(ports, admin_port, proc)
    finally:
        code = proc.stop()
    assert code == 0, f"simulator did not exit cleanly on SIGTERM ({code}):\n{proc.log_tail()}"


@pytest.fixture
def faulty(sim: Sim) -> Iterator[str]:
    """The fault-test server, put back to ok (and up) afterwards."""
    yield "gpu-f"
    sim.control("gpu-f", mode="ok", error_rate=0.0, fault_after_tokens=0, retry_after_s=None, reset_stats=True)


def chat(base: str, content: str = "hi there", timeout: float = 5, **extra: Any) -> httpx.Response:
    body = {"model": "heartcode-chat-sfw", "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=timeout)


def sse_events(response: httpx.Response) -> Iterator[tuple[float, str]]:
    """``(arrival time, data)`` of each SSE event as it arrives."""
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield time.monotonic(), line[len("data: "):]


def assert_openai_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["code"] == status and isinstance(error["type"], str)
    return error


# -- ready, health, models ---------------------------------------------------------------------------

def test_ready_line_names_every_server(sim: Sim) -> None:
    line = next(x for x in sim.process.log_text().splitlines() if x.startswith("sim ready: "))
    for name, port in sim.ports.items():
        assert f"{name}=127.0.0.1:{port}" in line
    assert f"admin={sim.admin.removeprefix('http://')}" in line


def test_health_and_models(sim: Sim) -> None:
    r = httpx.get(f"{sim.url('gpu-1')}/health")
    assert r.status_code == 200 and r.headers["x-sim-server"] == "gpu-1"
    models = httpx.get(f"{sim.url('embed-1')}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["heartcode-embed"]
    assert models["object"] == "list" and models["data"][0]["object"] == "model"


# -- chat completions --------------------------------------------------------------------------------

def test_chat_completion_shape(sim: Sim) -> None:
    r = chat(sim.url("gpu-f"))
    assert r.status_code == 200 and r.headers["x-sim-server"] == "gpu-f"
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "heartcode-chat-nsfw"  # the served name, whatever the request said
    assert isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant" and "gpu-f" in choice["message"]["content"]
    # "hi there" is 3 tokens (hi|ther|e) plus 1 for the role; no max_tokens: the default 16.
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 16, "total_tokens": 20}


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_cuts_with_length(sim: Sim, field: str) -> None:
    extra: dict[str, Any] = {field: 5}
    body = chat(sim.url("gpu-1"), **extra).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5
    assert len(body["choices"][0]["message"]["content"].split()) == 5


def test_same_prompt_same_reply(sim: Sim) -> None:
    first, second = (chat(sim.url("gpu-1"), "tell me a story").json() for _ in range(2))
    assert first["choices"][0]["message"] == second["choices"][0]["message"]
    assert first["id"] != second["id"]


def test_stream_arrives_token_by_token(sim: Sim) -> None:
    n, tps, ttft = 8, 20, 0.080  # gpu-slow: a token every 50 ms after 80 ms
    body = {"model": "m", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": n, "stream": True}
    started = time.monotonic()
    with httpx.stream("POST", f"{sim.url('gpu-slow')}/v1/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-sim-server"] == "gpu-slow"
        events = list(sse_events(r))
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "heartcode-chat-sfw" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    tokens = chunks[1:-1]
    assert len(tokens) == n and all(len(c["choices"][0]["delta"]["content"]) > 0 for c in tokens)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length" and "usage" not in chunks[-1]
    # Unbuffered and paced: the first token after ~ttft, then one every 1/tps.
    times = [t for t, _ in events[1:1 + n]]
    assert times[0] - started >= ttft * 0.8
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert statistics.median(gaps) >= 0.6 / tps, gaps
    assert times[-1] - times[0] >= 0.8 * (n - 1) / tps, gaps
    text = "".join(c["choices"][0]["delta"]["content"] for c in tokens)
    plain = chat(sim.url("gpu-slow"), max_tokens=n).json()
    assert text == plain["choices"][0]["message"]["content"]


def test_stream_include_usage_last_chunk(sim: Sim) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi there"}], "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{sim.url('gpu-1')}/v1/chat/completions", json=body, timeout=10) as r:
        data = [d for _, d in sse_events(r)]
    assert data[-1] == "[DONE]"
    usage_chunk = json.loads(data[-2])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 4, "completion_tokens": 16, "total_tokens": 20}
    assert json.loads(data[-3])["choices"][0]["finish_reason"] == "stop"
    assert len(data) == 1 + 16 + 1 + 1 + 1  # role, tokens, finish, usage, [DONE]


def test_non_streaming_takes_generation_time(sim: Sim) -> None:
    started = time.monotonic()
    chat(sim.url("gpu-slow"), max_tokens=5)  # 80 ms + 4 x 50 ms
    assert time.monotonic() - started >= 0.25


def test_openai_client_compat(sim: Sim) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{sim.url('gpu-1')}/v1", api_key="sk-none", max_retries=0)
    out = client.chat.completions.create(model="heartcode-chat-sfw", messages=[{"role": "user", "content": "x"}],
                                         max_tokens=3)
    assert out.choices[0].finish_reason == "length" and out.usage is not None and out.usage.completion_tokens == 3
    stream = client.chat.completions.create(model="heartcode-chat-sfw", messages=[{"role": "user", "content": "x"}],
                                            max_tokens=3, stream=True, stream_options={"include_usage": True})
    parts = list(stream)
    assert "".join(p.choices[0].delta.content or "" for p in parts if p.choices) == out.choices[0].message.content
    assert parts[-1].usage is not None and parts[-1].usage.total_tokens == out.usage.total_tokens
    embed = openai.OpenAI(base_url=f"{sim.url('embed-1')}/v1", api_key="sk-none", max_retries=0)
    vectors = embed.embeddings.create(model="heartcode-embed", input=["a", "b"])  # base64 on the wire
    assert [len(d.embedding) for d in vectors.data] == [64, 64]
    direct = httpx.post(f"{sim.url('embed-1')}/v1/embeddings", json={"input": "a"}).json()
    assert vectors.data[0].embedding == pytest.approx(direct["data"][0]["embedding"], abs=1e-6)
    assert client.models.list().data[0].id == "heartcode-chat-sfw"


# -- embeddings --------------------------------------------------------------------------------------

def test_embeddings_deterministic_fixed_dimension(sim: Sim) -> None:
    url = f"{sim.url('embed-1')}/v1/embeddings"
    one = httpx.post(url, json={"model": "heartcode-embed", "input": "hello world"}).json()
    many = httpx.post(url, json={"input": ["hello world", "other text", [1, 2, 3]]}).json()
    assert one["object"] == "list" and one["model"] == "heartcode-embed"
    vec = one["data"][0]["embedding"]
    assert len(vec) == 64 and math.isclose(math.fsum(v * v for v in vec), 1.0, abs_tol=1e-4)
    assert [d["index"] for d in many["data"]] == [0, 1, 2]
    assert many["data"][0]["embedding"] == vec and many["data"][1]["embedding"] != vec
    assert one["usage"]["prompt_tokens"] == one["usage"]["total_tokens"] == 4  # hell|o|worl|d
    assert many["usage"]["prompt_tokens"] == 4 + 3 + 3  # oth|... : other(2) text(1); [1,2,3] is 3 ids
    packed = httpx.post(url, json={"input": "hello world", "encoding_format": "base64"}).json()
    raw = base64.b64decode(packed["data"][0]["embedding"])
    assert list(struct.unpack("<64f", raw)) == pytest.approx(vec, abs=1e-6)


# -- bad input: 400, never 500 -----------------------------------------------------------------------

@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", b"{not json"),
    ("/v1/chat/completions", b"[1, 2]"),
    ("/v1/chat/completions", b'{"model": "m"}'),
    ("/v1/chat/completions", b'{"messages": []}'),
    ("/v1/chat/completions", b'{"messages": [{"content": "no role"}]}'),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": 5}]}'),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}'),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}'),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}'),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}'),
    ("/v1/chat/completions", b"\xff\xfe"),
    ("/v1/embeddings", b"{}"),
    ("/v1/embeddings", b'{"input": ""}'),
    ("/v1/embeddings", b'{"input": [1, "a", null]}'),
    ("/v1/embeddings", b'{"input": "a", "encoding_format": "int8"}'),
])
def test_bad_input_is_a_400(sim: Sim, path: str, body: bytes) -> None:
    r = httpx.post(f"{sim.url('gpu-1')}{path}", content=body, headers={"content-type": "application/json"})
    assert_openai_error(r, 400)


def test_unknown_route_and_wrong_method(sim: Sim) -> None:
    assert_openai_error(httpx.get(f"{sim.url('gpu-1')}/v1/nothing"), 404)
    assert httpx.get(f"{sim.url('gpu-1')}/v1/chat/completions").status_code == 405


def test_pipelined_and_chunked_requests_on_one_connection(sim: Sim) -> None:
    body = b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}'
    plain = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
    chunked = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
               b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:]))
    closing = b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", sim.ports["gpu-1"]), timeout=5) as sock:
        sock.sendall(plain + chunked + closing)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 3, data
    assert data.count(b'"completion_tokens":2') == 2


def test_expect_100_continue(sim: Sim) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "x" * 2000}], "max_tokens": 1}).encode()
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % len(body))
    with socket.create_connection(("127.0.0.1", sim.ports["gpu-1"]), timeout=5) as sock:
        sock.sendall(head)
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        assert b"HTTP/1.1 200 OK" in sock.recv(65536)


# -- fault modes -------------------------------------------------------------------------------------

def test_error_mode(sim: Sim, faulty: str) -> None:
    sim.control(faulty, mode="error")
    assert_openai_error(chat(sim.url(faulty)), 500)
    assert_openai_error(httpx.post(f"{sim.url(faulty)}/v1/embeddings", json={"input": "x"}), 500)
    assert httpx.get(f"{sim.url(faulty)}/health").status_code == 503
    assert httpx.get(f"{sim.url(faulty)}/v1/models").status_code == 200
    sim.control(faulty, mode="ok")
    assert chat(sim.url(faulty)).status_code == 200


def test_busy_mode_429(sim: Sim, faulty: str) -> None:
    sim.control(faulty, mode="busy")
    r = chat(sim.url(faulty))
    assert_openai_error(r, 429)
    assert "retry-after" not in r.headers
    sim.control(faulty, retry_after_s=2)
    assert chat(sim.url(faulty)).headers["retry-after"] == "2"
    assert httpx.get(f"{sim.url(faulty)}/health").status_code == 200  # alive, just full


def test_error_rate_is_a_fraction(sim: Sim, faulty: str) -> None:
    sim.control(faulty, error_rate=0.3, ttft_ms=0, tokens_per_s=0, reset_stats=True)
    try:
        with httpx.Client(base_url=sim.url(faulty)) as client:
            codes = [client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
                     .status_code for _ in range(300)]
    finally:
        sim.control(faulty, ttft_ms=5, tokens_per_s=500)
    errors = codes.count(500)
    assert set(codes) == {200, 500} and 50 <= errors <= 130, errors
    assert sim.stats(faulty)["requests"]["chat"] == {"ok": 300 - errors, "error": errors}


def test_hang_until_mode_changes(sim: Sim, faulty: str) -> None:
    sim.control(faulty, mode="hang")
    with pytest.raises(httpx.ReadTimeout):
        chat(sim.url(faulty), timeout=0.3)
    assert port_open(sim.ports[faulty])  # it accepts, it just never answers
    with httpx.Client(timeout=10) as client:
        started = time.monotonic()
        held = client.build_request("POST", f"{sim.url(faulty)}/v1/chat/completions",
                                    json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 1})
        import threading

        result: list[httpx.Response] = []
        worker = threading.Thread(target=lambda: result.append(client.send(held)))
        worker.start()
        time.sleep(0.3)
        assert not result
        sim.control(faulty, mode="ok")
        worker.join(5)
    assert result and result[0].status_code == 200 and time.monotonic() - started >= 0.3
    assert sim.stats(faulty)["requests"]["chat"]["hang"] == 2


def test_hang_mid_stream_after_tokens(sim: Sim, faulty: str) -> None:
    sim.control(faulty, mode="hang", fault_after_tokens=2)
    received: list[str] = []
    body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 10, "stream": True}
    timeout = httpx.Timeout(5, read=0.5)
    with (
        pytest.raises(httpx.ReadTimeout),
        httpx.stream("POST", f"{sim.url(faulty)}/v1/chat/completions", json=body, timeout=timeout) as r,
    ):
        received.extend(d for _, d in sse_events(r))
    assert len(received) == 1 + 2  # the role chunk and two tokens, then silence


def test_crash_resets_at_once(sim: Sim, faulty: str) -> None:
    sim.control(faulty, mode="crash")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        chat(sim.url(faulty))
    assert port_open(sim.ports[faulty])


def test_crash_mid_stream_after_tokens(sim: Sim, faulty: str) -> None:
    sim.control(faulty, mode="crash", fault_after_tokens=3)
    received: list[str] = []
    body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 10, "stream": True}
    with (
        pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
        httpx.stream("POST", f"{sim.url(faulty)}/v1/chat/completions", json=body, timeout=5) as r,
    ):
        assert r.status_code == 200
        received.extend(d for _, d in sse_events(r))
    assert len(received) == 1 + 3  # the role chunk, then three tokens, then a reset
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):  # non-streaming: a cut-off body
        chat(sim.url(faulty))


def test_crash_reaches_a_stream_in_flight(sim: Sim) -> None:
    # gpu-s streams 50 tokens/s: switch it to crash while a 40-token stream is running.
    body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 40, "stream": True}
    received = 0
    try:
        with (
            pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
            httpx.stream("POST", f"{sim.url('gpu-s')}/v1/chat/completions", json=body, timeout=5) as r,
        ):
            for _ in sse_events(r):
                received += 1
                if received == 3:
                    sim.control("gpu-s", mode="crash")
    finally:
        sim.control("gpu-s", mode="ok")
    assert 3 <= received < 20


def test_down_and_up_through_admin(sim: Sim) -> None:
    name, port = "gpu-down", sim.ports["gpu-down"]
    with httpx.Client(base_url=sim.url(name)) as kept_alive:
        assert kept_alive.get("/health").status_code == 200
        state = sim.control(name, mode="down")
        assert state["listening"] is False and state["mode"] == "down"
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{sim.url(name)}/health")
        with pytest.raises(httpx.TransportError):  # the open connection went down with the server
            kept_alive.get("/health")
    servers = {s["server"]: s for s in httpx.get(f"{sim.admin}/servers").json()["servers"]}
    assert servers[name]["mode"] == "down" and servers["gpu-1"]["mode"] == "ok"
    sim.control(name, mode="ok")
    assert httpx.get(f"{sim.url(name)}/health").status_code == 200 and port_open(port)


def test_down_through_its_own_port(sim: Sim) -> None:
    r = httpx.post(f"{sim.url('gpu-down')}/sim/control", json={"mode": "down"})
    assert r.status_code == 200 and r.json()["mode"] == "down"
    wait_until(lambda: not port_open(sim.ports["gpu-down"]), 5, "gpu-down to refuse connections")
    sim.control("gpu-down", mode="ok")
    assert http_ok(f"{sim.url('gpu-down')}/health")()


def test_control_and_admin_refuse_bad_requests(sim: Sim) -> None:
    assert_openai_error(httpx.post(f"{sim.url('gpu-1')}/sim/control", json={"mode": "sleepy"}), 400)
    assert_openai_error(httpx.post(f"{sim.url('gpu-1')}/sim/control", json={"error_rate": 2}), 400)
    assert_openai_error(httpx.post(f"{sim.url('gpu-1')}/sim/control", json={"colour": "red"}), 400)
    assert_openai_error(httpx.post(f"{sim.admin}/servers/gpu-1/control", content=b"{"), 400)
    assert_openai_error(httpx.post(f"{sim.admin}/servers/gpu-99/control", json={}), 404)
    assert httpx.get(f"{sim.url('gpu-1')}/sim/stats").json()["mode"] == "ok"


def test_admin_controls_every_server_at_once(sim: Sim) -> None:
    r = httpx.post(f"{sim.admin}/servers/*/control", json={"error_rate": 0.0})
    assert r.status_code == 200 and {s["server"] for s in r.json()["servers"]} == set(SERVERS)
    assert httpx.get(f"{sim.admin}/servers/gpu-1").json()["server"] == "gpu-1"


def test_stats_count_by_endpoint_and_outcome(sim: Sim, faulty: str) -> None:
    sim.control(faulty, reset_stats=True)
    url = sim.url(faulty)
    chat(url)
    httpx.post(f"{url}/v1/chat/completions", content=b"{")
    httpx.post(f"{url}/v1/embeddings", json={"input": "x"})
    httpx.get(f"{url}/health")
    sim.control(faulty, mode="busy")
    chat(url)
    stats = sim.stats(faulty)
    assert stats["requests"] == {"chat": {"ok": 1, "bad_request": 1, "busy": 1}, "embeddings": {"ok": 1},
                                 "health": {"ok": 1}}
    assert stats["tokens"] == {"prompt": 4 + 1, "completion": 16}
    assert stats["mode"] == "busy" and stats["model"] == "heartcode-chat-nsfw"


def test_clean_exit_and_bad_config(tmp_path: Path) -> None:
    import subprocess

    bad = subprocess.run([PYTHON, "-m", "litellm_cloud.sim", "--server", "a=1", "--server", "a=2"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert bad.returncode == 2 and "unique" in bad.stderr
    port = free_ports(1)[0]
    proc = ManagedProcess("sim-exit", [PYTHON, "-m", "litellm_cloud.sim", "--server", f"g={port}"],
                          log_dir=tmp_path, ready=http_ok(f"http://127.0.0.1:{port}/health")).start()
    assert proc.stop(timeout=5) == 0
    assert not port_open(port)
