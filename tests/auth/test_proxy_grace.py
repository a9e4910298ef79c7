"""Stale-if-error through the real proxy: the key backend dies; cached keys keep working for the grace
period, then stop; keys never seen are refused at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.auth.conftest import FREE, PREMIUM, AuthClient, BackendProcess, error_of
from tests.support import render_test_config, start_proxy

TTL, GRACE = 1.0, 4.0


@pytest.fixture(scope="module")
def setup(log_dir: Path) -> Iterator[tuple[AuthClient, BackendProcess, object]]:
    backend = BackendProcess(log_dir).start()
    # No inference here: /v1/models needs auth only, so no GPU simulator (unused ports in the config).
    config = render_test_config(log_dir / "config.yaml", {})
    env = {
        "HEARTCODE_BACKEND_URL": backend.url,
        "HEARTCODE_AUTH_CACHE_TTL": str(TTL),
        "HEARTCODE_AUTH_STALE_GRACE": str(GRACE),
        "HEARTCODE_BACKEND_TIMEOUT": "1",
    }
    process, base = start_proxy("proxy", config, log_dir, env)
    gw = AuthClient(base)
    try:
        yield gw, backend, process
    finally:
        gw.close()
        process.stop()
        backend.stop()


def test_cached_keys_survive_a_dead_backend_for_the_grace_period_only(setup: tuple[AuthClient, BackendProcess, object]) -> None:
    gw, backend, process = setup
    assert gw.models(FREE).status_code == 200
    validated_at = time.monotonic()
    backend.process.kill()  # no connection at all from now on

    # Never seen: nothing to fall back on.
    assert error_of(gw.models(PREMIUM)) == (503, "auth_unavailable")

    # Past the TTL, inside the grace period: still served, from cache.
    time.sleep(TTL + 0.3)
    for _ in range(5):
        r = gw.models(FREE)
        assert r.status_code == 200, r.text
        assert time.monotonic() - validated_at < TTL + GRACE
        time.sleep(0.3)

    # Past TTL + grace: refused.
    time.sleep(max(0.0, validated_at + TTL + GRACE + 0.2 - time.monotonic()))
    assert error_of(gw.models(FREE)) == (503, "auth_unavailable")

    log = process.log_text()  # type: ignore[attr-defined]
    assert "served from cache within its grace period" in log  # stale answers are visible in the log
    assert FREE not in log


def test_the_backend_coming_back_restores_service(setup: tuple[AuthClient, BackendProcess, object]) -> None:
    gw, backend, _ = setup
    backend.start()  # same port
    assert gw.models(FREE).status_code == 200
    assert gw.models(PREMIUM).status_code == 200
