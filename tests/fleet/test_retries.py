"""A retry goes to a server that has not failed the request yet (the fleet hook's routing filter).

Cooldowns are switched off in effect here (their fail counter lives a millisecond), so what keeps a
request away from a failing server is the retry filter alone. Without it, LiteLLM's retries route among
all four servers again, and with two of them failing about one request in eight meets a failing server
on all three tries.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support import SimFleet, chat, simulated_gateway

KEY = "hc-sk-retrytest0000000000000000verified"
FAILING = ("gpu-1", "gpu-2")
REQUESTS = 40


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimFleet, str]]:
    keys = [{"key": KEY, "user_id": "u-retry", "tier": "admin", "age_verified": True}]
    with simulated_gateway(tmp_path_factory.mktemp("retries"), keys, cooldown_time=0.001) as (sim, base, _proxy):
        yield sim, base



@pytest.mark.parametrize("mode", ["error", "down"])
def test_retries_skip_the_servers_that_already_failed_the_request(gateway: tuple[SimFleet, str], mode: str) -> None:
    sim, base = gateway
    for name in FAILING:
        sim.control(name, mode=mode)
    try:
        headers = {"Authorization": f"Bearer {KEY}"}
        repeated = 0
        for _ in range(REQUESTS):
            before = sim.chat_requests()
            r = httpx.post(f"{base}/v1/chat/completions", json=chat("heartcode-default", max_tokens=2),
                           headers=headers, timeout=30)  # fmt: skip
            assert r.status_code == 200, r.text
            assert r.headers["x-litellm-model-id"] in {"gpu-3", "gpu-4"}
            after = sim.chat_requests()
            repeated += sum(after[name] - before[name] > 1 for name in FAILING)
        # A refused connection never reaches the simulator's counters; a 500 does, at most once per request.
        assert repeated == 0
    finally:
        sim.reset()
