"""Fixtures for auth tests: the development key backend as a process, and a client that checks no
answer ever echoes the key it was sent."""

from __future__ import annotations

import os

# Unit tests here import litellm: use its bundled cost map instead of fetching one (no network).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import PYTHON, REPO, GatewayClient, ManagedProcess, chat, free_port, http_ok

FREE = "hc-sk-test-free-0000000000000001"
FREE_VERIFIED = "hc-sk-test-free-verified-000002"
PREMIUM = "hc-sk-test-premium-00000000003"
ADMIN_TIER = "hc-sk-test-admin-0000000000004"
GOLD = "hc-sk-test-gold-tier-0000000005"  # a tier tiers.yaml does not define

KEYS: list[dict[str, Any]] = [
    {"key": FREE, "user_id": "u-free", "key_id": "k-free", "tier": "free", "age_verified": False},
    {"key": FREE_VERIFIED, "user_id": "u-free-v", "key_id": "k-free-v", "tier": "free", "age_verified": True},
    {"key": PREMIUM, "user_id": "u-premium", "key_id": "k-premium", "tier": "premium", "age_verified": False},
    {"key": ADMIN_TIER, "user_id": "u-admin", "key_id": "k-admin", "tier": "admin", "age_verified": True},
    {"key": GOLD, "user_id": "u-gold", "key_id": "k-gold", "tier": "gold", "age_verified": True},
]



def chat_body(model: str | None, **extra: Any) -> dict[str, Any]:
    """The auth tests' chat body: ``hello``, four tokens at most."""
    return chat(model, "hello", **{"max_tokens": 4, **extra})


class BackendProcess:
    """``python -m litellm_cloud.sim.backend`` as a child process, with its control routes."""

    def __init__(self, log_dir: Path, name: str = "backend", token: str = "") -> None:
        keys_file = log_dir / f"{name}-keys.yaml"
        keys_file.write_text(yaml.safe_dump(KEYS))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [PYTHON, "-m", "litellm_cloud.sim.backend", "--port", str(self.port), "--keys", str(keys_file)]
        if token:
            argv += ["--token", token]
        self.process = ManagedProcess(name, argv, log_dir=log_dir, cwd=REPO, ready=http_ok(f"{self.url}/health"))

    def start(self) -> BackendProcess:
        self.process.start()
        return self

    def stop(self) -> None:
        self.process.stop()

    def calls(self) -> int:
        return int(httpx.get(f"{self.url}/sim/stats", timeout=5).json()["validate_calls"])

    def control(self, **settings: object) -> dict[str, Any]:
        r = httpx.post(f"{self.url}/sim/control", json=settings, timeout=5)
        r.raise_for_status()
        return dict(r.json())

    def add_key(self, key: str, *, user_id: str, tier: str = "free", age_verified: bool = False) -> None:
        record = {"key": key, "user_id": user_id, "tier": tier, "age_verified": age_verified, "key_id": f"k-{user_id}"}
        httpx.post(f"{self.url}/sim/keys", json=record, timeout=5).raise_for_status()

    def remove_key(self, key: str) -> None:
        httpx.request("DELETE", f"{self.url}/sim/keys", json={"key": key}, timeout=5).raise_for_status()


class AuthClient(GatewayClient):
    """The shared client with the auth tests' defaults: a short chat, the SFW group."""

    def chat(self, key: str | None, model: str | None = "heartcode-chat-sfw", **extra: Any) -> httpx.Response:
        return self.post("/v1/chat/completions", key, chat_body(model, **extra))

    def models(self, key: str) -> httpx.Response:
        return self.request("GET", "/v1/models", key)


def error_of(r: httpx.Response) -> tuple[int, str]:
    """(status, error code) of an OpenAI-style error answer; fails on anything else (plain text, 500)."""
    assert r.headers.get("content-type", "").startswith("application/json"), r.text
    return r.status_code, r.json()["error"]["code"]


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Path]:
    yield tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
