"""The gateway end to end: the real LiteLLM proxy in front of the simulated fleet (issue 2).

Aliases, streaming, embeddings, models, and the router policy: a server killed mid-load, a hung server,
a busy server and a whole group down.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support import GatewayClient, SimFleet, chat, simulated_gateway

KEY = "hc-sk-fleettest0000000000000000verified"
TIMEOUT = 2.0  # per-deployment timeout in this module's config


class FleetStack:
    """The simulated fleet and the shared test client (raw-key echo guard) of its one proxy."""

    def __init__(self, sim: SimFleet, base: str) -> None:
        self.sim = sim
        self.base = base
        self.headers = {"Authorization": f"Bearer {KEY}"}
        self.client = GatewayClient(base)

    def post(self, path: str, body: dict[str, object], timeout: float = 30) -> httpx.Response:
        return self.client.post(path, KEY, body, timeout=timeout)

    def served_by(self, response: httpx.Response) -> str:
        return response.headers["x-litellm-model-id"]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetStack]:
    keys = [{"key": KEY, "user_id": "u-fleet", "tier": "admin", "age_verified": True}]
    with simulated_gateway(tmp_path_factory.mktemp("gateway"), keys, timeout=TIMEOUT, stream_timeout=TIMEOUT) as (
        sim, base, _proxy,
    ):  # fmt: skip
        stack = FleetStack(sim, base)
        yield stack
        stack.client.close()


@pytest.fixture(autouse=True)
def healthy_fleet(gw: FleetStack) -> Iterator[None]:
    gw.sim.reset()
    yield
    gw.sim.reset()


SFW = {f"gpu-{i}" for i in range(1, 5)}
NSFW = {f"gpu-{i}" for i in range(5, 9)}


@pytest.mark.parametrize(
    ("model", "servers"),
    [("heartcode-default", SFW), ("heartcode-sfw", SFW), ("heartcode-chat-sfw", SFW),
     ("heartcode-nsfw", NSFW), ("heartcode-chat-nsfw", NSFW)],
)  # fmt: skip
def test_names_and_aliases_reach_their_group(gw: FleetStack, model: str, servers: set[str]) -> None:
    seen = set()
    for _ in range(12):
        r = gw.post("/v1/chat/completions", chat(model, max_tokens=4))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == model
        assert body["usage"]["completion_tokens"] == 4
        seen.add(gw.served_by(r))
        assert body["choices"][0]["message"]["content"].startswith(gw.served_by(r) + ":")
    assert seen <= servers and len(seen) >= 2  # balanced across the group's servers


def test_models_lists_groups_and_aliases(gw: FleetStack) -> None:
    r = httpx.get(gw.base + "/v1/models", headers=gw.headers, timeout=10)
    assert r.status_code == 200
    ids = {m["id"] for m in r.json()["data"]}
    assert {"heartcode-default", "heartcode-sfw", "heartcode-chat-sfw", "heartcode-embed"} <= ids


def test_embeddings(gw: FleetStack) -> None:
    r = gw.post("/v1/embeddings", {"model": "heartcode-embed", "input": ["one", "two"]})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert len(data) == 2 and len(data[0]["embedding"]) == 64
    assert gw.served_by(r).startswith("embed-")


def test_streaming_arrives_token_by_token(gw: FleetStack) -> None:
    for name in SFW:
        gw.sim.control(name, tokens_per_s=25)  # one token every 40 ms
    arrivals: list[float] = []
    contents: list[str] = []
    usage = None
    body = chat("heartcode-default", max_tokens=12, stream=True, stream_options={"include_usage": True})
    with httpx.stream("POST", gw.base + "/v1/chat/completions", json=body, headers=gw.headers, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices", []):
                if choice["delta"].get("content"):
                    arrivals.append(time.monotonic())
                    contents.append(choice["delta"]["content"])
    assert len(contents) >= 10
    gaps = sorted(b - a for a, b in itertools.pairwise(arrivals))
    # Buffered output would arrive in one burst; token by token, the median gap is near 40 ms.
    assert gaps[len(gaps) // 2] > 0.02, gaps
    assert arrivals[-1] - arrivals[0] > 0.3
    assert usage is not None and usage["completion_tokens"] == 12


async def _load(
    gw: FleetStack, n: int, concurrency: int, model: str = "heartcode-default"
) -> list[httpx.Response | Exception]:
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=gw.base, headers=gw.headers, timeout=30) as client:

        async def one() -> httpx.Response | Exception:
            async with sem:
                try:
                    return await client.post("/v1/chat/completions", json=chat(model, max_tokens=8))
                except httpx.HTTPError as exc:
                    return exc

        return list(await asyncio.gather(*(one() for _ in range(n))))


def _failures(results: list[httpx.Response | Exception]) -> list[str]:
    return [
        r.text[:200] if isinstance(r, httpx.Response) else repr(r)
        for r in results
        if not (isinstance(r, httpx.Response) and r.status_code == 200)
    ]


def _served(gw: FleetStack, name: str) -> int:
    return int(gw.sim.stats()[name]["requests"].get("chat", {}).get("ok", 0))


def _wait_until_all_serve(gw: FleetStack, servers: set[str] = SFW, timeout: float = 20) -> None:
    """Until every server has answered again (an earlier test's cooldowns are over)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while seen != servers:
        assert time.monotonic() < deadline, f"only {sorted(seen)} served again"
        seen.add(gw.served_by(gw.post("/v1/chat/completions", chat("heartcode-default", max_tokens=1))))
        if seen != servers:
            time.sleep(0.1)  # a paced poll: a tight loop spends the admin tier's 1,000 requests a minute


def test_a_server_killed_mid_load_costs_no_client_errors(gw: FleetStack) -> None:
    _wait_until_all_serve(gw)
    for name in SFW:
        gw.sim.control(name, tokens_per_s=200, reset_stats=True)  # ~40 ms per request: many in flight when it dies

    async def scenario() -> tuple[list[httpx.Response | Exception], int]:
        load = asyncio.create_task(_load(gw, 300, 16))
        while await asyncio.to_thread(_served, gw, "gpu-2") < 5:  # it takes its share first
            await asyncio.sleep(0.05)
        await asyncio.to_thread(gw.sim.control, "gpu-2", mode="down")  # refuses and resets open connections
        served_before = await asyncio.to_thread(_served, gw, "gpu-2")
        return await load, served_before

    results, served_before = asyncio.run(scenario())
    assert _failures(results) == []
    assert served_before >= 5
    assert _served(gw, "gpu-2") == served_before  # nothing after it died


def test_a_hung_server_costs_its_timeout_at_most_once(gw: FleetStack) -> None:
    gw.sim.control("gpu-3", mode="hang")
    slow = []
    for _ in range(20):
        started = time.monotonic()
        r = gw.post("/v1/chat/completions", chat("heartcode-default", max_tokens=4))
        took = time.monotonic() - started
        assert r.status_code == 200, r.text
        assert gw.served_by(r) != "gpu-3"
        if took > TIMEOUT / 2:
            slow.append(took)
    assert len(slow) <= 1, slow
    assert all(t < TIMEOUT + 1.5 for t in slow), slow


def test_a_hung_server_under_concurrent_load_costs_each_request_its_timeout_at_most_once(gw: FleetStack) -> None:
    """Requests already sent to the server when it hangs each pay its timeout once, then it is cooled down."""
    _wait_until_all_serve(gw)  # gpu-3 may still be cooling down from the test before
    gw.sim.control("gpu-3", mode="hang", reset_stats=True)
    concurrency = 8

    async def timed() -> list[tuple[float, httpx.Response | Exception]]:
        sem = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=gw.base, headers=gw.headers, timeout=30) as client:

            async def one() -> tuple[float, httpx.Response | Exception]:
                async with sem:
                    started = time.monotonic()
                    try:
                        r: httpx.Response | Exception = await client.post(
                            "/v1/chat/completions", json=chat("heartcode-default", max_tokens=4)
                        )
                    except httpx.HTTPError as exc:
                        r = exc
                    return time.monotonic() - started, r

            return list(await asyncio.gather(*(one() for _ in range(60))))

    results = asyncio.run(timed())
    assert _failures([r for _, r in results]) == []
    # A request that met the hung server waited its whole timeout; an ordinary one, even on a busy
    # machine, stays far below it.
    slow = sorted(took for took, _ in results if took > 0.9 * TIMEOUT)
    assert len(slow) <= concurrency, slow  # only those in flight before the first timeout
    assert all(t < TIMEOUT + 1.5 for t in slow), slow  # never a second timeout for one request
    stats = gw.sim.stats()["gpu-3"]
    assert 1 <= sum(stats["requests"].get("chat", {}).values()) <= concurrency, stats  # it was tried, then not


def test_a_busy_server_is_retried_elsewhere_and_not_cooled_down(gw: FleetStack) -> None:
    # Every server back in rotation first (the hung test leaves gpu-3 cooling down).
    _wait_until_all_serve(gw)
    gw.sim.control("gpu-4", mode="busy", reset_stats=True)
    results = asyncio.run(_load(gw, 80, 4))
    assert _failures(results) == []
    assert all(r.headers["x-litellm-model-id"] != "gpu-4" for r in results if isinstance(r, httpx.Response))
    # Not cooled down: the busy server kept being offered requests through the whole run.
    stats = gw.sim.stats()["gpu-4"]
    assert stats["requests"]["chat"]["busy"] >= 8, stats


@pytest.mark.parametrize(
    "body",
    [{"model": "heartcode-default"}, {"model": "heartcode-default", "messages": "nope"}, {"messages": []},
     {"model": "heartcode-default", "messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}],
)  # fmt: skip
def test_bad_input_is_a_4xx_json_error(gw: FleetStack, body: dict[str, object]) -> None:
    r = gw.post("/v1/chat/completions", body)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert "error" in r.json()


def test_malformed_json_is_a_4xx_json_error(gw: FleetStack) -> None:
    r = httpx.post(
        gw.base + "/v1/chat/completions",
        content=b"{not json",
        headers={**gw.headers, "content-type": "application/json"},
        timeout=10,
    )
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert "error" in r.json()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["heartcode-default", "heartcode-embed", "nope", ""]) | json_values,
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "system", "x"]) | json_values, "content": json_values}
            ),
            max_size=3,
        )
        | json_values,
        "max_tokens": st.integers(-3, 5) | json_values,
        "stream": json_values,
        "temperature": json_values,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
@example(body={"model": "heartcode-default", "messages": [{"role": "user", "content": [None]}]})
def test_no_request_body_yields_a_server_error(gw: FleetStack, body: dict[str, object]) -> None:
    r = gw.post("/v1/chat/completions", body)
    assert r.status_code < 500, (body, r.status_code, r.text)
    if r.status_code != 200:
        assert isinstance(r.json()["error"]["message"], str)
        assert "Traceback" not in r.text


# Last: it leaves the SFW group cooling down.
def test_a_whole_group_down_is_503_model_unavailable(gw: FleetStack) -> None:
    for name in SFW:
        gw.sim.control(name, mode="down")
    for _ in range(3):
        started = time.monotonic()
        r = gw.post("/v1/chat/completions", chat("heartcode-sfw"))
        assert time.monotonic() - started < TIMEOUT * 3
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "model_unavailable"
        assert int(r.headers["retry-after"]) >= 1
    # Streaming asks fail the same way, before any byte of a stream.
    r = gw.post("/v1/chat/completions", chat("heartcode-sfw", stream=True))
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_unavailable"
    # The other groups are unaffected.
    assert gw.post("/v1/chat/completions", chat("heartcode-nsfw", max_tokens=2)).status_code == 200


def test_the_start_up_heap_is_frozen_collections_are_rarer_and_their_pauses_measured(gw: FleetStack) -> None:
    """A full garbage collection over LiteLLM's start-up heap stopped the proxy for up to a second, every
    request in flight with it (bench_fleet.py phase 2, issue 16). The serving process froze that heap
    (``gc.freeze``) and times its collections; /metrics shows both."""
    from tests.observability.harness import scrape, value
    from tests.support import MASTER_KEY, wait_until

    for _ in range(3):
        assert gw.post("/v1/chat/completions", chat("heartcode-default", "hello")).status_code == 200
    samples = scrape(gw.base, MASTER_KEY)
    assert value(samples, "litellm_cloud_gc_frozen_objects") > 200_000  # LiteLLM's import alone leaves more
    # and it collects less often than Python's 700,10,10 (HEARTCODE_GC_THRESHOLD's default)
    assert [value(samples, "litellm_cloud_gc_threshold", generation=g) for g in "012"] == [2000, 10, 100]
    wait_until(lambda: value(scrape(gw.base, MASTER_KEY), "litellm_cloud_gc_pause_seconds_count", generation="0") > 0,
               5, "/metrics to count young collections")  # fmt: skip
