"""Revocation across two proxy replicas sharing a real redis-server."""

from __future__ import annotations

import concurrent.futures
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.auth.conftest import FREE, AuthClient, BackendProcess, error_of
from tests.support import MASTER_KEY, ManagedProcess, free_port, port_open, render_test_config, start_proxy

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server (apt)")


@pytest.fixture(scope="module")
def replicas(log_dir: Path) -> Iterator[tuple[AuthClient, AuthClient, BackendProcess, ManagedProcess]]:
    redis_port = free_port()
    redis = ManagedProcess(
        "redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        log_dir=log_dir, ready=lambda: port_open(redis_port),
    ).start()
    backend = BackendProcess(log_dir).start()
    config = render_test_config(log_dir / "config.yaml", {})
    env = {
        "HEARTCODE_BACKEND_URL": backend.url,
        "HEARTCODE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "HEARTCODE_AUTH_CACHE_TTL": "300",  # only a revocation can make these replicas forget a key
    }
    # Start both replicas at once: each spends most of its start-up importing LiteLLM.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(start_proxy, name, config, log_dir, env) for name in ("proxy-a", "proxy-b")]
    started = [f.result() for f in futures if f.exception() is None]
    try:
        if len(started) != 2:
            raise next(f.exception() for f in futures if f.exception() is not None)  # type: ignore[misc]
        (_, base_a), (_, base_b) = started
        yield AuthClient(base_a), AuthClient(base_b), backend, redis
    finally:
        for process, _ in started:
            process.stop()
        backend.stop()
        redis.stop()


def test_a_revocation_on_one_replica_stops_the_key_on_both(replicas: tuple[AuthClient, AuthClient, BackendProcess, ManagedProcess]) -> None:
    a, b, backend, _ = replicas
    key = "hc-sk-shared-across-replicas-001"
    backend.add_key(key, user_id="u-shared")
    assert a.models(key).status_code == 200 and b.models(key).status_code == 200
    backend.remove_key(key)  # the backend revokes it ...
    assert a.models(key).status_code == 200 and b.models(key).status_code == 200  # ... both still cache it

    r = a.request("POST", "/hc/keys/revoke", MASTER_KEY, json={"api_key": key})
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "redis" and r.json()["dropped_here"] == 1
    assert r.json()["replicas_notified"] == 2  # both replicas subscribe, the sender included

    # Pub/sub delivery is asynchronous: give replica B a moment, without sleeping blindly.
    deadline = time.monotonic() + 3
    while b.models(key).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert error_of(b.models(key)) == (401, "invalid_api_key")
    assert error_of(a.models(key)) == (401, "invalid_api_key")
    # Other keys are untouched.
    assert a.models(FREE).status_code == 200 and b.models(FREE).status_code == 200


def test_revoking_every_key_of_a_user_by_user_id(replicas: tuple[AuthClient, AuthClient, BackendProcess, ManagedProcess]) -> None:
    a, b, backend, _ = replicas
    keys = ["hc-sk-user-wide-revocation-0001", "hc-sk-user-wide-revocation-0002"]
    for key in keys:
        backend.add_key(key, user_id="u-wide")
        assert b.models(key).status_code == 200
        backend.remove_key(key)
    r = a.request("POST", "/hc/keys/revoke", MASTER_KEY, json={"user_id": "u-wide"})
    assert r.status_code == 200 and r.json()["dropped_here"] == 0  # A never saw them
    deadline = time.monotonic() + 3
    while b.models(keys[0]).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    for key in keys:
        assert error_of(b.models(key)) == (401, "invalid_api_key")


def test_revocation_endpoint_answers_json_when_redis_is_fine(replicas: tuple[AuthClient, AuthClient, BackendProcess, ManagedProcess]) -> None:
    a, _, _, _ = replicas
    r = httpx.post(f"{a.base}/hc/keys/revoke", headers={"authorization": f"Bearer {MASTER_KEY}"},
                   content=b"not json")
    assert error_of(r) == (400, "invalid_request")


def test_redis_down_then_back(replicas: tuple[AuthClient, AuthClient, BackendProcess, ManagedProcess]) -> None:
    """Without Redis a revocation is local and says so; a replica that lost its subscription empties its
    cache when it gets it back (it may have missed revocations meanwhile)."""
    a, b, backend, redis = replicas
    assert b.models(FREE).status_code == 200  # cached on B
    redis.stop()
    r = a.request("POST", "/hc/keys/revoke", MASTER_KEY, json={"key_id": "k-free"})
    assert error_of(r) == (503, "revocation_not_shared")
    assert "this replica only" in r.json()["error"]["message"]

    redis.start()
    before = backend.calls()
    deadline = time.monotonic() + 15  # the listener retries with a backoff of at most 5 s
    while time.monotonic() < deadline:
        assert b.models(FREE).status_code == 200
        if backend.calls() > before:
            break
        time.sleep(0.2)
    assert backend.calls() == before + 1  # B forgot FREE on reconnecting and validated it once again
