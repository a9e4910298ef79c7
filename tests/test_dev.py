"""``litellm-cloud dev``: the README's first command brings up a working gateway and cleans up after itself."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support import PYTHON, REPO, free_port, start_backend, wait_until


def _children(pid: int) -> list[int]:
    """Live (non-zombie) children of ``pid``, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_dev_gateway_serves_every_endpoint_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    log = open(tmp_path / "dev.log", "w+")  # noqa: SIM115
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("HEARTCODE_BACKEND_URL", None)
    proc = subprocess.Popen([PYTHON, "-m", "litellm_cloud", "dev", "--port", str(port)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    children: list[int] = []
    try:
        deadline = time.monotonic() + 150
        text = ""
        while "Ctrl-C stops everything" not in text:
            assert proc.poll() is None, (tmp_path / "dev.log").read_text()
            assert time.monotonic() < deadline, text
            time.sleep(0.5)
            text = (tmp_path / "dev.log").read_text()
        children = _children(proc.pid)
        assert len(children) >= 3  # simulator, backend, proxy
        keys = re.findall(r"(hc-sk-[A-Za-z0-9_-]+)", text)
        assert keys, text
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {keys[0]}"}
        hello = {"model": "heartcode-default", "messages": [{"role": "user", "content": "Hello!"}]}
        r = httpx.post(f"{base}/v1/chat/completions", json=hello, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"]
        chunks = 0
        with httpx.stream(
            "POST", f"{base}/v1/chat/completions", json={**hello, "stream": True}, headers=headers, timeout=30
        ) as s:
            assert s.status_code == 200
            for line in s.iter_lines():
                if line.startswith("data: {"):
                    json.loads(line[6:])
                    chunks += 1
        assert chunks > 3
        r = httpx.post(
            f"{base}/v1/embeddings", json={"model": "heartcode-embed", "input": "hello"}, headers=headers, timeout=30
        )
        assert r.status_code == 200 and r.json()["data"][0]["embedding"], r.text
        r = httpx.get(f"{base}/v1/models", headers=headers, timeout=30)
        assert r.status_code == 200 and "heartcode-default" in {m["id"] for m in r.json()["data"]}
        assert f"{base}/playground" in text  # the banner names the page, and it answers without a key
        assert httpx.get(f"{base}/playground", timeout=30).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("dev did not stop within 30 s of Ctrl-C")
        log.close()
    assert code == 0, (tmp_path / "dev.log").read_text()[-2000:]
    time.sleep(0.5)
    assert [pid for pid in children if _alive(pid)] == []


def _start_dev(tmp_path: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(tmp_path / "dev.log", "w+")  # noqa: SIM115 - the child holds it
    try:
        return subprocess.Popen([PYTHON, "-m", "litellm_cloud", "dev", "--port", str(port)], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    finally:
        log.close()


def test_dev_stopped_while_starting_leaves_nothing(tmp_path: Path) -> None:
    """A closed terminal (SIGHUP) during start-up stops what was already started, at once."""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("HEARTCODE_BACKEND_URL", None)
    proc = _start_dev(tmp_path, free_port(), env)
    try:
        wait_until(lambda: len(_children(proc.pid)) >= 2, 60, "dev starting its children")
        children = _children(proc.pid)
        assert "Ctrl-C stops everything" not in (tmp_path / "dev.log").read_text()  # still starting
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(20) == 130, (tmp_path / "dev.log").read_text()[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    wait_until(lambda: not [pid for pid in children if _alive(pid)], 5, "children gone")


def test_dev_with_a_real_backend_url_uses_it_and_dies_with_nothing_left(tmp_path: Path) -> None:
    """HEARTCODE_BACKEND_URL replaces the development backend; a SIGKILLed dev takes its children along."""
    key = "hc-sk-external-backend-0000000000"
    backend, url = start_backend(tmp_path, [{"key": key, "user_id": "ext", "tier": "premium", "age_verified": False}])
    port = free_port()
    proc = _start_dev(tmp_path, port, {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                                       "HEARTCODE_BACKEND_URL": url})  # fmt: skip
    children: list[int] = []
    try:
        wait_until(lambda: "Ctrl-C stops everything" in (tmp_path / "dev.log").read_text(), 150, "dev ready")
        text = (tmp_path / "dev.log").read_text()
        assert "hc-sk-dev-" not in text  # the development keys are not advertised for a real backend
        children = _children(proc.pid)
        assert len(children) == 2  # simulator and proxy: no development backend of its own
        headers = {"Authorization": f"Bearer {key}"}
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", headers=headers, timeout=30,
                       json={"model": "heartcode-default", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        assert r.status_code == 200, r.text
        dev_key = {"Authorization": "Bearer hc-sk-dev-free-0000000000000000"}
        r = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers=dev_key, timeout=30)
        assert r.status_code == 401, r.text
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: not [pid for pid in children if _alive(pid)], 15, "children gone after SIGKILL")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        backend.stop()
