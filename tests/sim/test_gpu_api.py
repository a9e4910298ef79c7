"""The simulator's Python API and command line: in-thread handle, config building, tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from litellm_cloud._errors import ConfigError
from litellm_cloud.sim import SimConfig, SimServer, start_in_thread
from litellm_cloud.sim.__main__ import build_config
from litellm_cloud.sim._gpu_openai import count_tokens, prompt_tokens
from tests.support import port_open


def test_in_thread_handle_any_port_strict_model_and_control() -> None:
    config = SimConfig(servers=(SimServer("gpu-1", model="heartcode-chat-sfw", ttft_ms=0, tokens_per_s=0),
                                SimServer("embed-1", model="heartcode-embed")),
                       admin_port=0, strict_model=True, use_uvloop=False)
    with start_in_thread(config) as sim:
        ports = sim.ports()
        assert all(ports.values()) and sim.sim.admin_port
        assert sim.sim.ready_line().startswith(f"sim ready: gpu-1=127.0.0.1:{ports['gpu-1']} ")
        url = f"{sim.url('gpu-1')}/v1/chat/completions"
        ok = httpx.post(url, json={"model": "heartcode-chat-sfw", "messages": [{"role": "user", "content": "x"}]})
        assert ok.status_code == 200
        wrong = httpx.post(url, json={"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]})
        assert wrong.status_code == 404 and "gpt-4" in wrong.json()["error"]["message"]
        assert sim.control("gpu-1", mode="down")["listening"] is False
        assert not port_open(ports["gpu-1"])
        sim.control("gpu-1", mode="ok")
        assert httpx.get(f"{sim.url('gpu-1')}/health").status_code == 200
        with pytest.raises(ValueError, match="mode"):
            sim.control("gpu-1", mode="sleepy")
    assert not port_open(ports["gpu-1"]) and not port_open(ports["embed-1"])


def test_start_in_thread_reports_a_taken_port() -> None:
    with start_in_thread(SimConfig(servers=(SimServer("a"),), use_uvloop=False)) as first:
        taken = first.ports()["a"]
        with pytest.raises(OSError):
            start_in_thread(SimConfig(servers=(SimServer("b", port=taken),), use_uvloop=False))


def test_cli_servers_models_and_flags() -> None:
    config = build_config(["--server", "gpu-1=8080", "--server", "gpu-2=8081:other", "--server", "embed-1=8090",
                           "--model", "chat", "--model", "embed-1=heartcode-embed", "--admin-port", "9000",
                           "--tokens-per-s", "0", "--seed", "3"])
    assert [(s.name, s.port, s.model) for s in config.servers] == [
        ("gpu-1", 8080, "chat"), ("gpu-2", 8081, "other"), ("embed-1", 8090, "heartcode-embed")]
    assert {s.tokens_per_s for s in config.servers} == {0} and config.admin_port == 9000 and config.seed == 3


def test_cli_spec_file_with_flag_overrides(tmp_path: Path) -> None:
    spec = tmp_path / "sim.yaml"
    spec.write_text("admin_port: 9100\ndefaults: {ttft_ms: 50}\nservers:\n"
                    "  - {name: gpu-1, port: 8080, model: a, ttft_ms: 7}\n  - {name: gpu-2, port: 8081}\n")
    config = build_config(["--spec", str(spec), "--embedding-dim", "8"])
    assert [(s.ttft_ms, s.embedding_dim) for s in config.servers] == [(7, 8), (50, 8)]
    assert config.admin_port == 9100
    spec.write_text(json.dumps({"servers": [{"name": "gpu-1", "colour": "red"}]}))
    with pytest.raises(ConfigError, match="colour"):
        build_config(["--spec", str(spec)])


@pytest.mark.parametrize("argv,message", [
    (["--server", "gpu-1"], "NAME=PORT"),
    (["--server", "a=1", "--server", "b=1"], "unique"),
    (["--server", "a=1", "--model", "zz=m"], "unknown servers"),
    (["--server", "a=1", "--error-rate", "2"], "error_rate"),
    ([], "at least one server"),
])
def test_cli_refuses_bad_configs(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(argv)


def test_tokenizer() -> None:
    assert count_tokens("") == 0
    assert count_tokens("hi there") == 3  # hi | ther | e
    assert count_tokens("  a  b\n") == 2
    assert prompt_tokens([{"role": "system", "content": None},
                          {"role": "user", "content": [{"type": "text", "text": "abcdefgh"}]}]) == (1 + 1 + 2, "\nabcdefgh")
