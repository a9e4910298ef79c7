"""The fleet manifest, the tiers file and the configs rendered from them, through the CLI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from litellm_cloud import ConfigError, Tiers
from litellm_cloud.fleet import RenderOptions, load_manifest, render_config
from tests.support import PYTHON, REPO


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "litellm_cloud", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    for name in ("fleet.yaml", "config.yaml", "config-local.yaml", "tiers.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def test_committed_configs_match_the_manifest() -> None:
    result = cli("render", "--check", cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_render_check_catches_a_hand_edited_config(checkout: Path) -> None:
    config = checkout / "config.yaml"
    config.write_text(config.read_text().replace("cooldown_time: 30", "cooldown_time: 31"))
    result = cli("render", "--check", cwd=checkout)
    assert result.returncode == 1
    assert "config.yaml: differs" in result.stdout
    assert cli("render", cwd=checkout).returncode == 0
    assert cli("render", "--check", cwd=checkout).returncode == 0


def test_render_check_catches_a_manifest_change_not_rendered(checkout: Path) -> None:
    fleet = checkout / "fleet.yaml"
    fleet.write_text(
        fleet.read_text().replace("port: 8083, tunnel_port: 8083}", "port: 8083, tunnel_port: 8083, drain: true}")
    )
    assert cli("render", "--check", cwd=checkout).returncode == 1


def test_local_config_reaches_the_lan_host_and_cloud_config_the_tunnel_ports() -> None:
    manifest = load_manifest(REPO / "fleet.yaml")
    local = render_config(manifest, "local")
    cloud = render_config(manifest, "cloud")
    local_bases = sorted(m["litellm_params"]["api_base"] for m in local["model_list"])
    cloud_bases = sorted(m["litellm_params"]["api_base"] for m in cloud["model_list"])
    ports = [*range(8080, 8088), *range(8090, 8098)]
    assert local_bases == sorted(f"http://192.168.0.145:{p}/v1" for p in ports)
    assert cloud_bases == sorted(f"http://host.docker.internal:{p}/v1" for p in ports)
    groups = {m["model_info"]["id"]: m["model_name"] for m in local["model_list"]}
    assert [groups[f"gpu-{i}"] for i in range(1, 5)] == ["heartcode-chat-sfw"] * 4
    assert [groups[f"gpu-{i}"] for i in range(5, 9)] == ["heartcode-chat-nsfw"] * 4
    assert local["router_settings"]["model_group_alias"] == {
        "heartcode-default": "heartcode-chat-sfw",
        "heartcode-sfw": "heartcode-chat-sfw",
        "heartcode-nsfw": "heartcode-chat-nsfw",
    }


def test_a_drained_server_leaves_the_config_and_keeps_its_tunnel() -> None:
    manifest = load_manifest(REPO / "fleet.yaml")
    data = manifest.model_dump()
    data["groups"]["heartcode-chat-sfw"]["servers"][1]["drain"] = True
    drained = type(manifest).model_validate(data)
    ids = [m["model_info"]["id"] for m in render_config(drained, "local")["model_list"]]
    assert "gpu-2" not in ids and "gpu-1" in ids
    assert "gpu-2" in [f.name for f in drained.tunnel_forwards()]


def test_tunnel_forwards_cover_backend_and_every_server() -> None:
    forwards = load_manifest(REPO / "fleet.yaml").tunnel_forwards()
    assert forwards[0].name == "backend" and forwards[0].remote_port == 8000
    assert sorted(f.remote_port for f in forwards[1:]) == [*range(8080, 8088), *range(8090, 8098)]


def test_render_options_point_servers_elsewhere() -> None:
    manifest = load_manifest(REPO / "fleet.yaml")
    config = render_config(manifest, "local", RenderOptions(endpoints={"gpu-1": "http://127.0.0.1:1/v1"}, timeout=2))
    first = config["model_list"][0]["litellm_params"]
    assert first["api_base"] == "http://127.0.0.1:1/v1" and first["timeout"] == 2


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["aliases"].update({"x": "nope"}), "alias 'x' points to unknown group"),
        (
            lambda d: d["groups"]["heartcode-embed"]["servers"][0].update({"tunnel_port": 8080}),
            "tunnel ports must be unique",
        ),
        (lambda d: d["groups"]["heartcode-embed"]["servers"][0].update({"port": "many"}), "fleet.yaml:"),
        (lambda d: d["groups"]["heartcode-embed"].update({"mode": "image"}), "groups.heartcode-embed.mode"),
    ],
)
def test_a_bad_manifest_is_refused_with_its_location(checkout: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    data = yaml.safe_load((checkout / "fleet.yaml").read_text())
    edit(data)
    (checkout / "fleet.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_manifest(checkout / "fleet.yaml")
    result = cli("render", cwd=checkout)
    assert result.returncode == 2 and "configuration error" in result.stderr and "Traceback" not in result.stderr


def test_a_bad_tiers_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "tiers.yaml"
    text = (REPO / "tiers.yaml").read_text().replace("rpm: 60", "rpm: -5")
    path.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "rpm: -5" in row)
    with pytest.raises(ConfigError, match=rf"tiers.yaml:{line}: tiers\.premium\.rpm: Input should be greater than 0"):
        Tiers.load(path)


def test_the_shipped_tiers_are_the_product_tiers() -> None:
    tiers = Tiers.load(REPO / "tiers.yaml")
    assert {n: (t.rpm, t.tpm, t.daily_tokens) for n, t in tiers.items()} == {
        "free": (10, 1000, 10_000),
        "premium": (60, 7000, 100_000),
        "admin": (1000, 70_000, 10_000_000),
    }


def test_an_age_verified_group_is_redacted_unless_it_says_otherwise(checkout: Path) -> None:
    data = yaml.safe_load((checkout / "fleet.yaml").read_text())
    nsfw = data["groups"]["heartcode-chat-nsfw"]
    nsfw.pop("redact_content", None)
    (checkout / "fleet.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    groups = load_manifest(checkout / "fleet.yaml").groups
    assert groups["heartcode-chat-nsfw"].redact_content is True
    assert groups["heartcode-chat-sfw"].redact_content is False
    nsfw["redact_content"] = False  # an explicit choice stands
    (checkout / "fleet.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert load_manifest(checkout / "fleet.yaml").groups["heartcode-chat-nsfw"].redact_content is False
