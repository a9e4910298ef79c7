"""One simulated gateway per module for the API tests: the simulator, the key backend, the real proxy."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ManagedProcess, SimFleet, simulated_gateway

FREE = "hc-sk-apitest-free-00000000000001"
ADMIN = "hc-sk-apitest-admin-0000000000002"
KEYS = [
    {"key": FREE, "user_id": "u-api-free", "tier": "free", "age_verified": False},
    {"key": ADMIN, "user_id": "u-api-admin", "tier": "admin", "age_verified": True},
]


@dataclass
class Api:
    sim: SimFleet
    base: str
    proxy: ManagedProcess
    log_dir: Path

    @property
    def log(self) -> Path:
        return self.proxy.log_path

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Api]:
    log_dir = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    with simulated_gateway(log_dir, KEYS) as (sim, base, proxy):
        yield Api(sim, base, proxy, log_dir)
