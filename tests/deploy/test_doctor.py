"""``litellm-cloud doctor`` against real local servers: the GPU simulator, the development key backend,
redis-server, a small Langfuse stand-in, closed ports and certificates made here."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from litellm_cloud.doctor import Check, DoctorOptions, run_checks
from tests.deploy._certs import make_cert
from tests.deploy._services import start_backend, start_redis
from tests.support import PYTHON, REPO, ManagedProcess, SimFleet, free_port, render_test_config

UTC = dt.UTC


@dataclass
class World:
    sim: SimFleet
    config: Path
    backend_url: str
    redis_url: str
    redis_no_aof_url: str
    langfuse_url: str
    certs: Path
    tmp: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {"HEARTCODE_BACKEND_URL": self.backend_url, "HEARTCODE_LIMITS_STORAGE": self.redis_url, **extra}

    def options(self, **extra: object) -> DoctorOptions:
        return replace(DoctorOptions(config=self.config, cert=self.certs / "server.crt", timeout=1.0), **extra)  # type: ignore[arg-type]


class FakeLangfuse:
    """Langfuse's OTLP endpoint for the keys pk-test/sk-test only; ``/old`` is a Langfuse without one."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                good = "Basic " + base64.b64encode(b"pk-test:sk-test").decode()
                if self.path == "/api/public/otel/v1/traces":
                    status = 200 if self.headers.get("Authorization") == good else 401
                elif self.path == "/collector/v1/traces":
                    status = 200 if self.headers.get("x-token") == "t0k" else 403
                else:
                    status = 404
                body = json.dumps({"status": status}).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("doctor")
    sim = SimFleet(tmp).start()
    procs: list[ManagedProcess] = []
    langfuse = FakeLangfuse()
    try:
        backend, backend_url = start_backend(tmp)
        procs.append(backend)
        redis, redis_url = start_redis(tmp)
        procs.append(redis)
        redis_plain, redis_no_aof_url = start_redis(tmp, appendonly=False)
        procs.append(redis_plain)
        config = render_test_config(tmp / "config.yaml", sim.endpoints)
        make_cert(tmp / "certs")
        yield World(sim, config, backend_url, redis_url, redis_no_aof_url, langfuse.url, tmp / "certs", tmp)
    finally:
        for proc in procs:
            proc.stop()
        sim.stop()
        langfuse.stop()


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_healthy_deployment_is_all_ok(world: World) -> None:
    checks = run_checks(world.env(), world.options(), base_dir=REPO)
    assert [c for c in checks if c.status != "ok"] == []
    names = by_name(checks)
    gpus = [c for c in checks if c.name.startswith("gpu ")]
    assert len(gpus) == len(world.sim.servers) == 16
    assert names["gpu gpu-1 (heartcode-chat-sfw)"].detail.startswith(world.sim.endpoints["gpu-1"])
    assert names["group heartcode-embed"].detail == "8/8 deployments up"
    assert "answers key validation" in names["backend"].detail
    assert names["redis HEARTCODE_LIMITS_STORAGE"].status == "ok"
    assert "tracing off" in names["langfuse"].detail
    assert "valid until" in names["tls certificate"].detail


def test_failures_each_get_a_clear_line(world: World) -> None:
    dead = free_port()
    world.sim.control("gpu-2", mode="down")
    world.sim.control("embed-3", mode="error")  # inference errors; /models still answers
    try:
        checks = run_checks(world.env(HEARTCODE_BACKEND_URL=f"http://127.0.0.1:{dead}",
                                      HEARTCODE_REDIS_URL=f"redis://127.0.0.1:{dead}/0"),
                            world.options(), base_dir=REPO)
    finally:
        world.sim.reset()
    names = by_name(checks)
    assert names["gpu gpu-2 (heartcode-chat-sfw)"].status == "fail"
    assert "unreachable" in names["gpu gpu-2 (heartcode-chat-sfw)"].detail
    assert names["group heartcode-chat-sfw"] == Check("group heartcode-chat-sfw", "warn", "3/4 deployments up")
    assert names["gpu embed-3 (heartcode-embed)"].status == "ok"
    assert names["backend"].status == "fail" and "auth_unavailable" in names["backend"].detail
    assert names["redis HEARTCODE_REDIS_URL"].status == "fail"
    assert names["redis HEARTCODE_LIMITS_STORAGE"].status == "ok"


def test_hanging_backend_and_redis_without_persistence(world: World) -> None:
    httpx.post(f"{world.backend_url}/sim/control", json={"mode": "hang"}).raise_for_status()
    try:
        checks = run_checks(world.env(HEARTCODE_LIMITS_STORAGE=world.redis_no_aof_url), world.options(timeout=0.5),
                            base_dir=REPO)
    finally:
        httpx.post(f"{world.backend_url}/sim/control", json={"mode": "ok"}).raise_for_status()
    names = by_name(checks)
    assert names["backend"].status == "fail" and "no answer within 0.5 s" in names["backend"].detail
    assert "auth_timeout" in names["backend"].detail
    assert names["redis HEARTCODE_LIMITS_STORAGE"].status == "warn"
    assert "appendonly is off" in names["redis HEARTCODE_LIMITS_STORAGE"].detail


def test_no_redis_configured_is_a_warning(world: World) -> None:
    checks = run_checks(world.env(HEARTCODE_LIMITS_STORAGE="memory://"), world.options(), base_dir=REPO)
    assert by_name(checks)["redis"].status == "warn"


@pytest.mark.parametrize(("keys", "host", "status", "words"), [
    ({"LANGFUSE_PUBLIC_KEY": "pk-test", "LANGFUSE_SECRET_KEY": "sk-test"}, "fake", "ok", "keys accepted"),
    ({"LANGFUSE_PUBLIC_KEY": "pk-test", "LANGFUSE_SECRET_KEY": "wrong"}, "fake", "fail", "keys are refused"),
    ({"LANGFUSE_PUBLIC_KEY": "pk-test", "LANGFUSE_SECRET_KEY": "sk-test"}, "dead", "fail", "unreachable"),
    ({"LANGFUSE_PUBLIC_KEY": "pk-test"}, "fake", "fail", "LANGFUSE_SECRET_KEY is not set"),
    ({"LANGFUSE_PUBLIC_KEY": "pk-test", "LANGFUSE_SECRET_KEY": "sk-test"}, "old", "fail", "no OTLP traces endpoint (HTTP 404)"),
])
def test_langfuse(world: World, keys: dict[str, str], host: str, status: str, words: str) -> None:
    url = {"fake": world.langfuse_url, "old": world.langfuse_url + "/old"}.get(host, f"http://127.0.0.1:{free_port()}")
    checks = run_checks(world.env(LANGFUSE_HOST=url, **keys), world.options(), base_dir=REPO)
    langfuse = by_name(checks)["langfuse"]
    assert langfuse.status == status and words in langfuse.detail
    assert "sk-test" not in langfuse.detail and "wrong" not in langfuse.detail


@pytest.mark.parametrize(("days_left", "status", "words"), [
    (5, "warn", "expires in 5 days"), (-1, "fail", "expired on"), (200, "ok", "valid until"),
])
def test_certificate_expiry(world: World, tmp_path: Path, days_left: int, status: str, words: str) -> None:
    now = dt.datetime.now(UTC)
    crt, _ = make_cert(tmp_path, not_after=now + dt.timedelta(days=days_left, hours=1), days_before=400)
    checks = run_checks(world.env(), world.options(cert=crt), base_dir=REPO, now=lambda: now)
    cert = by_name(checks)["tls certificate"]
    assert cert.status == status and words in cert.detail


def test_certificate_missing_or_with_a_foreign_key(world: World, tmp_path: Path) -> None:
    missing = by_name(run_checks(world.env(), world.options(cert=tmp_path / "none.crt"), base_dir=REPO))
    assert missing["tls certificate"].status == "warn"
    crt, key = make_cert(tmp_path)
    _, other_key = make_cert(tmp_path / "other")
    key.write_bytes(other_key.read_bytes())
    mismatch = by_name(run_checks(world.env(), world.options(cert=crt), base_dir=REPO))["tls certificate"]
    assert mismatch.status == "fail" and "does not belong" in mismatch.detail


def test_cli_lines_exit_code_and_host_map(world: World) -> None:
    # A config rendered for the container (host.docker.internal), probed from the host with --map.
    docker_like = {name: url.replace("127.0.0.1", "host.docker.internal") for name, url in world.sim.endpoints.items()}
    config = render_test_config(world.tmp / "config-docker.yaml", docker_like)
    env = {**os.environ, **world.env(HEARTCODE_BACKEND_URL=world.backend_url.replace("127.0.0.1", "host.docker.internal"))}
    argv = [PYTHON, "-m", "litellm_cloud", "doctor", "--config", str(config), "--cert", str(world.certs / "server.crt"),
            "--map", "host.docker.internal=127.0.0.1", "--timeout", "2"]
    ok = subprocess.run(argv, check=False, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[-1] == f"{len(lines) - 1} ok, 0 warn, 0 fail"
    assert all(line.split()[0] == "OK" for line in lines[:-1])
    unmapped = subprocess.run(argv[:-4] + ["--timeout", "1"], check=False, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert unmapped.returncode == 1
    assert any(line.startswith("FAIL  backend") for line in unmapped.stdout.splitlines())
    bad_map = subprocess.run([*argv, "--map", "nonsense"], check=False, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert bad_map.returncode == 2 and "HOST=ADDRESS" in bad_map.stderr


@pytest.mark.parametrize(("headers", "status", "words"), [
    ("x-token=t0k", "ok", "accepts OTLP exports"),
    ("x-token=nope", "fail", "check HEARTCODE_OTLP_HEADERS"),
])
def test_otlp_collector(world: World, headers: str, status: str, words: str) -> None:
    env = world.env(HEARTCODE_OTLP_ENDPOINT=world.langfuse_url + "/collector/v1/traces", HEARTCODE_OTLP_HEADERS=headers)
    check = by_name(run_checks(env, world.options(), base_dir=REPO))["otlp collector"]
    assert check.status == status and words in check.detail and "t0k" not in check.detail
