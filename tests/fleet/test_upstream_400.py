"""A client-caused upstream error never takes a GPU out of rotation and is never retried elsewhere.

50 requests that each make a GPU server answer 400 (context overflow, bad role, bad ``n``, wrong types,
over /v1/chat/completions, /v1/completions and /v1/responses): each is the client's 400 with our code,
each reached exactly one server once (the simulator counts), and afterwards every server of the group
still serves (none cooled down). Cooldowns are on here, as in production (``allowed_fails: 0``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pytest

from tests.support import SimFleet, chat, simulated_gateway

KEY = "hc-sk-upstream400test000000000000admin"
SFW = ("gpu-1", "gpu-2", "gpu-3", "gpu-4")
MSGS = [{"role": "user", "content": "hi"}]
BAD = [
    ("/v1/chat/completions", chat("heartcode-default", max_tokens=40000), "context_length_exceeded"),
    ("/v1/chat/completions", {"model": "heartcode-default", "messages": [{"role": "wizard", "content": "x"}]}, "invalid_request"),
    ("/v1/chat/completions", chat("heartcode-default", n=-1), "invalid_request"),
    ("/v1/chat/completions", chat("heartcode-default", temperature="hot"), "invalid_request"),
    ("/v1/completions", {"model": "heartcode-default", "prompt": "x", "max_tokens": 40000}, "context_length_exceeded"),
    ("/v1/completions", {"model": "heartcode-default", "prompt": "x", "top_p": 7}, "invalid_request"),
    ("/v1/responses", {"model": "heartcode-default", "input": "x", "max_output_tokens": 40000}, "context_length_exceeded"),
]  # fmt: skip


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimFleet, str]]:
    keys = [{"key": KEY, "user_id": "u-400", "tier": "admin", "age_verified": True}]
    with simulated_gateway(tmp_path_factory.mktemp("upstream400"), keys, cooldown_time=30) as (sim, base, _proxy):
        yield sim, base


def generations(sim: SimFleet) -> dict[str, int]:
    """Server -> chat and text completion requests received, whatever their outcome."""
    return {name: sum(sum(s["requests"].get(ep, {}).values()) for ep in ("chat", "completions"))
            for name, s in sim.stats().items()}  # fmt: skip


def test_fifty_upstream_400s_leave_every_server_in_rotation(gateway: tuple[SimFleet, str]) -> None:
    sim, base = gateway
    headers = {"Authorization": f"Bearer {KEY}"}
    before = generations(sim)
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for path, body, code in itertools.islice(itertools.cycle(BAD), 50):
            r = client.post(path, json=body)
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == code, r.text
            assert "Received Model Group" not in r.text and "OpenAIException" not in r.text
        after = generations(sim)
        hits = {name: after[name] - before[name] for name in after}
        print(f"\nupstream hits per server for 50 refused requests: {hits}")
        assert sum(hits.values()) == 50  # each reached one server, once: no retry on another
        assert {n for n, h in hits.items() if h} <= set(SFW)
        # Every server still takes requests: none was cooled down by the client's mistakes.
        served = {client.post("/v1/chat/completions", json=chat("heartcode-default", max_tokens=2)).headers["x-litellm-model-id"]
                  for _ in range(40)}  # fmt: skip
    assert served == set(SFW)
