"""The backend client against the contract: the development backend over real HTTP, and a mock
transport for bodies no honest backend sends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from litellm_cloud._config import Secret
from litellm_cloud._errors import AuthTimeout, AuthUnavailable, ConfigError
from litellm_cloud.auth.backend import HttpKeyBackend
from litellm_cloud.observability import Metrics
from litellm_cloud.sim.backend import BackendConfig, KeyRecord, load_keys, main, start_in_thread

GOOD = "hc-sk-client-test-good-000000001"


class Recorder(Metrics):
    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def backend_validation(self, seconds: float, outcome: str) -> None:
        self.calls.append((outcome, seconds))


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    config = BackendConfig(keys=(KeyRecord(key=GOOD, user_id="u1", tier="premium", age_verified=True, key_id="k1"),),
                           port=0, token="service-token")
    handle = start_in_thread(config)
    yield handle.url
    handle.stop()


@pytest.fixture
def control(sim: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim) as c:
        yield c
        c.post("/sim/control", json={"mode": "ok", "invalid_status": 200, "error_status": 500})


def client(url: str, metrics: Metrics, *, token: str = "service-token", timeout: float = 2.0) -> HttpKeyBackend:
    return HttpKeyBackend(url, token=Secret(token), timeout=timeout, metrics=metrics)


async def test_a_good_key(sim: str) -> None:
    m = Recorder()
    verdict = await client(sim, m).validate(GOOD)
    assert verdict.valid and (verdict.user_id, verdict.key_id, verdict.tier, verdict.age_verified) == (
        "u1", "k1", "premium", True)
    assert [o for o, _ in m.calls] == ["valid"]


@pytest.mark.parametrize("status", [200, 401, 404])
async def test_bad_keys_in_each_form(sim: str, control: httpx.Client, status: int) -> None:
    control.post("/sim/control", json={"invalid_status": status})
    m = Recorder()
    assert not (await client(sim, m).validate("hc-sk-not-a-known-key-000000")).valid
    assert [o for o, _ in m.calls] == ["invalid"]


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_server_errors_mean_unavailable(sim: str, control: httpx.Client, status: int) -> None:
    control.post("/sim/control", json={"mode": "error", "error_status": status})
    m = Recorder()
    with pytest.raises(AuthUnavailable):
        await client(sim, m).validate(GOOD)
    assert [o for o, _ in m.calls] == ["unavailable"]


async def test_a_wrong_service_token_is_unavailable_not_invalid(sim: str) -> None:
    m = Recorder()
    with pytest.raises(AuthUnavailable):
        await client(sim, m, token="wrong").validate(GOOD)
    assert [o for o, _ in m.calls] == ["error"]


async def test_a_slow_backend_times_out_on_one_deadline(sim: str, control: httpx.Client) -> None:
    control.post("/sim/control", json={"mode": "slow", "delay_s": 1.2})
    m = Recorder()
    start = time.monotonic()
    with pytest.raises(AuthTimeout):
        await client(sim, m, timeout=0.3).validate(GOOD)
    assert time.monotonic() - start < 0.8
    assert [o for o, _ in m.calls] == ["timeout"]


async def test_no_connection_is_unavailable() -> None:
    from tests.support import free_port

    m = Recorder()
    with pytest.raises(AuthUnavailable):
        await client(f"http://127.0.0.1:{free_port()}", m).validate(GOOD)
    assert [o for o, _ in m.calls] == ["unavailable"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"valid": "yes"}',
        b'{"valid": true, "tier": "free"}',
        b'{"valid": true, "user_id": "u", "tier": ""}',
        b'{"valid": true, "user_id": "u", "tier": "free", "age_verified": "no"}',
    ],
)
async def test_contract_violations_are_unavailable_and_never_echo_the_key(body: bytes) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=body)

    m = Recorder()
    backend = HttpKeyBackend("http://backend", token=Secret(""), timeout=1, metrics=m,
                             client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    with pytest.raises(AuthUnavailable) as info:
        await backend.validate(GOOD)
    assert GOOD not in info.value.message
    assert [o for o, _ in m.calls] == ["error"]
    assert "authorization" not in seen[0].headers  # no token configured: none sent
    assert seen[0].url.path == "/api/v1/keys/validate"


async def test_the_service_token_is_sent_as_bearer() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"valid": True, "user_id": "u", "tier": "free"})

    backend = HttpKeyBackend("http://backend/", token=Secret("t0k"), timeout=1, metrics=Metrics(),
                             client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    verdict = await backend.validate(GOOD)
    assert verdict.valid and verdict.key_id == "" and verdict.age_verified is False
    assert seen[0].headers["authorization"] == "Bearer t0k"
    assert seen[0].read() == b'{"api_key":"' + GOOD.encode() + b'"}'


def test_keys_file_errors_name_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "keys.yaml"
    bad.write_text("- key: hc-sk-aaaaaaaaaaaaaaaaaaaa\n  user_id: u\n  tier: free\n- key: hc-sk-bbbbbbbbbbbbbbbbbbbbb\n"
                   "  tier: free\n  colour: blue\n")
    with pytest.raises(ConfigError, match=r"keys.yaml:4.*user_id"):
        load_keys(bad)
    assert main(["--keys", str(bad), "--port", "0"]) == 2
    assert "keys.yaml:6" in capsys.readouterr().err


def test_the_repository_dev_keys_file_loads() -> None:
    records = load_keys(Path(__file__).resolve().parents[2] / "dev-keys.yaml")
    tiers = {r.tier for r in records}
    assert {"free", "premium", "admin"} <= tiers
    assert any(r.age_verified for r in records) and any(not r.age_verified for r in records)
    from litellm_cloud.auth.keys import is_well_formed

    assert all(is_well_formed(r.key) for r in records)
